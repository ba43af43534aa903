"""The encoders stage: a checkpoint becomes its encoder (only ``state["model"]`` is read),
a random init is reproducible from its seed, and unusable checkpoints are one line."""

import pytest
import torch

from evaluation.encoders import file_sha256, load_encoder, random_encoder
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

X = torch.rand(3, 100, 4, generator=torch.Generator().manual_seed(0))


def features(enc):
    with torch.no_grad():
        return enc.model(torch.device("cpu"))(X, out_feat_keys=enc.layer)


def test_only_the_model_entry_is_read(runs, tmp_path):
    state = load_checkpoint(runs["tcn"])
    # modules a training method owns (a projection head, a momentum target) sit beside it
    state["projector"] = {"weight": torch.randn(8, 4096)}
    state["ema_model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    save_checkpoint(state, tmp_path / "with_heads.pt")
    plain, extended = load_encoder(runs["tcn"]), load_encoder(tmp_path / "with_heads.pt")
    assert torch.equal(features(plain), features(extended))
    assert extended.weights_id == file_sha256(tmp_path / "with_heads.pt") != plain.weights_id
    assert (extended.layer, extended.epoch, extended.label) == ("fc", 1, "tcn_rotation (epoch 1)")


def test_random_init_is_the_seeds(runs):
    enc = load_encoder(runs["tcn"])
    a, b, c = random_encoder(enc, 1), random_encoder(enc, 1), random_encoder(enc, 2)
    assert a.weights_id == b.weights_id != c.weights_id
    assert torch.equal(features(a), features(b)) and not torch.equal(features(a), features(c))
    assert not torch.equal(features(a), features(enc))


def test_unusable_checkpoints_are_one_line(runs, tmp_path):
    state = load_checkpoint(runs["tcn"])
    state["model"] = {k: v[..., :1] if v.ndim else v for k, v in state["model"].items()}
    save_checkpoint(state, tmp_path / "shrunk.pt")
    with pytest.raises(CheckpointError, match="weights do not fit model 'tcn'") as err:
        load_encoder(tmp_path / "shrunk.pt")
    assert len(str(err.value).splitlines()) == 1
    state = load_checkpoint(runs["tcn"])
    state["config"]["model"]["name"] = "no_such_model"
    save_checkpoint(state, tmp_path / "foreign.pt")
    with pytest.raises(Exception, match="no_such_model"):
        load_encoder(tmp_path / "foreign.pt")
