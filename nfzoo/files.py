"""Writing files so that nothing the user had is lost: every output is written beside its
destination under a temporary name and renamed into place, so a failure leaves either the
previous contents or nothing, never half a file or half a folder. And the one digest helper."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_directory", "sha256_file", "write_file_atomically"]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so writers that
    look at it are satisfied), then renames it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside ``destination``; when the block ends without error
    the folder takes the destination's name (replacing it when ``overwrite``), otherwise it is
    removed and the destination is left as it was."""
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise ValueError(f"{destination} already exists; pass overwrite=True to replace it.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; these folders are ordinary data
    try:
        yield tmp
        if destination.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
            destination.rename(old / "previous")
            tmp.rename(destination)
            shutil.rmtree(old)
        else:
            tmp.rename(destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
