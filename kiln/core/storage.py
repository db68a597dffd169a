"""Files wherever they are kept: local paths and URLs (s3://, gs://, https://, ...) through fsspec, with brace
patterns expanded, byte ranges read, and every way a store can fail turned into one clear error before training.

Credentials and endpoints come from where the storage's own tools read them (AWS_ACCESS_KEY_ID/AWS_PROFILE,
~/.aws/config, AWS_ENDPOINT_URL or FSSPEC_S3_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS), never from kiln's config.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kiln.core.errors import KilnError

HINTS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for an S3 API "
          "other than AWS's",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS (pip install gcsfs)",
}


def is_url(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def protocol(location: str) -> str:
    return str(location).split("://", 1)[0] if is_url(location) else "file"


_FILESYSTEMS: dict[tuple[int, str, str], Any] = {}
SETTINGS = ("AWS_", "FSSPEC_", "GOOGLE_", "GCS")  # environment variables a store's client reads its settings from


def filesystem(location: str) -> Any:
    """The fsspec filesystem of `location`: one per process (a forked DataLoader worker makes its own, as an async
    client must not cross a fork), protocol and store settings in the environment (a notebook that sets another
    endpoint or key gets a client that uses it)."""
    settings = "\0".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(SETTINGS))
    key = (os.getpid(), protocol(location), settings)
    if key not in _FILESYSTEMS:
        import fsspec

        try:
            _FILESYSTEMS[key] = fsspec.filesystem(key[1], skip_instance_cache=True)
        except ImportError as e:
            raise KilnError(f"{location}: reading {key[1]}:// needs {e.name or 'its fsspec backend'} "
                            "(pip install 'kiln-train[data]' for s3fs; gcsfs for gs://)") from None
    return _FILESYSTEMS[key]


def strip(location: str) -> str:
    """The path fsspec's filesystem wants (a URL without its protocol; a file:// path as a path)."""
    location = str(location)
    return location.split("://", 1)[1] if "://" in location else location


def expand(pattern: str) -> list[str]:
    """The files a pattern names, in order: braces expanded ("train-{000..009}.tar"), then shell globs; every name
    without a glob must exist."""
    import braceexpand

    names = list(braceexpand.braceexpand(str(pattern)))
    out: list[str] = []
    for name in names:
        if any(c in name for c in "*?["):
            out += sorted(_glob(name))
        else:
            out.append(name)
    return out


def _glob(name: str) -> list[str]:
    with failures(name):
        found = filesystem(name).glob(strip(name))
    prefix = name.split("://", 1)[0] + "://" if is_url(name) else ""
    return [prefix + f for f in found]


def exists(location: str) -> bool:
    with failures(location):
        return bool(filesystem(location).exists(strip(location)))


def identity(location: str) -> str:
    """What changes when the file is replaced: its size and modification time (local) or ETag (object stores)."""
    with failures(location):
        info = filesystem(location).info(strip(location))
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"{location}\0{info.get('size')}\0{tag}"


def check_writable(url: str) -> None:
    """Write and remove a small object under `url`: credentials, endpoint, bucket and permission checked now, not
    when the first checkpoint is pushed."""
    import uuid

    probe = f"{url.rstrip('/')}/.kiln-probe-{uuid.uuid4().hex[:12]}"
    fs = filesystem(url)
    with failures(url):
        fs.pipe_file(strip(probe), b"kiln")
        fs.rm(strip(probe))


def file_size(location: str) -> int:
    with failures(location):
        return int(filesystem(location).size(strip(location)))


def open_text(location: str | Path) -> Any:
    """A text file (UTF-8, newlines as written: what the csv module wants), local or at a URL."""
    if not is_url(location):
        return open(strip(str(location)), newline="", encoding="utf-8")
    with failures(str(location)):
        return filesystem(str(location)).open(strip(str(location)), "rt", encoding="utf-8", newline="")


def read_all(location: str) -> bytes:
    with failures(location):
        return bytes(filesystem(location).cat_file(strip(location)))


def open_file(location: str, mode: str = "rb") -> Any:
    with failures(location):
        return filesystem(location).open(strip(location), mode)


def read_range(location: str, offset: int, size: int) -> bytes:
    """`size` bytes of the file from `offset` (one ranged request on an object store)."""
    if not is_url(location):
        with open(strip(location), "rb") as f:
            f.seek(offset)
            return f.read(size)
    with failures(location):
        return bytes(filesystem(location).cat_file(strip(location), start=offset, end=offset + size))


@contextmanager
def failures(location: str) -> Iterator[None]:
    """A storage failure inside (no such file or bucket, no credentials, no endpoint) becomes a KilnError naming
    the location and what to set."""
    try:
        yield
    except KilnError:
        raise
    except Exception as e:  # noqa: BLE001 — each store's client raises its own kinds (botocore, aiohttp, gcsfs)
        raise KilnError(explain(str(location), e)) from None


def explain(location: str, error: BaseException) -> str:
    """One paragraph on why `location` cannot be read, and what to do."""
    name, text = type(error).__name__, str(error) or type(error).__name__
    hint = HINTS.get(protocol(location), "")
    if isinstance(error, FileNotFoundError) or "NoSuchKey" in text or "NoSuchBucket" in text or "Not Found" in text:
        return f"{location}: no such file or bucket ({text.splitlines()[0]}); check the path"
    if "Credentials" in name or "credentials" in text.lower() or "AccessDenied" in text or "Forbidden" in text:
        return f"{location}: access refused or no credentials ({text.splitlines()[0]}); {hint or 'check the access'}"
    if "Connect" in name or "connect" in text.lower() or "Endpoint" in name or isinstance(error, (OSError, TimeoutError)):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
        where = f"AWS_ENDPOINT_URL={endpoint}" if endpoint and protocol(location) == "s3" else "the endpoint"
        return f"{location}: cannot reach the storage ({text.splitlines()[0]}); check the network and {where}"
    return f"{location}: cannot be read ({name}: {text.splitlines()[0]})"
