"""``best.pt`` is always the checkpoint of the best epoch ``last.pt`` records, whatever instant
a run is killed at.

A save publishes files by renaming a finished temporary over the target
(:func:`utils.atomic.atomic_write`), so the checkpoints on disk change only at a rename.
Killing the run before the first rename of a checkpoint and just after each one therefore
visits every state a kill can leave behind (a kill just before rename k leaves what a kill
just after rename k - 1 does). Each kill is simulated in-process (an exception
that nothing catches, raised from ``os.replace``) and the run is then resumed to the end; a
real ``SIGKILL`` to a training process checks the one state that used to go wrong (after the
rename of one checkpoint and before the other).

Validation accuracies are scripted per epoch (0.3, 0.5, 0.4, 0.6: improvements at epochs 1,
2 and 4, none at 3) so that the saves are the same on every CPU; the training itself is real.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from config import load_config
from engine.trainer import Trainer
from tests.common import ROOT
from utils import atomic
from utils.checkpoint import load_checkpoint

ACCURACY = {1: 0.3, 2: 0.5, 3: 0.4, 4: 0.6}
EPOCHS = len(ACCURACY)
SMALL = {
    "data.train_per_class": 2,
    "data.val_per_class": 1,
    "data.num_classes": 4,
    "train.batch_size": 4,
    "train.epochs": EPOCHS,
    "train.device": "cpu",
    "train.workers": 0,
    "model.params": {"embed_dim": 16, "channels": 4, "windows": [3, 5]},
}


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the trainer catches it."""


def scripted_validation(monkeypatch):
    def validate(self, stop=None):
        return {"loss": 1.0, "acc": ACCURACY[len(self.history) + 1]}

    monkeypatch.setattr(Trainer, "validate", validate)


def trainer(out: Path, resume: bool = False) -> Trainer:
    return Trainer(load_config("tcn_rotation", {**SMALL, "train.out": str(out)}), resume=resume, progress=False)


def checkpoint_renames(monkeypatch, kill_at: int | None = None, after: bool = False) -> list[str]:
    """Count the renames that publish a checkpoint; raise :class:`Killed` just before (or just
    after, with ``after``) the ``kill_at``-th (from 1). Returns the names renamed so far."""
    real_replace = os.replace
    seen: list[str] = []

    def replace(src, dst):
        name = Path(dst).name
        if name.endswith(".pt"):
            seen.append(name)
            if len(seen) == kill_at and not after:
                raise Killed(f"before publishing {name}")
        real_replace(src, dst)
        if name.endswith(".pt") and len(seen) == kill_at and after:
            raise Killed(f"after publishing {name}")

    monkeypatch.setattr(atomic.os, "replace", replace)
    return seen


def assert_consistent(run: Path) -> None:
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    recorded = max(last["history"], key=lambda r: r["val_acc"])
    assert last["best_epoch"] == recorded["epoch"] == best["epoch"] == best["best_epoch"]
    assert last["best_metric"] == best["best_metric"] == "val_acc" and last["best_mode"] == "max"
    assert last["best_value"] == recorded["val_acc"] == best["best_value"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run: its best.pt (epoch 4) and the names of every checkpoint rename."""
    mp = pytest.MonkeyPatch()
    try:
        scripted_validation(mp)
        out = tmp_path_factory.mktemp("straight")
        renames = checkpoint_renames(mp)
        trainer(out).fit()
    finally:
        mp.undo()
    run = out / "tcn_rotation"
    return load_checkpoint(run / "best.pt"), list(renames)


def test_saves_write_best_before_last(straight):
    best, renames = straight
    # improvements at epochs 1, 2 and 4: best.pt goes first each time
    assert renames == ["best.pt", "last.pt", "best.pt", "last.pt", "last.pt", "best.pt", "last.pt"]
    assert best["epoch"] == best["best_epoch"] == 4


@pytest.mark.parametrize("kill_at, after", [(1, False)] + [(k, True) for k in range(1, 8)],
                         ids=["before-1"] + [f"after-{k}" for k in range(1, 8)])
def test_kill_at_every_rename_then_resume(tmp_path, monkeypatch, straight, kill_at, after):
    scripted_validation(monkeypatch)
    checkpoint_renames(monkeypatch, kill_at, after)
    with pytest.raises(Killed):
        trainer(tmp_path).fit()
    run = tmp_path / "tcn_rotation"
    if (run / "last.pt").exists() and (run / "best.pt").exists():
        # at any instant best.pt is the best epoch so far, never one improvement behind
        last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
        assert best["epoch"] >= last["best_epoch"]
    monkeypatch.undo()
    scripted_validation(monkeypatch)
    if not (run / "last.pt").exists() and not (run / "best.pt").exists():
        trainer(tmp_path).fit()  # killed before the first checkpoint: start again
    else:
        trainer(tmp_path, resume=True).fit()
    assert_consistent(run)
    reference, _ = straight
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == reference["epoch"]
    for key, value in reference["model"].items():
        assert torch.equal(best["model"][key], value), key  # exact resume: the very same weights


def test_sigkill_between_the_two_renames(tmp_path):
    """A real SIGKILL right after best.pt of epoch 2 is published, before last.pt: resume
    continues from best.pt, completes last.pt, and the pair ends consistent."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from config import load_config
        from engine.trainer import Trainer
        from utils import atomic
        ACCURACY = {ACCURACY!r}
        Trainer.validate = lambda self, stop=None: {{"loss": 1.0, "acc": ACCURACY[len(self.history) + 1]}}
        real_replace, count = os.replace, [0]
        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name == "best.pt":
                count[0] += 1
                if count[0] == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace
        cfg = load_config("tcn_rotation", {{**{SMALL!r}, "train.out": sys.argv[1]}})
        Trainer(cfg, progress=False).fit()
    """)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run = tmp_path / "tcn_rotation"
    assert load_checkpoint(run / "best.pt")["epoch"] == 2 and load_checkpoint(run / "last.pt")["epoch"] == 1
    monkeypatch = pytest.MonkeyPatch()
    try:
        scripted_validation(monkeypatch)
        resumed = trainer(tmp_path, resume=True)
        assert resumed.start_epoch == 3  # from best.pt, not from last.pt's epoch 1
        resumed.fit()
    finally:
        monkeypatch.undo()
    assert_consistent(run)
    assert load_checkpoint(run / "best.pt")["epoch"] == 4
