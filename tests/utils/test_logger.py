"""Run logging: the TensorBoard events our synchronous writer produces are read back by
TensorBoard's own reader (an independent implementation of the record format), and
metrics.jsonl is the history, whole."""

import json

import pytest

from utils.logger import RunLogger


def test_events_read_back_by_tensorboard(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logger = RunLogger(tmp_path)
    values = {1: 0.5, 2: 0.25, 7: -1.5}
    for step, value in values.items():
        logger.scalar("train/loss", value, step)
    logger.scalar("val/acc", 0.75, 1)
    records = [{"epoch": 1, "val_acc": 0.75}, {"epoch": 2, "val_acc": 0.5}]
    logger.history(records)
    logger.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "val/acc"}
    assert {e.step: e.value for e in acc.Scalars("train/loss")} == values
    assert [(e.step, e.value) for e in acc.Scalars("val/acc")] == [(1, 0.75)]
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == records


def test_history_is_rewritten_not_appended(tmp_path):
    logger = RunLogger(tmp_path)
    logger.history([{"epoch": 1}, {"epoch": 2}])
    logger.history([{"epoch": 1}])  # a resumed run's history replaces what was there
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path, enabled=False)
    logger.scalar("a", 1.0, 1)
    logger.history([{"epoch": 1}])
    logger.close()
    assert list(tmp_path.iterdir()) == []
