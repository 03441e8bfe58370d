"""Writing files so that nothing the user had is lost: every output is written beside its
destination under a temporary name and renamed into place, so a failure leaves either the
previous contents or nothing, never half a file or half a folder. And the one digest helper.

Rules every writer of nfzoo keeps (``save_pretrained``, ``nfzoo.export``, the ``nfzoo``
command):

* A destination that exists is replaced only with ``overwrite``, and a folder only when it is
  an nfzoo artifact, recognised by its own files, that holds nothing nfzoo did not write:
  a ``save_pretrained`` folder (config.json of format "nfzoo.pretrained/1" and
  model.weights.h5, plus card.md) or an export folder (manifest.json and the files its
  "files" lists). Anything else (a folder of the user's, the working directory, a symbolic
  link) is refused before any work is done (``check_destination``).
* The final rename never replaces what it did not check: a folder or file that appears at
  the destination while nfzoo is writing is kept and the write fails (Linux ``renameat2``
  with RENAME_NOREPLACE; a hard link for files elsewhere). When replacing, the previous
  folder is moved aside first and checked again there, so one swapped in after the first
  check is put back, not deleted.
* Temporary folders are named ``.<name>.partial.<pid>.<host>.<random>`` (and
  ``.<name>.old....`` for a folder being replaced). Each write first removes those that a
  killed writer on this host left (its process is gone); a replaced folder whose writer died
  before the new one took its place is moved back to the destination. Leftovers of a writer
  that is still running, or ran on another host, are named in a ``StaleFolderWarning``.
* Outputs get the permissions the umask gives (0644 / 0755 with the usual 022), not the
  0600 / 0700 of temporary files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "PRETRAINED_FORMAT",
    "WEIGHTS_FILE",
    "DestinationError",
    "StaleFolderWarning",
    "artifact_kind",
    "atomic_directory",
    "check_destination",
    "config_text",
    "sha256_file",
    "write_file_atomically",
]

#: the format recorded in a save_pretrained folder's config.json
PRETRAINED_FORMAT = "nfzoo.pretrained/1"
#: the files of a save_pretrained folder, the first two required
PRETRAINED_FILES = ("config.json", "model.weights.h5", "card.md")
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = PRETRAINED_FILES
MANIFEST_FILE = "manifest.json"


class DestinationError(ValueError):
    """A destination nfzoo will not write to: it exists (without ``overwrite``), or it is
    not an nfzoo artifact, or something appeared there while writing."""


class StaleFolderWarning(UserWarning):
    """A temporary folder left by another nfzoo write that may still be running."""


def config_text(config: dict) -> str:
    """config.json's text: sorted keys, two-space indents (stable digests for equal content)."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- what nfzoo wrote ---------------------------------------------------------------------


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def artifact_kind(folder: str | os.PathLike) -> str | None:
    """ "pretrained" (a save_pretrained folder), "export" (an export folder) or None, from
    the folder's own marker files."""
    folder = Path(folder)
    config = _read_json(folder / PRETRAINED_FILES[0])
    if (
        isinstance(config, dict)
        and config.get("format") == PRETRAINED_FORMAT
        and (folder / PRETRAINED_FILES[1]).is_file()
    ):
        return "pretrained"
    manifest = _read_json(folder / MANIFEST_FILE)
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        return "export"
    return None


def _foreign_files(folder: Path, kind: str) -> list[str]:
    """Paths under ``folder`` (relative) that an artifact of ``kind`` does not hold."""
    if kind == "pretrained":
        ours = set(PRETRAINED_FILES)
    else:
        ours = {MANIFEST_FILE, *_read_json(folder / MANIFEST_FILE)["files"]}
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink() or (not path.is_dir() and relative not in ours):
            found.append(relative)
    return found


def _refuse_unless_replaceable(path: Path, hint: str) -> None:
    if path.is_symlink():
        raise DestinationError(f"{path} is a symbolic link; refusing to replace it.")
    if not path.is_dir():
        raise DestinationError(f"{path} is a file, not a folder; refusing to replace it.")
    kind = artifact_kind(path)
    if kind is None:
        raise DestinationError(
            f"{path} is not a folder written by nfzoo (no config.json of format "
            f"{PRETRAINED_FORMAT!r} with model.weights.h5, no export manifest.json); refusing "
            "to replace it. Choose a new folder."
        )
    foreign = _foreign_files(path, kind)
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        shown = ", ".join(foreign[:5]) + more
        raise DestinationError(
            f"{path} holds files nfzoo did not write ({shown}); refusing to replace it with "
            f"{hint}. Move them out or choose a new folder."
        )


def check_destination(
    destination: str | os.PathLike, overwrite: bool = False, hint: str = "overwrite=True"
) -> Path:
    """Refuses, before any work is done, a folder destination that ``atomic_directory``
    would refuse (see the module docstring); returns its absolute path. ``hint`` names the
    option that allows replacing (``--overwrite`` on the command line)."""
    destination = Path(os.path.abspath(os.fspath(destination)))
    if not destination.name:
        raise DestinationError(f"{destination} is a filesystem root; choose a folder inside it.")
    cwd = Path(os.path.abspath(os.getcwd()))
    if cwd == destination or cwd.is_relative_to(destination):
        raise DestinationError(
            f"{destination} is the working directory or holds it; refusing to write there. "
            "Choose a new folder."
        )
    if os.path.lexists(destination):
        if not overwrite:
            raise DestinationError(f"{destination} already exists; pass {hint} to replace it.")
        _refuse_unless_replaceable(destination, hint)
    return destination


# ---- temporary names and leftovers --------------------------------------------------------


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_prefix(destination: Path, role: str) -> str:
    """``.<name>.<role>.<pid>.<host>.``; mkdtemp adds a random tail without dots."""
    return f".{destination.name}.{role}.{os.getpid()}.{_host()}."


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it even
    briefly races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_temp_dir(destination: Path, role: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(destination, role), dir=destination.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; outputs are ordinary data
    return tmp


def _writer_alive(pid: int, host: str) -> bool | None:
    """Whether the process ``pid`` on ``host`` still runs; None when it cannot be known (a
    process on another host)."""
    if host != _host():
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _clean_leftovers(destination: Path, suffix: str = "") -> None:
    """Removes the temporary files or folders of killed writes of ``destination`` on this
    host, puts back a previous folder whose replacement never arrived, and names the rest."""
    name = re.escape(destination.name)
    pattern = re.compile(
        rf"^\.{name}\.(partial|old)\.(\d+)\.([A-Za-z0-9-]+)\.[a-z0-9_]+{re.escape(suffix)}$"
    )
    legacy = re.compile(rf"^\.{name}\.(partial|old)-")
    try:
        siblings = list(destination.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        match = pattern.match(path.name)
        if match is None:
            if legacy.match(path.name) and path.is_dir():
                warnings.warn(
                    f"{path} was left by an interrupted nfzoo write (an older version, which "
                    "did not record its process); remove it if no write is in progress.",
                    StaleFolderWarning,
                    stacklevel=4,
                )
            continue
        role, pid, host = match.group(1), int(match.group(2)), match.group(3)
        alive = _writer_alive(pid, host)
        if alive is False:
            previous = path / "previous"
            if role == "old" and previous.is_dir() and not os.path.lexists(destination):
                _rename_no_replace(previous, destination)  # the write died mid-way: undo it
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        elif alive is None:
            warnings.warn(
                f"{path} belongs to an nfzoo write on host {host} (process {pid}); remove it "
                "if that write is no longer running.",
                StaleFolderWarning,
                stacklevel=4,
            )


# ---- renaming without replacing -----------------------------------------------------------

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None


def _rename_no_replace(source: Path, target: Path) -> None:
    """Renames ``source`` to ``target``, raising FileExistsError if ``target`` exists, with
    no window in which something created at ``target`` could be replaced (renameat2 on
    Linux; a hard link for files elsewhere; a check just before the rename otherwise)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        result = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.EINVAL, errno.ENOSYS):  # the filesystem lacks the flag
            raise OSError(code, os.strerror(code), str(source))
    if source.is_file() and not source.is_symlink():
        try:
            os.link(source, target)  # fails if target exists
        except OSError as e:
            if isinstance(e, FileExistsError):
                raise
        else:
            source.unlink()
            return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


def _appeared(target: Path) -> DestinationError:
    return DestinationError(
        f"{target} appeared while nfzoo was writing it; it was left as it is and nothing was "
        "written."
    )


# ---- the two writers ----------------------------------------------------------------------


def write_file_atomically(
    path: str | os.PathLike, write: Callable[[Path], object], overwrite: bool = True
) -> Path:
    """Calls ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so writers that
    look at it are satisfied), then renames it to ``path``. Without ``overwrite`` an existing
    ``path`` is refused before ``write`` runs, and one that appears meanwhile is kept."""
    path = Path(path)
    if path.is_dir():
        raise DestinationError(f"{path} is a folder; expected a file name.")
    if not overwrite and os.path.lexists(path):
        raise DestinationError(f"{path} already exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path, path.suffix)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=_temp_prefix(path, "partial"), suffix=path.suffix
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                _rename_no_replace(tmp, path)
            except FileExistsError:
                raise _appeared(path) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_directory(
    destination: str | os.PathLike, overwrite: bool = False, hint: str = "overwrite=True"
) -> Iterator[Path]:
    """Yields a temporary folder beside ``destination``; when the block ends without error
    the folder takes the destination's name, otherwise it is removed and the destination is
    left as it was. With ``overwrite`` an existing nfzoo artifact is replaced; see the module
    docstring for what is refused and how leftovers of killed writes are handled."""
    destination = Path(os.path.abspath(os.fspath(destination)))
    if destination.name and destination.parent.is_dir():
        _clean_leftovers(destination)  # first: it may put a previous folder back
    destination = check_destination(destination, overwrite, hint)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(destination, "partial")
    try:
        yield tmp
        if overwrite and os.path.lexists(destination):
            _replace(tmp, destination, hint)
        else:
            try:
                _rename_no_replace(tmp, destination)
            except FileExistsError:
                raise _appeared(destination) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, destination: Path, hint: str) -> None:
    """Moves the previous folder aside, checks it again where nobody else writes (it could
    have been swapped since ``check_destination``), then renames ``tmp`` into place."""
    old = _make_temp_dir(destination, "old")
    previous = old / "previous"
    os.rename(destination, previous)
    try:
        _refuse_unless_replaceable(previous, hint)
    except DestinationError:
        _rename_no_replace(previous, destination)
        shutil.rmtree(old, ignore_errors=True)
        raise DestinationError(
            f"{destination} changed while nfzoo was writing and is no longer an nfzoo "
            "artifact; it was left as it is and nothing was written."
        ) from None
    try:
        _rename_no_replace(tmp, destination)
    except FileExistsError:
        kept = Path(tempfile.mkdtemp(prefix=f"{destination.name}.previous-", dir=old.parent))
        os.rename(previous, kept / destination.name)
        shutil.rmtree(old, ignore_errors=True)
        raise DestinationError(
            f"{destination} appeared while nfzoo was replacing it; it was left as it is, "
            f"nothing was written, and the folder it would have replaced is in {kept}."
        ) from None
    shutil.rmtree(old)
