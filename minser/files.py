"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written file.

Light on purpose (no torch): the feature cache (``python -m minser.data``) and the bench and tools
scripts write through it as well as training and checkpoints.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

from minser.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are then not guarded against a second writer
    fcntl = None

__all__ = ["FILE_MODE", "LOCK_NAME", "atomic_write", "check_output", "only_writer", "remove_temporaries", "write_json"]

# The mode open() gives a new file (0o666 less the umask); mkstemp's temporary files are 0o600, which
# would leave every result readable by its owner only. os.umask is the only portable way to read the
# umask and it sets it too, so it is read once, at import, rather than racing other threads per write.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
_SUFFIX = ".tmp"  # of the temporary files, ".<name>.<random>.tmp"
LOCK_NAME = ".minser.lock"  # the file :func:`only_writer` locks in a folder


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder, then rename.

    Readers see the old file or the complete new one, never a half-written file, even if the
    process dies mid-write. As with a plain ``open``, a symlink is written through (the file it points to
    is replaced, the link stays) and an existing file keeps its permissions; a new one gets those ``open``
    would give it (:data:`FILE_MODE`). A folder that cannot be written, or a write that fails (a full disk),
    raises ConfigError naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file to write")
    # Renamed over, a symlink would become a regular file and the file it shares stay old.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        file_mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:  # no such file yet (or a parent that is a file, refused below)
        file_mode = FILE_MODE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_SUFFIX, dir=target.parent)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():  # mkdir says only "File exists"
            raise ConfigError(f"cannot write {path}: {blocker} is a file, not a folder; choose another "
                              "folder") from exc
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a folder you can write to") from exc
    try:
        os.chmod(tmp, file_mode)
        with os.fdopen(fd, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk (ENOSPC), a file size limit (EFBIG), a quota
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; the old file, if any, is kept: free "
                              "space on its disk or choose another folder") from exc
        raise
    return path


def check_output(path: str | os.PathLike | None, option: str,
                 inputs: Iterable[tuple[str, str | os.PathLike]] = ()) -> None:
    """ConfigError naming ``option path`` when :func:`atomic_write` could not write ``path``: a folder, or a path under
    a file or in a folder this process cannot write in (missing folders are fine: they are created), or when it is
    the file of one of ``inputs``, ``(option, path)`` pairs of what the command reads, which writing would destroy.
    For commands that write their output only after minutes of work: checked with their other options."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; name a file to write")
    folder = next(p for p in target.absolute().parents if p.exists())  # the root always exists
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder; choose another folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {folder}; choose a folder you can write to")
    for name, source in inputs:
        if target.resolve() == Path(source).resolve():  # a link to the input, or another spelling of its path
            raise ConfigError(f"{option} {path} is {source}, which {name} reads: writing it would destroy it; "
                              "name another file")


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Atomically write ``value`` as indented JSON (keys in insertion order) to ``path``."""
    text = json.dumps(value, indent=2) + "\n"
    return atomic_write(path, lambda file: file.write(text), mode="w")


def remove_temporaries(folder: str | os.PathLike, names: Iterable[str], older_than: float | None = None) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` for the files ``names``, and return
    them: a process killed mid-write (SIGKILL, power loss) cannot remove its own. Only for a folder no
    other process is writing into, or with ``older_than`` (seconds since the file last changed), which
    spares the writes in progress."""
    folder, now = Path(folder), time.time()
    left = [p for name in names for p in folder.glob(f".{glob.escape(name)}.*{_SUFFIX}") if p.is_file()
            and (older_than is None or now - p.stat().st_mtime > older_than)]
    for path in left:
        path.unlink(missing_ok=True)
    return left


@contextlib.contextmanager
def only_writer(folder: str | os.PathLike, advice: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs, or raise ConfigError
    ending in ``advice`` at once when another process holds it: two writers of one folder would overwrite
    each other's files and delete each other's writes in progress as stale temporaries.

    The lock is ``fcntl.flock`` on ``folder/.minser.lock``: the system releases it when its holder dies,
    however it dies, so a killed run never leaves the folder locked. A folder this call created is
    removed again if the block leaves nothing in it but the lock file. Yields ``folder`` as a Path.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+")
    except OSError as exc:
        raise ConfigError(f"cannot write in {folder}: {exc.strerror or exc}; choose a folder you can write to") from exc
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(f"{folder} is in use by {holder}; {advice}") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}")  # named to the one refused
            handle.flush()
        try:
            yield folder
        finally:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                os.unlink(folder / LOCK_NAME)  # still holding the lock: nobody can be using the folder
                folder.rmdir()
