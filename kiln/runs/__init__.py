"""Run folders: `RunDir` is the one owner of their layout (finding one to resume, here or in the object store a run
is mirrored to: kiln.runs.remote).

    runs/<name>/<YYYYmmdd-HHMMSS>/
      config.yaml  status.json  train.log  metrics.jsonl  metrics.csv  tb/  vocab.json | tokenizer/
      checkpoints/{last,best,epoch-NNN}.pt  (FSDP: {last,best,epoch-NNN}.dcp/, folders of shards)
      test_metrics.json  figures/  report.html
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TextIO, cast

from kiln.core.errors import KilnError
from kiln.core.formats import TestResults, by_name

log = logging.getLogger("kiln")


class RunStatus(str, Enum):
    """A run's state in status.json (a str, so the file keeps its plain strings)."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM after a clean save: resumable
    STOPPED = "stopped"  # the loss became NaN/Inf, or CUDA ran out of memory
    FAILED = "failed"  # an error
    FINISHED = "finished"
    PRUNED = "pruned"  # a tune trial stopped early by the pruner


class RunDir:
    """Where everything of one run lives. Nothing else in kiln spells these file names."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def create(cls, log_dir: Path | str, name: str, prefix: str = "") -> "RunDir":
        """<log_dir>/<name>/<prefix><YYYYmmdd-HHMMSS>, made now (with a -N suffix if that second is taken)."""
        base = Path(log_dir) / name / (prefix + time.strftime("%Y%m%d-%H%M%S"))
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:  # two runs started in the same second
                path, n = base.with_name(f"{base.name}-{n}"), n + 1

    @classmethod
    def open(cls, path: Path | str) -> "RunDir":
        """An existing run folder (it must hold config.yaml)."""
        run = cls(path)
        if not run.is_run:
            raise KilnError(f"{run.path} is not a kiln run folder (no config.yaml); "
                            "pass a folder like runs/<name>/<YYYYmmdd-HHMMSS>")
        return run

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def is_run(self) -> bool:
        """Whether the folder is a kiln run (it holds its config.yaml), rather than a folder of runs or anything
        else."""
        return self.config_file.is_file()

    # -- the layout
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def vocab_file(self) -> Path:
        return self.path / "vocab.json"

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, name: str, sharded: bool = False) -> Path:
        """Where checkpoint `name` (last, best, epoch-NNN) is written: a file, or a folder of shards."""
        from kiln.core.sharded import SUFFIX

        return self.checkpoints / f"{name}{SUFFIX if sharded else '.pt'}"

    def saved_checkpoint(self, name: str) -> Path:
        """Checkpoint `name` as it is on disk: the file or the folder of shards (the newer, should a resume with
        another strategy have left both), else the file's path."""
        from kiln.core.sharded import on_disk

        file, folder = self.checkpoint_path(name), on_disk(self.checkpoint_path(name, sharded=True))
        found = [p for p in (folder, file) if p is not None and p.exists()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else file

    @property
    def last(self) -> Path:
        return self.saved_checkpoint("last")

    @property
    def best(self) -> Path:
        return self.saved_checkpoint("best")

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.saved_checkpoint(f"epoch-{epoch:03d}")

    def epoch_checkpoints(self) -> list[Path]:
        return sorted({self.saved_checkpoint(p.name.split(".")[0]) for p in self.checkpoints.glob("epoch-*")})

    @staticmethod
    def epoch_of(checkpoint: Path) -> int:
        """The epoch of an epoch-NNN checkpoint."""
        return int(checkpoint.name.split(".")[0].split("-")[1])

    @property
    def test_metrics_file(self) -> Path:
        return self.path / "test_metrics.json"

    def other_test_metrics_file(self, data_label: str) -> Path:
        """Where `kiln test RUN data.root=OTHER` writes its results: beside the run's own, named after the data,
        so the run's own test results (and every comparison made from them) stay the run's."""
        import re

        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", data_label).strip("._") or "other"
        return self.path / f"test_metrics-{slug}.json"

    @property
    def baseline_file(self) -> Path:
        return self.path / "baseline.json"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def discard(self) -> None:
        """Remove a run folder that kiln made and that training never started in (a setup error)."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)

    # -- reading and writing
    def saved_config(self) -> dict[str, Any]:
        """The resolved config the run was trained with, as plain data."""
        import yaml

        try:
            raw = yaml.safe_load(self.config_file.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise KilnError(f"cannot read {self.config_file}: {e}") from None
        if not isinstance(raw, dict):
            raise KilnError(f"{self.config_file} is not a kiln config (a mapping of sections)")
        from kiln.core.upgrade import upgrade_saved

        return upgrade_saved(raw)

    def config(self, overrides: Sequence[str] = ()):
        """The run's config with `overrides` applied (e.g. data.root=... on another machine)."""
        from kiln.config import load_config

        return load_config(None, list(overrides), base=self.saved_config())

    def write_config(self, cfg, comments: dict[str, str] | None = None) -> None:
        """config.yaml: the config the run trains with, and, as comments, the run plan's `comments` (key -> what
        this machine and process group resolved it to, or from what kiln derived its value: RunPlan.comments). A
        resumed run derives nothing new: the keys recorded as derived before stay recorded."""
        from kiln.config import recorded_derivations, to_yaml
        from kiln.core.state import atomic_write

        before = recorded_derivations(self.config_file.read_text()) if self.config_file.is_file() else {}
        text = to_yaml(cfg, {**before, **(comments or {})})
        # atomic: a kill while it is rewritten (a resume, the threshold after training) keeps the old file whole
        atomic_write(self.config_file, lambda f: f.write(text.encode("utf-8")))

    def checkpoint(self, which: str = "best") -> Path:
        """best | last | the name of another checkpoint of the run (averaged, epoch-007) | a path; best falls back to
        last when the run never validated."""
        if which in ("best", "last"):
            path = self.best if which == "best" and self.best.exists() else self.last
            if not path.exists():
                raise KilnError(f"{self.path} has no checkpoints/{which}.pt — did its training start?")
            return path
        if "/" not in which and not which.endswith(".pt") and (named := self.saved_checkpoint(which)).exists():
            return named
        path = Path(which)
        if not path.exists():
            raise KilnError(f"checkpoint not found: {path}")
        return path

    def has_last(self) -> bool:
        return self.last.exists()

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def state(self) -> RunStatus | None:
        """The run's state from status.json (None: no status yet, or one this kiln does not know)."""
        try:
            return RunStatus(self.status().get("state"))
        except ValueError:
            return None

    def write_status(self, state: RunStatus | str, **extra: Any) -> None:
        """status.json: `state` (a RunStatus, or its value) and what else the writer knows (epoch, batch, ...)."""
        info = {"state": RunStatus(state).value, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        tmp = self.path / f".{self.status_file.name}.tmp"
        try:
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(self.status_file)
        except OSError as e:  # e.g. the disk filled up: the status is informative, the run's state is in last.pt
            log.warning("could not write %s: %s", self.status_file, e)

    def vocab(self):
        """How a text run encodes text: its model's tokenizer (tokenizer/, an hf: model) or its vocabulary
        (vocab.json); None for image runs."""
        if (self.tokenizer_dir / "tokenizer_config.json").is_file():
            from kiln.data.model_tokenizer import ModelTokenizer

            return ModelTokenizer(self.tokenizer_dir)
        if not self.vocab_file.is_file():
            return None
        from kiln.data.vocab import Vocab

        return Vocab.load(self.vocab_file)

    def save_vocab(self, encoder) -> None:
        """A text run's vocabulary (vocab.json) or model tokenizer (tokenizer/), read back by vocab()."""
        from kiln.data.model_tokenizer import ModelTokenizer

        encoder.save(self.tokenizer_dir if isinstance(encoder, ModelTokenizer) else self.vocab_file)

    def test_metrics(self) -> TestResults | None:
        if not self.test_metrics_file.is_file():
            return None
        return cast(TestResults, json.loads(self.test_metrics_file.read_text()))

    def write_test_metrics(self, results: TestResults, path: Path | None = None) -> Path:
        """test_metrics.json (the run's own test split), or `path` (results on other data); returns the file."""
        path = self.test_metrics_file if path is None else Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        return path

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl: one row per epoch ([] before the first epoch ends)."""
        if not self.metrics_jsonl.is_file():
            return []
        return [json.loads(line) for line in self.metrics_jsonl.read_text().splitlines() if line.strip()]

    def facts(self, test_key: str = "acc") -> dict[str, Any]:
        """What tells runs of different models apart: parameters, the median seconds per epoch and training
        samples per second (metrics.jsonl), and the test result `test_key` (None where the run has none)."""
        import statistics

        rows, test = self.metrics(), self.test_metrics()

        def median(key: str) -> float | None:
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            return statistics.median(values) if values else None

        return {"parameters": self.status().get("parameters"), "s_per_epoch": median("time/epoch_s"),
                "samples_per_s": median("time/samples_per_s"), f"test/{test_key}": by_name(test).get(test_key) if test else None}

    @property
    def test_predictions_file(self) -> Path:
        return self.path / "test_predictions.pt"

    def write_test_predictions(self, checksum: str, predictions, targets) -> None:
        """The test split's predictions by the checkpoint whose sha256 is `checksum` (kiln report reuses them)."""
        import torch

        torch.save({"checkpoint_sha256": checksum, "predictions": predictions, "targets": targets},
                   self.test_predictions_file)

    def test_predictions(self, checksum: str | None):
        """(predictions, targets) saved for the checkpoint with sha256 `checksum`, or None."""
        import torch

        if not checksum or not self.test_predictions_file.is_file():
            return None
        try:
            saved = torch.load(self.test_predictions_file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 — unreadable: predict again
            return None
        return (saved["predictions"], saved["targets"]) if saved.get("checkpoint_sha256") == checksum else None

    def baseline(self) -> dict[str, Any] | None:
        """What `kiln baseline RUN` measured on this run's split, if it was run."""
        return json.loads(self.baseline_file.read_text()) if self.baseline_file.is_file() else None

    def write_baseline(self, results: dict[str, Any]) -> None:
        self.baseline_file.write_text(json.dumps(results, indent=2) + "\n")


class RunLock:
    """An exclusive OS lock on a run folder while a training process writes it, so a second writer (a resume
    started in another terminal, a requeued job whose old copy still runs) stops before it writes anything. The
    OS drops the lock when its holder dies, even by SIGKILL. Readers (test, predict, report) do not lock."""

    def __init__(self, run: RunDir):
        self.run = run
        self.file: TextIO | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            log.warning("cannot lock %s on this system; make sure no other process trains into it", self.run)
            return self
        handle = open(self.run.lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise KilnError(f"{self.run} is being written by {holder}; wait for that run to finish or stop it "
                            "(its last.pt is kept), or train into another folder") from None
        except OSError as e:  # e.g. a network filesystem without locks
            handle.close()
            log.warning("cannot lock %s (%s); make sure no other process trains into it", self.run, e)
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        self.file = handle
        return self

    def holder(self) -> str | None:
        """Who writes the run now ("process N on HOST (since ...)"), or None: no live process holds its lock."""
        try:
            import fcntl

            with open(self.run.lock_file) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return handle.read().strip() or "another process"
                return None  # a lock file left behind, held by no one
        except (ImportError, OSError):  # no lock file, or no locks on this system
            return None

    def release(self) -> None:
        """Drop the lock and its file (a finished or stopped run keeps no .lock)."""
        if self.file is not None:
            self.run.lock_file.unlink(missing_ok=True)  # while still held: no other writer is between the two
            self.file.close()  # closing the descriptor drops the lock
            self.file = None


def newest_finished(folder: Path) -> RunDir | None:
    """runs/<name>: the newest of its runs that finished."""
    finished = sorted((p for p in Path(folder).iterdir() if RunDir(p).state() is RunStatus.FINISHED),
                      reverse=True)
    return RunDir(finished[0]) if finished else None
