"""Hangs that end cleanly. Under several processes a rank that never reaches a collective leaves the others waiting
in it forever (the GPUs keep billing). While training runs, each process keeps a watch: training steps, evaluation
batches and kiln's collectives say that they progress (`beat`), and the collectives say which one a rank is waiting
in (`waiting`). When no progress is made for trainer.dist_timeout seconds, the watch writes `hang-rank<N>.txt` into
the run folder — where the rank was (its main thread's innermost frame), the collective it was waiting in or the
last it left, then every thread's Python stack (faulthandler) — and ends the process with exit code 1, so the
launcher stops the group. `explain` reads the files back: the ranks that were not waiting in the collective the
others were are the ones that did not arrive.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Ranks that fire give the others this long to write their own file before the launcher stops the group.
GRACE_SECONDS = 10.0
HEADER_END = "--- Python stacks of every thread (faulthandler) ---"


class _Progress:
    """This process's progress: the last beat, the collective it is in (and how many it has entered)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.collective: str | None = None
        self.entered = 0
        self.last_collective: str | None = None


_progress = _Progress()


def beat() -> None:
    _progress.last = time.monotonic()


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """Mark a collective (or a step that waits for one, such as DDP's backward): the watch reports it."""
    _progress.entered += 1
    _progress.collective = what
    try:
        yield
    finally:
        _progress.collective, _progress.last_collective = None, what
        beat()


class HangWatch:
    """A daemon thread that ends this process when nothing progresses for `timeout` seconds (see the module)."""

    def __init__(self, folder: Path, rank: int, timeout: float):
        self.folder, self.rank, self.timeout = folder, rank, timeout
        self.stopped = threading.Event()
        self.main = threading.main_thread().ident
        self.thread = threading.Thread(target=self._watch, name="kiln-hang-watch", daemon=True)

    def start(self) -> None:
        beat()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _watch(self) -> None:
        while not self.stopped.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - _progress.last
            if idle >= self.timeout:
                self._report(idle)
                self.stopped.wait(GRACE_SECONDS)
                os._exit(1)

    def _report(self, idle: float) -> None:
        path = self.folder / f"hang-rank{self.rank}.txt"
        header = {"rank": self.rank, "idle_s": round(idle, 1), "waiting_in": _progress.collective,
                  "collectives_entered": _progress.entered, "last_collective": _progress.last_collective,
                  "where": self._where()}
        with path.open("w") as f:
            f.write(json.dumps(header) + "\n" + HEADER_END + "\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
        print(f"kiln: rank {self.rank} made no progress for {idle:.0f} s (trainer.dist_timeout={self.timeout:g}): "
              f"its stacks are in {path}", file=sys.stderr, flush=True)

    def _where(self) -> str:
        """The main thread's innermost frame outside the standard library and torch, else its innermost."""
        frame = sys._current_frames().get(self.main) if self.main is not None else None
        if frame is None:
            return "unknown"
        stack = traceback.extract_stack(frame)
        own = [f for f in stack if "/torch/" not in f.filename and "/lib/python" not in f.filename] or stack
        f = own[-1]
        return f"{f.filename}:{f.lineno} in {f.name}"


def explain(folder: Path) -> str | None:
    """One message from the hang files the ranks wrote in `folder` (None: no rank reported a hang)."""
    reports = []
    for path in sorted(folder.glob("hang-rank*.txt")):
        try:
            reports.append(json.loads(path.read_text().split("\n", 1)[0]))
        except (OSError, json.JSONDecodeError):
            continue
    if not reports:
        return None
    waiting = [r for r in reports if r["waiting_in"]]
    most = max((r["collectives_entered"] for r in waiting), default=None)
    arrived = [r for r in waiting if r["collectives_entered"] == most]
    missing = [r for r in reports if r not in arrived]
    idle = max(r["idle_s"] for r in reports)
    parts = []
    if arrived and missing:
        what = arrived[0]["waiting_in"]
        parts.append(f"rank{'s' if len(missing) > 1 else ''} {', '.join(str(r['rank']) for r in missing)} did not "
                     f"arrive at {what} (the collective rank{'s' if len(arrived) > 1 else ''} "
                     f"{', '.join(str(r['rank']) for r in arrived)} waited in for {idle:.0f} s)")
    else:
        parts.append(f"no rank made progress for {idle:.0f} s")
    parts += [f"rank {r['rank']} was at {r['where']}" + (f", waiting in {r['waiting_in']}" if r["waiting_in"] else "")
              for r in reports]
    return "; ".join(parts) + f". Every thread's stack: {folder}/hang-rank<N>.txt"
