"""A folder mirrored to a URL (an object store, through fsspec) that a fresh machine can take back intact.

Push: each new or changed file is uploaded under a temporary key (`<name>.part-<token>`), its size checked, then
made visible under its own name by a server-side copy (a complete object appears at once or not at all) and the
temporary key removed; last, `kiln-manifest.json` — every file's SHA-256 and size — is written the same way. Nothing
the mirror published is ever deleted: a file removed locally stays in the store and in the manifest.

Pull: the manifest's files are downloaded and checked against their SHA-256. A kill between a file's upload and
its publication leaves the previous version and its manifest entry as they were (and a stray temporary key, which
is skipped and removed at the next push); a kill between a file's publication and the manifest's leaves a file
newer than its entry, which `pull` hands to the caller's check (a checkpoint: its zip records' CRCs) instead of
trusting it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.core.errors import KilnError
from kiln.core.storage import failures, filesystem, strip

log = logging.getLogger("kiln")

MANIFEST = "kiln-manifest.json"
PART = ".part-"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Mirror:
    """`local` (a folder) mirrored to `url`; `skip(rel)` names files never pushed (lock files, temporaries)."""

    def __init__(self, local: Path, url: str, skip: Callable[[str], bool] = lambda rel: False):
        self.local, self.url, self.skip = Path(local), url.rstrip("/"), skip
        self.manifest: dict[str, dict] | None = None  # what the store holds, read once
        self.seen: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) of the version pushed or found there

    def push(self) -> list[str]:
        """Upload what changed since the last push; returns the files published."""
        fs = filesystem(self.url)
        manifest = self._manifest()
        published = []
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local).as_posix()
            if self.skip(rel) or PART in rel or rel == MANIFEST:
                continue
            st = path.stat()
            if self.seen.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            digest = sha256(path)
            if manifest.get(rel, {}).get("sha256") != digest:
                self._publish(fs, path, rel, st.st_size)
                manifest[rel] = {"sha256": digest, "size": st.st_size}
                published.append(rel)
            self.seen[rel] = (st.st_size, st.st_mtime_ns)
        if published:
            self._write_manifest(fs, manifest)
        return published

    def _publish(self, fs: Any, path: Path, rel: str, size: int) -> None:
        final = f"{self.url}/{rel}"
        part = f"{final}{PART}{uuid.uuid4().hex[:12]}"
        with failures(final):
            fs.put_file(str(path), strip(part))
            if fs.size(strip(part)) != size:
                raise OSError(f"uploaded {fs.size(strip(part))} of {size} bytes")
            fs.copy(strip(part), strip(final))
            fs.rm(strip(part))

    def _write_manifest(self, fs: Any, manifest: dict[str, dict]) -> None:
        tmp = self.local / f".{MANIFEST}.{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            self._publish(fs, tmp, MANIFEST, tmp.stat().st_size)
        finally:
            tmp.unlink(missing_ok=True)

    def _manifest(self) -> dict[str, dict]:
        """The store's manifest (read at the first push; stray temporary keys of a killed push removed)."""
        if self.manifest is None:
            self.manifest = read_manifest(self.url)
            fs = filesystem(self.url)
            with failures(self.url):
                stray = [f for f in fs.find(strip(self.url)) if PART in f.rsplit("/", 1)[-1]] \
                    if fs.exists(strip(self.url)) else []
                for key in stray:
                    fs.rm(key)
        return self.manifest

    def pull(self, trust: Callable[[Path], bool] = lambda path: False) -> list[str]:
        """Download the store's files into `local`; returns those left out: a file whose SHA-256 differs from its
        manifest entry is kept only if `trust(file)` says it is whole."""
        fs = filesystem(self.url)
        manifest = read_manifest(self.url)
        if not manifest:
            raise KilnError(f"{self.url} holds no {MANIFEST}: not a folder kiln mirrored (log.remote)")
        left_out = []
        for rel, entry in sorted(manifest.items()):
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pull")
            with failures(f"{self.url}/{rel}"):
                if not fs.exists(strip(f"{self.url}/{rel}")):
                    left_out.append(rel)
                    continue
                fs.get_file(strip(f"{self.url}/{rel}"), str(tmp))
            if sha256(tmp) != entry["sha256"] and not trust(tmp):
                log.warning("%s/%s does not match its checksum in %s: left out", self.url, rel, MANIFEST)
                tmp.unlink()
                left_out.append(rel)
                continue
            tmp.replace(target)
        self.manifest = manifest
        return left_out


def read_manifest(url: str) -> dict[str, dict]:
    fs = filesystem(url)
    key = f"{url.rstrip('/')}/{MANIFEST}"
    with failures(key):
        if not fs.exists(strip(key)):
            return {}
        return json.loads(fs.cat_file(strip(key)).decode("utf-8"))


def listing(url: str) -> list[str]:
    """The names of the folders directly under `url` (none when it does not exist)."""
    fs = filesystem(url)
    with failures(url):
        if not fs.exists(strip(url)):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(strip(url), detail=False))
