"""One run per output folder: an advisory lock that dies with its process.

A training run holds an exclusive POSIX record lock (``fcntl.lockf``) on ``<folder>/.lock``
for its whole life. A second run on the same folder (the same command started twice, a
``--resume`` while the first run is still going) is refused in one line instead of both
writing the same checkpoints. The kernel drops the lock when the holder exits in any way,
``kill -9`` included, so a stale lock cannot block anyone (a killed run leaves the empty file,
which the next run takes over). A run that ends normally removes the file while it still holds
the lock. A record lock belongs to the process, not to the
open file: DataLoader workers forked from the run do not inherit it (an ``flock`` would live
on in them after the run released it), and it does not guard a folder against a second run
inside the same Python process.

Holding the lock is also what makes it safe to delete the temporaries a killed writer left
behind (:func:`utils.atomic.remove_stale_temporaries`): nobody else can be writing them.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking, a documented limitation
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock."""


class RunLock:
    """``with RunLock(folder):`` or ``acquire()`` / ``release()``; re-acquiring is a no-op."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None or fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held elsewhere
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise FolderBusy(
                f"{self.folder}: another run is using this folder{who}; wait for it to finish or stop it, "
                "or choose another --out"
            ) from None
        except OSError:
            os.close(fd)  # a file system without locks: run unlocked, as before
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # still ours: nobody can be using it
            except OSError:
                pass
            os.close(fd)  # closing drops the lock

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
