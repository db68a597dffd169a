"""kiln train CONFIG [key=value ...] [--resume RUN_DIR|auto]"""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, split_config_and_overrides, verbosity
from kiln.core.errors import KilnError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config file",
                       description="Train the model described by CONFIG (YAML or JSON). Writes a run folder "
                                   "runs/<name>/<YYYYmmdd-HHMMSS>/ with config.yaml, metrics, checkpoints, "
                                   "TensorBoard logs and, at the end, test_metrics.json.",
                       epilog="examples:\n  kiln train configs/fashion_mnist.yaml optim.lr=0.05 trainer.epochs=3\n"
                              "  kiln train --resume runs/fashion_mnist/20260101-120000\n"
                              "  kiln train configs/fashion_mnist.yaml --resume auto",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="CONFIG [KEY=VALUE ...]", help=f"config file, then {OVERRIDES_HELP}")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue an interrupted run in its folder; 'auto' picks the newest unfinished run "
                        "of the config's name. Everything is restored (weights, optimizer, schedule, RNG, ...)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="write the run into DIR instead of runs/<name>/<timestamp> (resumes it if it holds last.pt)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (DistributedDataParallel through torchrun; one per "
                        "GPU, or gloo on CPU). Same as: torchrun --nproc-per-node N -m kiln train ...")
    p.add_argument("--max-restarts", type=int, default=0, metavar="R",
                   help="with --nproc: restart a failed group up to R times, resuming from last.pt")
    p.add_argument("--find-batch-size", action="store_true",
                   help="find the largest data.batch_size whose training step fits in GPU memory, print it and exit")
    p.add_argument("--profile", action="store_true",
                   help="profile 20 training steps after 8 (trainer.profile): where each step's time goes — waiting "
                        "for data, forward, backward, optimizer, host syncs — in profile.json and "
                        "profile/trace.json.gz, with the setting to change; then training goes on")
    p.add_argument("--profile-only", action="store_true",
                   help="--profile, then stop once it is written (one validation batch, no test)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.config import load_config
    from kiln.runs import RunDir
    from kiln.runs.remote import find_resumable
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    config_path, overrides = split_config_and_overrides(args.items)
    resume = None
    if args.resume and args.resume != "auto":
        if config_path is not None:
            raise KilnError(f"--resume {args.resume} uses the config saved in that run folder; drop {config_path} "
                            "(overrides such as trainer.epochs=N are still accepted)")
        resume = RunDir.open(args.resume)
        cfg = resume.config(overrides)
    else:
        if config_path is None:
            raise KilnError("no config file given: kiln train CONFIG [key=value ...] (e.g. configs/fashion_mnist.yaml)")
        cfg = load_config(config_path, overrides)
        if args.resume == "auto":
            resume = find_resumable(cfg.log.dir, cfg.name, cfg.log.remote)
            cfg = resume.config(overrides)
    cfg = with_profiling(cfg, args.profile, args.profile_only)
    from kiln.train.preflight import preflight

    preflight(cfg, resuming=resume is not None)  # before torch and the data: a mistake is reported in a second
    from kiln.train import session

    if args.find_batch_size:
        from kiln.train.batch_size import find_batch_size

        size = find_batch_size(cfg)
        print(f"largest batch size that fits: {size}  (train with data.batch_size={size}; leave some headroom, "
              f"e.g. {max(1, int(size * 0.8))}, for longer runs)")
        return 0
    if args.nproc:
        return _launch(args, cfg, config_path, overrides, resume)
    result = session.train(cfg, resume=resume.path if resume else None,
                           run_dir=Path(args.run_dir) if args.run_dir else None,
                           quiet=args.quiet)
    from kiln.core.dist import current

    if not current().is_main:
        return 0
    if result.test_metrics and args.quiet:  # otherwise the log's `test: ... (best.pt)` line said it already
        from kiln.tasks import task_class

        print("test: " + task_class(result.test_metrics.get("task", "multiclass")).describe(result.test_metrics))
    print(f"run folder: {result.run_dir}")
    return 0


def _launch(args: argparse.Namespace, cfg, config_path: str | None, overrides: list[str], resume) -> int:
    """Start the workers; they all write into one run folder, chosen here so a restart finds it."""
    from pathlib import Path

    from kiln.runs import RunDir
    from kiln.train.device import resolve_device
    from kiln.train.launch import launch

    # The GPU layout is checked here, before any process starts, as each worker would check it.
    resolve_device(cfg.trainer.device, args.nproc - 1, args.nproc, cfg.trainer.backend)

    if resume is not None:
        run_dir = Path(resume.path)
        worker = ["--resume", str(resume), *overrides]
    else:
        run_dir = Path(args.run_dir) if args.run_dir else RunDir.create(cfg.log.dir, cfg.name).path
        assert config_path is not None  # checked by run(): a new run needs a config file
        worker = [config_path, *overrides, "--run-dir", str(run_dir)]
    if args.quiet:
        worker.append("--quiet")
    return launch(args.nproc, args.max_restarts, worker, run_dir)



def with_profiling(cfg, profile: bool, only: bool):
    """--profile: trainer.profile with its defaults (unless the config sets it); --profile-only: stop once it is
    written, with one validation batch and no test."""
    if not (profile or only):
        return cfg
    from kiln.config import ProfileConfig

    steps = (cfg.trainer.profile or ProfileConfig()).model_copy(update={"stop": only})
    cfg = cfg.with_values({"trainer.profile": steps})
    return cfg.with_values({"trainer.limit_val_batches": 1, "trainer.test_after_fit": False}) if only else cfg
