"""The `kiln` command. Subcommands live in one small module each; none imports torch until it runs."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from kiln import __version__
from kiln.cli import (
    average_cmd,
    baseline_cmd,
    config_cmd,
    configs_cmd,
    cv_cmd,
    data_cmd,
    doctor_cmd,
    export_cmd,
    inspect_cmd,
    lr_find_cmd,
    models_cmd,
    new_cmd,
    predict_cmd,
    report_cmd,
    schema_cmd,
    shift_cmd,
    test_cmd,
    train_cmd,
    tune_cmd,
)
from kiln.core.errors import KilnError, TrainingInterrupted, TrainingStopped

PREEMPTED = 75  # EX_TEMPFAIL: saved on SLURM's preemption warning; requeue and resume (README, "SLURM")

COMMANDS = (train_cmd, test_cmd, predict_cmd, export_cmd, inspect_cmd, tune_cmd, lr_find_cmd, report_cmd, baseline_cmd,
            cv_cmd, average_cmd, shift_cmd, data_cmd, doctor_cmd, config_cmd, configs_cmd, models_cmd, schema_cmd, new_cmd)


def build_parser() -> argparse.ArgumentParser:
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="kiln", description="Config-driven PyTorch training. Run `kiln COMMAND --help` for details.",
        epilog="Exit codes: 0 ok, 1 unexpected error or training stopped (NaN), 2 bad input, 75 preempted (SIGUSR1: "
               "last.pt saved; requeue and resume), 130 interrupted (last.pt saved; resume with kiln train --resume "
               "RUN_DIR).")
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser, sub.choices


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Options may stand anywhere among a subcommand's positional arguments (`kiln train CONFIG -q a=b`):
    the subcommand's own parser reads its arguments intermixed, and its usage line is the one shown."""
    parser, commands = _parsers()
    argv = sys.argv[1:] if argv is None else list(argv)
    at = next((i for i, a in enumerate(argv) if a in commands), None)
    if at is None and argv and not argv[0].startswith("-"):  # a mistyped command: say which one was meant
        import difflib

        close = difflib.get_close_matches(argv[0], list(commands), n=1, cutoff=0.6)
        parser.error(f"unknown command '{argv[0]}'" + (f" — did you mean '{close[0]}'?" if close else "")
                     + f" Commands: {', '.join(commands)}")
    if at is None or at > 0:  # no command, or top-level options before it (--help, --version)
        return parser.parse_args(argv)
    command, rest = commands[argv[at]], argv[at + 1:]
    actions = _actions(command)  # a command with actions of its own (kiln data pack): the action's parser reads
    if actions and rest and rest[0] in actions:
        args = actions[rest[0]].parse_intermixed_args(rest[1:])
        args.action = rest[0]
    else:
        args = command.parse_intermixed_args(rest) if not actions else command.parse_args(rest)
    args.command = argv[at]
    return args


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands of a command (kiln data pack), if it has any."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: list[str] | None = None) -> int:
    import os

    if os.environ.get("TORCHELASTIC_RUN_ID") and argv is None:  # a torchrun worker: report errors to the agent
        from torch.distributed.elastic.multiprocessing.errors import record

        _leave(int(record(_main)(argv) or 0))
    if argv is None:
        from kiln.core.launcher import detect

        if detect().world_size > 1:  # one of several srun tasks: the same exit as a torchrun worker's
            _leave(_main(argv))
    return _main(argv)


def _leave(code: int) -> NoReturn:
    """A torchrun worker's exit, without the interpreter's teardown. Once in a while (on a loaded machine) a gloo
    thread still being torn down then aborts the process (`terminate called without an active exception`,
    SIGABRT) after its run has finished and been written, and the agent reports the launch as failed. Every file
    kiln writes is closed by now; only the log handlers and the standard streams are flushed here."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    args = parse(argv)
    try:
        return int(args.run(args) or 0)
    except KilnError as e:
        print(f"kiln: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"kiln: {e}", file=sys.stderr)
        return PREEMPTED if e.preempted else 130
    except TrainingStopped as e:
        print(f"kiln: {e.what}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
