"""Files that are either completely written or not there at all.

A writer puts the bytes into a temporary file next to the target (``.NAME.XXXXXX.tmp``),
flushes and fsyncs it, renames it over the target (atomic on POSIX within one folder) and
fsyncs the folder so that the rename itself survives a power cut. A process killed at any
moment therefore leaves either the previous file or the new one under the target name; at
worst a stale temporary stays behind, which readers never open (they only open the target)
and :func:`remove_stale_temporaries` deletes.

One writer per target: a run cleans the temporaries of its own files when it starts, so two
runs writing into the same folder at once are not supported (nor meaningful).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


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

    On any error (a full disk included) the temporary is removed, ``path`` is untouched and
    the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _MODE)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` for a UTF-8 text file."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
