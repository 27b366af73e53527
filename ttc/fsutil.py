"""Small filesystem helpers shared by the results store and the checkpoints (no JAX import)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Flushes a directory's entries to disk, so that a rename into it survives a crash."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
