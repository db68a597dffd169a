"""Where metrics go: files, TensorBoard, the console. One small interface, `Tracker`."""

from __future__ import annotations

import errno
import logging
from typing import Any, Protocol

from kiln.core.errors import write_failed

log = logging.getLogger("kiln")
_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}


class Tracker(Protocol):
    def log_config(self, config: dict[str, Any]) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def log_test(self, metrics: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class Trackers:
    """Fans out to every tracker; a failing tracker is a warning, never a lost training run."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def _each(self, method: str, *args: Any) -> None:
        for tracker in self.trackers:
            try:
                getattr(tracker, method)(*args)
            except OSError as e:
                if e.errno in _DISK_ERRORS:  # the run's own disk: every later write fails too
                    raise write_failed(e.filename or type(tracker).__name__, e) from None
                log.warning("tracker %s failed in %s: %s", type(tracker).__name__, method, e)
            except Exception as e:  # noqa: BLE001 — a tracker must not take training down
                log.warning("tracker %s failed in %s: %s", type(tracker).__name__, method, e)

    def log_config(self, config: dict[str, Any]) -> None:
        self._each("log_config", config)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._each("log_epoch", epoch, metrics)

    def log_test(self, metrics: dict[str, Any]) -> None:
        self._each("log_test", metrics)

    def close(self) -> None:
        self._each("close")
