"""Atomic writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pollen.errors import ConfigError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def check_writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Fail now, in one line, if `path` cannot be created or written (not after minutes of work).

    Nothing is created: a run refused later (a bad config) must not leave an empty `--out` behind.
    For a directory that does not exist yet, its nearest existing ancestor must accept a file.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} exists and is not a directory")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {p} is not writable: {probe} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".pollen-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {p} is not writable: {e.strerror or e}") from None
    return p
