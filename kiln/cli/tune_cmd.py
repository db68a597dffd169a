"""kiln tune TUNE_CONFIG [key=value ...] [--resume TUNE_DIR] [--workers N] [--storage URL] [--backend optuna|ray];
kiln tune --status PATH"""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters (grid, random, TPE, CMA-ES; pruning; Ray)",
                       description="Search the hyperparameters named in TUNE_CONFIG's `space` over its `base` "
                                   "training config. Each trial is a normal kiln run in "
                                   "runs/<name>/tune-<timestamp>/trial-NNN/. The study is kept in study.db "
                                   "(SQLite) in that folder: resume with --resume, watch it with "
                                   "`optuna-dashboard sqlite:///.../study.db`. Writes results.csv, best.yaml "
                                   "(runnable with kiln train) and plots/.",
                       epilog="examples:\n  kiln tune configs/tune/fashion_mnist.yaml trainer.epochs=5\n"
                              "  kiln tune configs/tune/fashion_mnist.yaml --workers 4\n"
                              "  kiln tune configs/tune/fashion_mnist.yaml --resume runs/fashion_mnist/tune-20260101-120000\n"
                              "  kiln tune configs/tune/fashion_mnist.yaml --storage journal:/shared/search/study.log  "
                              "# on each machine\n"
                              "  kiln tune --status /shared/search/study.log\n"
                              "  kiln tune configs/tune/fashion_mnist.yaml --backend ray --address auto --gpus-per-trial 1",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="TUNE_CONFIG", nargs="?")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the base training config, e.g. data.root=... trainer.epochs=5")
    p.add_argument("--resume", metavar="TUNE_DIR", help="continue an interrupted search (finished trials are kept)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N trials in parallel processes (one GPU each when there are GPUs, else CPU threads "
                        "split between them)")
    p.add_argument("--storage", metavar="URL",
                   help="a study shared by several `kiln tune` processes or machines: journal:PATH (an Optuna "
                        "journal file on a shared file system; its folder is the tune folder of every worker) or "
                        "a database URL (postgresql://user@host/db); default: study.db in a new tune folder")
    p.add_argument("--status", metavar="PATH",
                   help="summarise a study in progress (a journal file or a tune folder) and exit")
    p.add_argument("--backend", choices=["optuna", "ray"], default="optuna",
                   help="optuna: trials on this machine; ray: on a Ray cluster (pip install -e .[ray])")
    p.add_argument("--address", help="ray: cluster address (auto, ray://host:10001); default: a local Ray")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="ray: GPUs per trial (default 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="ray: CPUs per trial (default 1)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    if args.status:
        from kiln.commands.tune.lease import status_lines

        print("\n".join(status_lines(args.status)))
        return 0
    if not args.config:
        from kiln.core.errors import KilnError

        raise KilnError("kiln tune needs a TUNE_CONFIG (or --status PATH)")
    if args.backend == "ray":
        from kiln.commands.tune.ray_runner import run_ray

        tune_dir = run_ray(Path(args.config), args.overrides, address=args.address,
                           gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial)
    else:
        from kiln.commands.tune.runner import run_tune

        tune_dir = run_tune(Path(args.config), args.overrides, resume=Path(args.resume) if args.resume else None,
                            workers=args.workers, storage=args.storage)
    from kiln.commands.tune.results import summary_table

    console = Console()
    table, dropped = ranking_table(summary_table(tune_dir), str(tune_dir), console.width)
    console.print(table)
    if dropped:
        print(f"(left out at this width: {', '.join(dropped)}; every column is in {tune_dir / 'results.csv'})")
    if (tune_dir / "best.yaml").is_file():
        print(f"best config: {tune_dir / 'best.yaml'}  (train it with: kiln train {tune_dir / 'best.yaml'})")
    print(f"tune folder: {tune_dir}")
    return 0


def ranking_table(rows: list[dict[str, str]], tune_dir: str, width: int):
    """The trials as a table no wider than `width`, whole cells only: the rank, trial, state, metric and searched
    values first, then what else fits (epochs, test result, speed, size); the columns left out, by name."""
    from rich.table import Table

    columns = [c for c in rows[0] if c != "run_dir"] if rows else []
    first = ("rank", "trial", "state")
    metric = [c for c in columns if c not in first and "/" in c and not c.startswith("test/")][:1]
    order = sorted(columns, key=lambda c: (0 if c in first else 1 if c in metric else 2 if c.startswith("param:")
                                           else 3 if c == "epochs" else 4 if c.startswith("test/") else 5))
    cells = {c: [_fmt(r[c]) for r in rows] for c in order}
    header = {**{c: c for c in order}, **_short_names([c for c in order if c.startswith("param:")])}
    kept: list[str] = []
    used = 1  # the table's left edge
    for c in order:
        need = max(len(header[c]), *map(len, cells[c])) + 3  # padding and a border
        if used + need <= width or not kept:
            kept.append(c)
            used += need
    table = Table(title=f"trials of {tune_dir}")
    for c in kept:
        table.add_column(header[c], justify="right", no_wrap=True)
    for i in range(len(rows)):
        table.add_row(*[cells[c][i] for c in kept])
    return table, [c.removeprefix("param:") for c in order if c not in kept]


def _short_names(params: list[str]) -> dict[str, str]:
    """param:optim.lr -> lr: each searched key by the fewest last parts that still tell it from the others."""
    keys = [p.removeprefix("param:").split(".") for p in params]
    short = {}
    for param, parts in zip(params, keys):
        least = 2 if parts[-1].isdigit() and len(parts) > 1 else 1  # scale.0, not a bare 0
        n = next(n for n in range(least, len(parts) + 1)
                 if sum(other[-n:] == parts[-n:] for other in keys) == 1 or n == len(parts))
        short[param] = ".".join(parts[-n:])
    return short


def _fmt(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"
