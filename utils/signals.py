"""Turning SIGTERM (preemption) and SIGINT (Ctrl-C) into a request to stop at a safe point.

A cluster scheduler that preempts a job sends SIGTERM and, after a grace period, SIGKILL.
While :class:`StopSignals` is active the first SIGTERM or SIGINT only records itself; the
training loop polls :attr:`StopSignals.signum` after each optimiser step, saves a checkpoint
and raises :class:`TrainingStopped`. A second signal gives up on the clean stop at once
(``KeyboardInterrupt`` for SIGINT, ``SystemExit(143)`` for SIGTERM); the atomic checkpoint
writer guarantees that even this cannot leave a half-written file.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + int(signum)


class TrainingStopped(Exception):
    """Training stopped cleanly on a signal after saving a checkpoint.

    ``exit_code`` is 143 for SIGTERM and 130 for SIGINT; the message says where it stopped
    and how to continue."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = exit_code(signum)


class StopSignals:
    """Context manager: SIGTERM/SIGINT set :attr:`signum` instead of ending the process.

    Handlers can only be installed from the main thread; elsewhere this is a no-op and
    signals keep their usual effect. The previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        # Second signal: the user (or scheduler) does not want to wait for the clean stop.
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(exit_code(signum))

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
