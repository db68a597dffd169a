"""Finding a run to resume (`--resume auto`): here, or in the object store run folders are mirrored to
(log.remote) — where a run's mirror is, and fetching the newest unfinished run back to resume on another machine."""

from __future__ import annotations

import logging
from pathlib import Path

from kiln.core.errors import KilnError
from kiln.runs import RunDir, RunStatus

log = logging.getLogger("kiln")


def find_resumable(log_dir: Path, name: str, remote: str | None = None) -> RunDir:
    """The newest run of `name` that has a last.pt and did not finish — here, else (with `remote`, log.remote) the
    newest such run there, fetched into `log_dir` with its newest intact checkpoint."""
    folder = Path(log_dir) / name
    candidates = sorted((RunDir(p) for p in folder.glob("*") if RunDir(p).has_last()),
                        key=lambda r: r.path.name, reverse=True)
    for run in candidates:
        if run.state() is not RunStatus.FINISHED:
            return run
    fetched = fetch_unfinished(remote, Path(log_dir), name) if remote else None
    if fetched is not None:
        return fetched
    raise KilnError(f"--resume auto found no unfinished run of '{name}' with a checkpoint under {folder}"
                    + (f" or {remote.rstrip('/')}/{name}" if remote else "")
                    + "; start a new run without --resume, or pass --resume RUN_DIR")


def remote_url(remote: str, run: RunDir) -> str:
    """Where `run` is mirrored: <log.remote>/<name>/<YYYYmmdd-HHMMSS>."""
    return f"{remote.rstrip('/')}/{run.path.parent.name}/{run.path.name}"


def mirror_of(remote: str, run: RunDir):
    """The run folder's mirror (kiln.core.mirror): everything but the lock and files being written."""
    from kiln.core.mirror import Mirror

    return Mirror(run.path, remote_url(remote, run),
                  skip=lambda rel: rel.endswith((".lock", ".tmp")) or any(p.startswith(".") for p in rel.split("/")))


def fetch_unfinished(remote: str, log_dir: Path, name: str) -> RunDir | None:
    """The newest run of `name` under `remote` that did not finish, downloaded into <log_dir>/<name>/ (each file
    checked against its SHA-256) and resumable from its newest intact checkpoint; None when there is none."""
    from kiln.core.mirror import listing, read_manifest

    base = f"{remote.rstrip('/')}/{name}"
    for stamp in reversed(listing(base)):
        manifest = read_manifest(f"{base}/{stamp}")
        if "status.json" not in manifest or not any(k.startswith("checkpoints/") for k in manifest):
            continue
        run = RunDir(Path(log_dir) / name / stamp)
        mirror = mirror_of(remote, run)
        left_out = mirror.pull(trust=_whole_checkpoint)
        if run.state() is RunStatus.FINISHED:
            continue
        if not run.has_last() and not _newest_intact_as_last(run):
            log.warning("%s/%s: no intact checkpoint came back (%s)", base, stamp, ", ".join(left_out) or "none")
            continue
        log.info("fetched the unfinished run %s/%s into %s%s", base, stamp, run,
                 f" ({len(left_out)} file(s) failed their checksum and were left out)" if left_out else "")
        return run
    return None


def _whole_checkpoint(path: Path) -> bool:
    """A checkpoint file newer than its manifest entry (a kill between its publication and the manifest's): whole
    when every record of its zip archive passes its CRC."""
    import zipfile

    if ".pt" not in path.name or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _newest_intact_as_last(run: RunDir) -> bool:
    """No last.pt came back: the newest kept epoch checkpoint (else best.pt) becomes it."""
    import shutil

    for path in [*sorted(run.epoch_checkpoints(), key=RunDir.epoch_of, reverse=True), run.best]:
        if path.is_file():
            shutil.copyfile(path, run.last)
            log.warning("%s: resuming from %s (last.pt did not come back whole)", run, path.name)
            return True
    return False
