"""kiln config CONFIG [key=value ...]: print the fully resolved config."""

from __future__ import annotations

import argparse

from kiln.cli.common import OVERRIDES_HELP, add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="print the fully resolved config",
                       description="Validate CONFIG with its base files and overrides, and print the result "
                                   "with every default filled in (YAML, or JSON with --json).")
    p.add_argument("config", metavar="CONFIG", help="config file (YAML or JSON)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.config import load_config, resolved_values, to_yaml, with_default_monitors
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))  # -q: no deprecation warnings around the printed config
    cfg = load_config(args.config, args.overrides)
    from kiln.train.preflight import check_own_model

    check_own_model(cfg)  # a model of your own and its model.args (kiln's own: checked by the schema)
    cfg = with_default_monitors(cfg)  # every default shown, the monitors that follow the task too
    text = json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n" if args.json else to_yaml(cfg, resolved_values(cfg))
    print(text, end="")
    if not args.json and (cfg.trainer.min_steps or cfg.trainer.max_steps):
        print(f"# {steps_note(cfg.trainer)}")
    return 0


def steps_note(tc) -> str:
    """What trainer.epochs becomes once the training split's size (steps per epoch) is known."""
    if tc.max_steps:
        return (f"runs exactly trainer.max_steps={tc.max_steps} optimizer steps: epochs = ceil({tc.max_steps} / "
                "steps per epoch), known once the data is read (kiln train logs it)")
    return (f"runs at least trainer.min_steps={tc.min_steps} optimizer steps: epochs = max({tc.epochs}, "
            f"ceil({tc.min_steps} / steps per epoch)), known once the data is read (kiln train logs it); "
            "trainer.epochs=N on the command line runs N epochs")
