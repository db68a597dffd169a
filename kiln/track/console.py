"""The console: a per-epoch progress bar (rich) on terminals, one summary line per epoch everywhere."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
log = logging.getLogger("kiln")


def setup_logging(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings only), 0 normal, 1 verbose (debug)."""
    from kiln.core.dist import current

    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))]
    if not current().is_main:  # other ranks only speak up about problems
        level = max(level, logging.WARNING)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_kiln_console", False):
            log.removeHandler(h)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        rank = current()
        handler.setFormatter(logging.Formatter(f"[rank {rank.rank}] %(message)s" if rank.distributed else "%(message)s"))
    handler.setLevel(level)
    handler._kiln_console = True  # type: ignore[attr-defined]
    log.addHandler(handler)


def add_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    return handler


class EpochProgress:
    """A progress bar per epoch with loss, accuracy, throughput and ETA; silent when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress: Progress | None = None

    @staticmethod
    def wanted(setting: str, quiet: bool) -> bool:
        return not quiet and (setting == "bar" or (setting == "auto" and console.is_terminal))

    def start(self, description: str, total: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, stats="")

    def update(self, completed: int, stats: str | None = None) -> None:
        if self.progress is not None:
            if stats is None:
                self.progress.update(self.task, completed=completed)
            else:
                self.progress.update(self.task, completed=completed, stats=stats)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
