"""Files that are either completely written or not there at all.

A writer puts the bytes into a temporary file next to the target (``.NAME.XXXXXX.tmp``),
flushes and fsyncs it, renames it over the target (atomic on POSIX within one folder) and
fsyncs the folder so that the rename itself survives a power cut. A process killed at any
moment therefore leaves either the previous file or the new one under the target name; at
worst a stale temporary stays behind, which readers never open (they only open the target)
and :func:`remove_stale_temporaries` deletes.

One writer per target: a run cleans the temporaries of its own files when it starts, so two
runs writing into the same folder at once are not supported (nor meaningful).

A write that fails (a full disk, a lost mount, a quota) raises :class:`WriteError`: an
``OSError`` whose message is one line naming the file and the reason, and saying that the
previous file is unchanged. Serialisers that wrap the ``OSError`` of a failed ``write()`` in
their own exception (``torch.save``'s zip writer raises ``RuntimeError: [enforce fail at
inline_container.cc] ... unexpected pos``) are seen through: the file object handed to them
remembers the first ``OSError`` it raised.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class WriteError(OSError):
    """Writing a file failed; the file that was there before (if any) is unchanged.

    ``str()`` is one line: ``PATH: could not write (REASON); the previous NAME, if any, is
    unchanged``. ``errno`` / ``strerror`` / ``filename`` are those of the failure."""

    def __init__(self, path: str | os.PathLike, err: OSError, what: str = "") -> None:
        path = Path(path)
        reason = err.strerror or str(err) or type(err).__name__
        super().__init__(err.errno, reason, str(path))
        self.path = path
        self.what = what or f"the previous {path.name}, if any, is unchanged"

    def __str__(self) -> str:
        return f"{self.path}: could not write ({self.strerror}); {self.what}"


#: errno values that mean "this output cannot be written here" rather than a bug.
WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG", "EACCES", "EPERM")
    if hasattr(errno, name)
)


class _Recording:
    """The temporary file as handed to a serialiser: ``write`` and ``flush`` pass through
    and remember the first ``OSError``, so a serialiser that swallows or wraps it cannot hide
    it; everything else (``tell``, ``seek``, ``fileno``, ...) is the file's own."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def _note(self, err: OSError) -> None:
        if self.error is None:
            self.error = err

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self._note(err)
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as err:
            self._note(err)
            raise

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def _file_mode() -> int:
    # mkstemp creates 0600 files; give the published file the mode open() would (0666 & ~umask).
    # Reading the umask means setting it; this runs once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


def _prefix(path: Path) -> str:
    return f".{path.name}."


def temporaries(path: str | os.PathLike) -> list[Path]:
    """Leftover temporaries of writers of ``path`` (``.NAME.*.tmp`` in its folder), sorted."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f"{_prefix(path)}*.tmp"))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer of ``path`` left behind; returns what was removed.

    Call it only when no other process is writing ``path`` (a run does, as it starts)."""
    removed = []
    for tmp in temporaries(path):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def fsync_dir(folder: Path) -> None:
    """fsync a folder so that a rename or a new entry in it survives a power cut (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file, then publish it as ``path`` in one rename.

    On any error the temporary is removed and ``path`` is untouched. A failed write of the
    file itself (a full disk, even when the serialiser wraps the ``OSError`` in another
    exception) raises :class:`WriteError`; other errors propagate as they are."""
    path = Path(path)
    recording: _Recording | None = None
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _MODE)
            recording = _Recording(fh)
            write(recording)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = recording.error if recording is not None and recording.error is not None else err
        if isinstance(cause, WriteError):
            raise
        if isinstance(cause, OSError) and (cause is not err or cause.errno in WRITE_ERRNOS):
            raise WriteError(path, cause) from err
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` for a UTF-8 text file."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
