"""File-system plumbing: atomic writes, output checks, run locks, JSON files read with one-line errors.

Files are created with the process umask (mode 0666 & ~umask, like `open`), so a checkpoint on a
shared file system is as readable as any other file its owner writes.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bioxlstm.errors import BioXLSTMError


class OutputError(BioXLSTMError, OSError):
    """An output path cannot be created or written (missing parent, read-only, a file in the way)."""


class RunLockedError(BioXLSTMError):
    """Another process holds the run directory's lock."""


def read_json(path: Path, error: type[Exception], what: str = "JSON file") -> Any:
    """The parsed content of a JSON file; `error("<path>: not a readable <what> (...)")` if it
    cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not a readable {what} ({err})") from None


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


@functools.cache
def _file_mode() -> int:
    """0666 under the process umask: the mode `open` gives a new file (read once; changing the
    umask to read it is not thread-safe, so it is not read again)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path) on a fresh file beside `path`, fsync it, then rename it over `path`.

    Readers see the old file or the whole new one, never a part; a crash leaves a hidden
    `.<name>.<random>.tmp` behind at worst. The file gets the umask's mode even when `write`
    replaces it with a private temporary file of its own (as safetensors does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: str | Path) -> None:
    """Make renames inside `path` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard_tree(path: Path) -> None:
    """Remove a directory so that no partial copy is ever left under its name.

    It is first renamed to a hidden `.trash-*` sibling (atomic), then deleted; a crash midway leaves
    only the trash, which `empty_trash` removes later.
    """
    if not path.exists():
        return
    trash = path.with_name(f".trash-{uuid.uuid4().hex[:12]}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def empty_trash(directory: Path) -> None:
    """Delete what interrupted `discard_tree` calls left in `directory`."""
    for trash in directory.glob(".trash-*"):
        shutil.rmtree(trash, ignore_errors=True)


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """Raise OutputError unless `path` can be written as a file (its parent is created if need be).

    Called before any compute starts, so a typo in an output path costs nothing.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder of {what} {path}: {_reason(err)}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} exists and is not writable")
    _probe(parent, f"{what} {path}")
    return path


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create directory `path` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {path} is a file, not a directory") from None
    except OSError as err:
        raise OutputError(f"cannot create {what} {path}: {_reason(err)}") from None
    _probe(path, f"{what} {path}")
    return path


def _probe(directory: Path, what: str) -> None:
    """Create and delete a hidden file in `directory`: the one reliable writability test
    (read-only mounts and ACLs fool os.access)."""
    probe = directory / f".bioxlstm-probe-{uuid.uuid4().hex[:12]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write {what}: {_reason(err)}") from None


class RunLock:
    """An advisory lock (fcntl.flock) on `directory/.lock`, held while the object lives.

    The kernel drops it when the process dies, so a killed run never leaves a stale lock. The file
    holds the owner's pid and host, which a refused second process names.
    """

    FILE = ".lock"

    def __init__(self, directory: str | Path) -> None:
        import fcntl

        self.path = Path(directory) / self.FILE
        try:
            self._fh: IO[str] | None = open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
        except OSError as err:
            raise OutputError(f"cannot use run directory {directory}: {_reason(err)}") from None
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            self._fh = None
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(f"cannot lock run directory {directory}: {_reason(err)}") from None
            raise RunLockedError(f"run directory {directory} is in use by another process ({holder}); "
                                 "wait for it to finish or choose another --run-dir") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._fh.flush()

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
