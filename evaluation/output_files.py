"""How the evaluation writes files: whole or not at all, one line when the disk is full.

Every file an evaluation writes (cached features, results JSON and Markdown, pictures, the
results index) is written to a temporary file beside its target and renamed over it
(:mod:`utils.atomic`), so a crash or a full disk leaves the previous file, never half a
file. A write that fails raises :class:`OutputWriteError`, whose message is one line naming
the file and saying that what was written before it is intact; the command line prints it
and exits with status 2.

Feature files are large and written over minutes, so their temporaries are *locked*
(:class:`LockedTemporary`, an exclusive ``flock`` held until the rename). A temporary whose
lock nobody holds and that has not changed for :data:`STALE_AFTER_S` seconds belongs to a
writer that was killed; :func:`remove_stale_temporaries_in` deletes those and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import BinaryIO, Callable

from utils.atomic import WriteError, atomic_write, fsync_dir, remove_stale_temporaries

#: A temporary untouched for this long, with no writer holding its lock, is stale.
STALE_AFTER_S = 60.0
#: Temporaries of feature-cache files: ``.NAME.npy.XXXX.tmp`` / ``.NAME.json.XXXX.tmp`` (this
#: module and :mod:`utils.atomic`), and ``NAME.npy.tmp`` (writers before the locks).
CACHE_TEMPORARIES = (".*.npy.*.tmp", ".*.json.*.tmp", "*.npy.tmp")


class OutputWriteError(WriteError):
    """A file of the evaluation could not be written; the message is one line. A
    :class:`utils.atomic.WriteError`, so the command lines report it like every other
    failed write (one line, exit status 2)."""

    def __init__(self, path: str | os.PathLike, err: OSError) -> None:
        super().__init__(path, err, "the files written before it are intact")

    def __str__(self) -> str:
        return f"could not write {self.path} ({self.strerror}); {self.what}"


def write_output(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(fh)`` into a temporary file, renamed to ``path``; leftovers of an earlier
    writer of ``path`` are removed first. Raises :class:`OutputWriteError`."""
    path = Path(path)
    try:
        remove_stale_temporaries(path)
        atomic_write(path, write)
    except OSError as err:
        raise OutputWriteError(path, err) from None
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_output` for UTF-8 text."""
    return write_output(path, lambda fh: fh.write(text.encode("utf-8")))


class LockedTemporary:
    """A temporary file ``.NAME.XXXXXXXX.tmp`` beside ``path``, locked while it is written,
    that becomes ``path`` in one rename (:meth:`commit`) or disappears (:meth:`abort`).

    Raises the ``OSError`` of a failed create, write or rename (after removing itself)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fh: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            os.replace(self.tmp, self.path)  # still locked: no cleaner can take it meanwhile
        except BaseException:
            self.abort()
            raise
        self.fh.close()
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        if not self.fh.closed:
            try:
                self.fh.close()
            except OSError:
                pass  # a full disk may fail the final flush; the file goes anyway
        self.tmp.unlink(missing_ok=True)


def write_locked(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` to ``path`` through a :class:`LockedTemporary`. Raises :class:`OutputWriteError`."""
    try:
        out = LockedTemporary(path)
        try:
            out.fh.write(data)
        except BaseException:
            out.abort()
            raise
        return out.commit()
    except OSError as err:
        raise OutputWriteError(path, err) from None


def remove_stale_temporaries_in(folder: str | os.PathLike, patterns: tuple[str, ...] = CACHE_TEMPORARIES,
                                min_age_s: float = STALE_AFTER_S) -> list[tuple[Path, int]]:
    """Delete the temporaries in ``folder`` matching ``patterns`` that no writer holds (their
    lock is free) and that have not changed for ``min_age_s`` seconds. Returns (path, bytes)
    of each removed file."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    removed = []
    now = time.time()
    for tmp in found:
        try:
            st = tmp.stat()
            if now - st.st_mtime < min_age_s:
                continue
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink()
            removed.append((tmp, st.st_size))
        except OSError:  # locked by a live writer, or already gone
            pass
        finally:
            os.close(fd)
    return removed
