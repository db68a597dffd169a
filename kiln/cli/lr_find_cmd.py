"""kiln lr-find CONFIG [key=value ...]: the learning-rate range test."""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("lr-find", help="find a good learning rate (LR range test)",
                       description="Train a few batches while raising the learning rate exponentially, plot the "
                                   "smoothed loss against it, and suggest the LR where the loss falls fastest. "
                                   "The model starts as `kiln train` would start it and nothing is saved but the "
                                   "plot (runs/<name>/lr-find-<timestamp>/lr_find.png) and the numbers (lr_find.json).")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep (default 100)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kiln.config import load_config
    from kiln.core.errors import KilnError
    from kiln.core.state import seed_everything
    from kiln.data import fresh_encoder
    from kiln.runs import RunDir
    from kiln.track.console import setup_logging
    from kiln.train.build import build_trainer
    from kiln.train.device import resolve_device
    from kiln.train.lr_find import Span, plot, sweep
    from kiln.train.plan import RunPlan

    setup_logging(verbosity(args))
    if not 0 < args.start < args.end:
        raise KilnError(f"--start ({args.start}) must be positive and below --end ({args.end})")
    # The training step as kiln train builds it, but one optimizer step per batch and no schedule: the sweep sets
    # the learning rate itself.
    cfg = load_config(args.config, [*args.overrides, "trainer.accumulate=1", "schedule.name=none"])
    plan = RunPlan.of(cfg, resolve_device(cfg.trainer.device))
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    data = plan.data(("train",), vocab=fresh_encoder(cfg))
    t = build_trainer(plan, data, pretrained=True)
    result = sweep(t.model, t.optimizer, t.train_batches, device=plan.device, precision=t.precision, step=t.step,
                   span=Span(args.start, args.end, args.steps))
    folder = RunDir.create(cfg.log.dir, cfg.name, prefix="lr-find-").path
    plot(result, folder / "lr_find")
    (folder / "lr_find.json").write_text(json.dumps({"suggestion": result.suggestion, "lrs": result.lrs,
                                                     "losses": result.losses}, indent=1))
    key, value = cfg.optim.in_own_form(result.suggestion, cfg.data.batch_size)  # the config's own form
    print(f"suggested learning rate: {result.suggestion:.3g}  (set {key}={value:.2g}"
          f"{'; for one-cycle schedules a few times higher also works' if cfg.schedule.name == 'onecycle' else ''})")
    if result.stopped_early:
        print(f"the loss diverged at lr {result.lrs[-1] * 1.1:.2g}; the sweep stopped there")
    print(f"plot: {Path(folder) / 'lr_find.png'}")
    return 0
