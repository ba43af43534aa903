"""Per-run scalar logging: TensorBoard event files plus a JSON-lines copy that needs no viewer."""

from __future__ import annotations

import json
from pathlib import Path


class RunLogger:
    """Writes scalars to TensorBoard (tensorboardX) and one JSON object per epoch to
    ``metrics.jsonl``. ``enabled=False`` makes every call a no-op (non-zero ranks)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(self.out_dir / "tensorboard"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
