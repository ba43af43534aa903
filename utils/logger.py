"""Per-run scalar logging: TensorBoard event files plus a JSON-lines copy that needs no viewer.

Events are written synchronously, in the calling thread, with tensorboardX's own record
writer (``EventsWriter``) rather than its ``SummaryWriter``: the latter writes from a
background thread and an ``atexit`` hook, so a full disk surfaced there as tracebacks from
other threads and at interpreter exit, long after the step that failed. Here a failed write
raises :class:`utils.atomic.WriteError` at once, naming the event file; what was written
before stays readable (each TensorBoard record carries its own CRC, and a truncated last
record is skipped by readers).

``metrics.jsonl`` (one JSON object per epoch) is rewritten whole and atomically from the
run's history each epoch, so a failed write never leaves half a line.

Without tensorboardX installed (a GPU image may lack it) a run warns once and writes no events.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable

from utils.atomic import WriteError, atomic_write_text


class RunLogger:
    """Writes scalars to TensorBoard and the epoch history to ``metrics.jsonl``.
    ``enabled=False`` makes every call a no-op (non-zero ranks)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self._events = None
        self.events_path: Path | None = None
        if enabled:
            try:
                from tensorboardX.event_file_writer import EventsWriter
            except ImportError:  # e.g. a GPU image that ships torch but not tensorboardX
                print("warning: tensorboardX is not installed, so this run writes no TensorBoard events "
                      "(metrics.jsonl has every epoch); pip install tensorboardX to get them", file=sys.stderr)
                return
            folder = self.out_dir / "tensorboard"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._events = EventsWriter(str(folder / "events"))
            except OSError as err:
                raise WriteError(folder, err, "TensorBoard events could not be started; nothing was lost") from None
            self.events_path = Path(self._events._file_name)

    def _failed(self, err: OSError) -> WriteError:
        self._events = None  # nothing more goes to a file that cannot be written
        return WriteError(self.events_path, err, "TensorBoard events up to the previous flush, checkpoints "
                          "and metrics.jsonl written before are intact")

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._events is None:
            return
        from tensorboardX.proto import event_pb2
        from tensorboardX.summary import scalar

        event = event_pb2.Event(summary=scalar(tag, float(value)), wall_time=time.time(), step=int(step))
        try:
            self._events.write_event(event)
        except OSError as err:
            raise self._failed(err) from None

    def flush(self) -> None:
        if self._events is None:
            return
        try:
            self._events.flush()
        except OSError as err:
            raise self._failed(err) from None

    def history(self, records: Iterable[dict]) -> None:
        """Rewrite ``metrics.jsonl`` with ``records`` (atomically) and flush the events."""
        if not self.enabled:
            return
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))
        self.flush()

    def close(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            try:
                events.close()
            except OSError:
                pass  # closing after a failure (the error was raised where it happened)
