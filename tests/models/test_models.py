"""Tests for models/: shapes, named read-out, padding handling, build_model, trainability."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import (
    MODELS,
    AlexNetBN,
    DilatedTCN,
    SketchResNet,
    TCNPaper,
    TCNReleased,
    build_model,
)
from models.dilated_tcn import MaskedBatchNorm1d, receptive_field


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def alexnet() -> AlexNetBN:
    torch.manual_seed(0)
    return AlexNetBN(num_classes=4).eval()


def _sketch(valid_rows: int, length: int, batch: int = 1) -> torch.Tensor:
    """Random stroke batch (batch, length, 4): `valid_rows` real points, then zero padding."""
    x = torch.zeros(batch, length, 4)
    x[:, :valid_rows, :2] = torch.randn(batch, valid_rows, 2)
    lifted = torch.rand(batch, valid_rows) < 0.2
    x[:, :valid_rows, 2] = (~lifted).float()
    x[:, :valid_rows, 3] = lifted.float()
    return x


# ---------------------------------------------------------------------------- registry
def test_registry_keys_and_class_attributes() -> None:
    assert list(MODELS) == ["alexnet", "resnet", "tcn", "tcn_paper", "tcn_dilated", "dual"]
    expected = {
        "alexnet": ("raster", "fc_block"),
        "resnet": ("raster", "pool"),
        "tcn": ("stroke", "fc"),
        "tcn_paper": ("stroke", "fc"),
        "tcn_dilated": ("stroke", "fc"),
    }
    for name, cls in MODELS.items():
        if name == "dual":  # a raster and a stroke model: its names come from its branches
            cls = build_model("dual", 2, raster="resnet", stroke="tcn")
            expected[name] = ("paired", "raster.pool")
        assert (cls.modality, cls.default_feature) == expected[name], name
        assert cls.feature_names[-1] == ("stroke.classifier" if name == "dual" else "classifier"), name
        assert cls.default_feature in cls.feature_names, name
        assert len(set(cls.feature_names)) == len(cls.feature_names), name


def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; known: alexnet, resnet, tcn, tcn_paper, tcn_dilated, dual"):
        build_model("vgg", 4)


def test_build_model_unknown_param_names_model_and_param() -> None:
    with pytest.raises(ValueError, match=r"'tcn'.*'depth'") as info:
        build_model("tcn", 4, depth=3)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "params", "bad"),
    [
        ("resnet", {"widths": (64, 128), "blocks": (2,)}, "widths"),
        ("resnet", {"stem": "huge"}, "stem"),
        ("resnet", {"widths": 5}, "widths"),
        ("tcn", {"windows": ()}, "windows"),
        ("tcn_paper", {"embed_dim": 0}, "embed_dim"),
        ("tcn_dilated", {"kernel_size": 4}, "kernel_size"),
        ("alexnet", {"in_channels": True}, "in_channels"),
    ],
)
def test_build_model_bad_values(name: str, params: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=rf"'{name}'.*{bad}"):
        build_model(name, 4, **params)


def test_build_model_passes_params() -> None:
    model = build_model("resnet", 7, widths=(8, 16), blocks=(1, 1), stem="small")
    assert isinstance(model, SketchResNet)
    assert model.classifier.out_features == 7
    assert model.feature_names == ("stem", "layer1", "layer2", "pool", "classifier")


# ---------------------------------------------------------------------------- read-out
def test_unknown_and_empty_feature_keys() -> None:
    model = TCNReleased(3, embed_dim=16).eval()
    x = _sketch(20, 30, batch=2)
    with pytest.raises(ValueError, match=r"unknown feature 'conv9'; valid: branches, fc, classifier"):
        model(x, "conv9")
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        model(x, ["fc", "nope"])
    with pytest.raises(ValueError, match="empty"):
        model(x, [])


def test_keys_none_str_list() -> None:
    model = TCNReleased(3, embed_dim=16).eval()
    x = _sketch(20, 30, batch=2)
    with torch.no_grad():
        logits = model(x)
        fc = model(x, "fc")
        both = model(x, ("classifier", "branches", "fc"))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    assert isinstance(fc, torch.Tensor) and fc.shape == (2, 16)
    assert isinstance(both, list) and [t.shape for t in both] == [(2, 3), (2, 320), (2, 16)]
    assert torch.equal(both[0], logits)
    assert torch.equal(both[2], fc)
    assert torch.equal(model.classifier(fc), logits)


def test_forward_stops_after_last_requested_feature() -> None:
    model = AlexNetBN(4).eval()
    calls: list[str] = []
    for name in ("conv1", "conv2", "fc_block", "classifier"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64), "conv1")
        assert calls == ["conv1"]
        calls.clear()
        model(torch.rand(1, 3, 64, 64), ["conv2", "conv1"])
        assert calls == ["conv1", "conv2"]


# ---------------------------------------------------------------------------- AlexNet
def test_alexnet_shapes_at_224(alexnet: AlexNetBN) -> None:
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, pool5, conv1, fc = alexnet(x, ["classifier", "pool5", "conv1", "fc_block"])
    assert conv1.shape == (2, 64, 55, 55)
    assert pool5.shape == (2, 256, 6, 6)
    assert fc.shape == (2, 4096)
    assert logits.shape == (2, 4)


def test_alexnet_one_channel_equals_three_channel_repeat(alexnet: AlexNetBN) -> None:
    grey = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        a = alexnet(grey, "fc_block")
        b = alexnet(grey.repeat(1, 3, 1, 1), "fc_block")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="2 channels"):
        alexnet(torch.rand(1, 2, 224, 224))


def test_alexnet_adaptive_pool_is_identity_at_224(alexnet: AlexNetBN) -> None:
    plain = copy.deepcopy(alexnet)
    plain.resize = nn.Identity()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref = plain(x, ["fc_block", "classifier"])
        got = alexnet(x, ["fc_block", "classifier"])
    assert torch.equal(ref[0], got[0])
    assert torch.equal(ref[1], got[1])
    # And the resize is really in the path: at 64 px pool5 is 1x1, which fc_block can't take raw.
    with torch.no_grad():
        assert alexnet(torch.rand(1, 3, 64, 64), "pool5").shape == (1, 256, 1, 1)
        with pytest.raises(RuntimeError):
            plain(torch.rand(1, 3, 64, 64))


def test_alexnet_small_inputs(alexnet: AlexNetBN) -> None:
    with torch.no_grad():
        out = alexnet(torch.rand(2, 1, 64, 64), ["fc_block", "classifier"])
        assert [t.shape for t in out] == [(2, 4096), (2, 4)]
        assert alexnet(torch.rand(1, 3, 63, 63)).shape == (1, 4)  # smallest side accepted
    with pytest.raises(ValueError, match=">= 63"):
        alexnet(torch.rand(1, 3, 62, 80))


def test_alexnet_parameter_count() -> None:
    # Convs have no bias (BN follows); each BN has 2 * channels parameters.
    conv1 = 64 * 3 * 11 * 11 + 2 * 64  # 23232 + 128
    conv2 = 192 * 64 * 5 * 5 + 2 * 192  # 307200 + 384
    conv3 = 384 * 192 * 3 * 3 + 2 * 384  # 663552 + 768
    conv4 = 256 * 384 * 3 * 3 + 2 * 256  # 884736 + 512
    conv5 = 256 * 256 * 3 * 3 + 2 * 256  # 589824 + 512
    fc1 = 256 * 6 * 6 * 4096 + 2 * 4096  # 37748736 + 8192 (no Linear bias)
    fc2 = 4096 * 4096 + 2 * 4096  # 16777216 + 8192
    classifier = 4096 * 4 + 4  # 16388
    expected = conv1 + conv2 + conv3 + conv4 + conv5 + fc1 + fc2 + classifier
    assert expected == 57_029_572
    model = AlexNetBN(4)
    assert sum(p.numel() for p in model.parameters()) == expected


# ---------------------------------------------------------------------------- ResNet
def test_resnet_imagenet_stem_shapes() -> None:
    model = SketchResNet(10).eval()
    assert model.feature_names == ("stem", "layer1", "layer2", "layer3", "layer4", "pool", "classifier")
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 224, 224), list(model.feature_names))
    shapes = [tuple(f.shape) for f in feats]
    assert shapes == [
        (2, 64, 56, 56), (2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 512, 7, 7), (2, 512), (2, 10),
    ]


def test_resnet_small_stem_shapes_and_custom_depth() -> None:
    model = SketchResNet(5, stem="small").eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 1, 64, 64), ["stem", "layer4", "pool"])
    assert [tuple(f.shape) for f in feats] == [(2, 64, 64, 64), (2, 512, 8, 8), (2, 512)]

    small = SketchResNet(5, widths=(8, 16, 32), blocks=(1, 2, 1), stem="small").eval()
    assert small.feature_names == ("stem", "layer1", "layer2", "layer3", "pool", "classifier")
    assert len(small.layer2) == 2
    with torch.no_grad():
        assert small(torch.rand(2, 3, 32, 32), "layer3").shape == (2, 32, 8, 8)


def test_resnet_blocks_start_as_identity() -> None:
    # Zero-init of each branch's last BN gamma: at init an identity-shortcut block returns
    # relu(x) = x (x >= 0 after the stem's ReLU), so layer1 equals the stem output.
    model = SketchResNet(3, stem="small").eval()
    with torch.no_grad():
        stem, layer1 = model(torch.rand(2, 3, 32, 32), ["stem", "layer1"])
    assert torch.equal(stem, layer1)


# ---------------------------------------------------------------------------- TCN (released)
def test_tcn_released_shapes() -> None:
    model = TCNReleased(6).eval()
    with torch.no_grad():
        branches, fc, logits = model(_sketch(60, 100, batch=3), ["branches", "fc", "classifier"])
    assert branches.shape == (3, 320)
    assert fc.shape == (3, 4096)
    assert logits.shape == (3, 6)
    with pytest.raises(ValueError, match=r"\(B, L, 4\)"):
        model(torch.zeros(3, 100, 5))


def _hand_tcn(mask_padding: bool) -> TCNReleased:
    model = TCNReleased(2, windows=(2,), channels=1, embed_dim=4, mask_padding=mask_padding).eval()
    with torch.no_grad():
        conv = model.branches[0]
        conv.weight.zero_()
        conv.weight[0, 0, :, 0] = -1.0  # both taps read the x column with weight -1
        conv.bias.fill_(4.0)
    return model


def test_tcn_released_padding_handcomputed() -> None:
    # Rows: r0 = (x=3, p1=1), r1 = (x=1, p1=1), r2 = padding. With the conv's one-row zero
    # padding each side, the 4 output steps see (pad, r0), (r0, r1), (r1, r2), (r2, pad):
    #   4 - 3 = 1,  4 - 3 - 1 = 0,  4 - 1 = 3,  4 - 0 = 4   (all >= 0, so ReLU keeps them).
    # Released: max over all steps = 4, set by a step that sees no real point.
    # Masked: steps whose window holds at least one valid row are the first three -> 3
    # (from the step that mixes r1 with a padding row).
    x = torch.tensor([[[3.0, 0, 1, 0], [1.0, 0, 1, 0], [0.0, 0, 0, 0]]])
    with torch.no_grad():
        released = _hand_tcn(mask_padding=False)(x, "branches")
        masked = _hand_tcn(mask_padding=True)(x, "branches")
    assert released.item() == 4.0
    assert masked.item() == 3.0


def test_tcn_released_mask_matches_definition() -> None:
    # Brute force: output step t of window w reads input rows t-w+1 .. t; keep t if any of
    # those rows (inside 0 .. L-1) is valid. Includes a padding row inside the sketch.
    model = TCNReleased(3, windows=(2, 5), channels=4, embed_dim=8, mask_padding=True).eval()
    with torch.no_grad():
        for conv in model.branches:
            conv.bias.normal_()  # non-zero, so steps over padding are not simply 0
    x = torch.cat([_sketch(3, 12), _sketch(8, 12)])
    x[1, 4] = 0.0
    valid = (x[..., 2] + x[..., 3]) > 0
    length = x.shape[1]
    expected = []
    with torch.no_grad():
        for w, conv in zip(model.windows, model.branches):
            h = F.relu(conv(x.unsqueeze(1))).squeeze(3)  # (B, C, L + w - 1)
            rows = []
            for b in range(x.shape[0]):
                kept = [t for t in range(length + w - 1) if any(valid[b, r] for r in range(max(0, t - w + 1), min(length, t + 1)))]
                rows.append(h[b][:, kept].amax(dim=1))
            expected.append(torch.stack(rows))
        got = model(x, "branches")
    torch.testing.assert_close(got, torch.cat(expected, dim=1), rtol=0, atol=0)


def test_tcn_released_masked_ignores_padding_length() -> None:
    model = TCNReleased(3, embed_dim=16, mask_padding=True).eval()
    short = _sketch(40, 60, batch=2)
    long = torch.cat([short, torch.zeros(2, 40, 4)], dim=1)
    with torch.no_grad():
        a = model(short, "branches")
        b = model(long, "branches")
        empty = model(torch.zeros(1, 60, 4), "branches")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(empty, torch.zeros(1, 320))


# ---------------------------------------------------------------------------- TCN (paper)
def test_tcn_paper_shapes_and_min_length() -> None:
    model = TCNPaper(5).eval()
    with torch.no_grad():
        branches, fc, logits = model(_sketch(80, 100, batch=2), ["branches", "fc", "classifier"])
        assert model(_sketch(50, 77, batch=2)).shape == (2, 5)  # 4 * 19 + 1: the shortest allowed
    assert branches.shape == (2, 1280)
    assert fc.shape == (2, 4096)
    assert logits.shape == (2, 5)
    with pytest.raises(ValueError, match="L >= 77"):
        model(_sketch(50, 76, batch=2))
    # The bound follows the parameters: 2 layers, windows up to 5 -> 2 * 4 + 1 = 9.
    small = TCNPaper(3, windows=(3, 5), widths=(4, 8), embed_dim=8).eval()
    with torch.no_grad():
        assert small(_sketch(9, 9, batch=2), "branches").shape == (2, 16)
    with pytest.raises(ValueError, match="L >= 9"):
        small(_sketch(8, 8, batch=2))


# ---------------------------------------------------------------------------- Dilated TCN
def _as_if_trained(model: nn.Module) -> nn.Module:
    """Give biases and norm layers non-default values, as training would.

    At init every bias is 0 and the running statistics are (0, 1), which would hide a
    padding step leaking through a bias or a batch-norm shift.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (MaskedBatchNorm1d, nn.BatchNorm1d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.5)
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, (nn.Conv1d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0.0, 0.5)
    return model


def test_dilated_tcn_shapes_and_names() -> None:
    model = DilatedTCN(4, channels=16, num_blocks=3, embed_dim=32).eval()
    assert model.feature_names == ("stem", "block1", "block2", "block3", "pool", "fc", "classifier")
    assert [b.conv1.dilation[0] for b in (model.block1, model.block2, model.block3)] == [1, 2, 4]
    with torch.no_grad():
        feats = model(_sketch(70, 100, batch=2), list(model.feature_names))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 100)] * 4 + [(2, 32), (2, 32), (2, 4)]
    assert DilatedTCN.feature_names == ("stem", *(f"block{i}" for i in range(1, 7)), "pool", "fc", "classifier")


def test_dilated_tcn_pool_is_masked_max_and_mean() -> None:
    model = _as_if_trained(DilatedTCN(4, channels=8, num_blocks=2, embed_dim=16)).eval()
    x = _sketch(30, 50, batch=1)
    with torch.no_grad():
        block, pool = model(x, ["block2", "pool"])
    assert torch.equal(block[..., 30:], torch.zeros(1, 8, 20))  # padding steps zeroed
    valid = block[0, :, :30]
    torch.testing.assert_close(pool[0, :8], valid.amax(dim=1))
    torch.testing.assert_close(pool[0, 8:], valid.mean(dim=1))


@pytest.mark.parametrize("train", [False, True])
def test_dilated_tcn_ignores_padding_length(train: bool) -> None:
    model = _as_if_trained(DilatedTCN(5))  # default size: receptive field 253 > 100 steps
    model.train(train)
    full = _sketch(100, 100, batch=2)  # no padding at all: the worst case for leakage
    short = _sketch(70, 100, batch=2)
    x100 = torch.cat([full, short])
    x120 = torch.cat([x100, torch.zeros(4, 20, 4)], dim=1)
    with torch.no_grad():
        a = model(x100, ["block6", "pool", "classifier"])
        b = model(x120, ["block6", "pool", "classifier"])
    tol = {"rtol": 1e-4, "atol": 1e-5} if train else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(a[0], b[0][..., :100], **tol)
    torch.testing.assert_close(a[1], b[1], **tol)
    torch.testing.assert_close(a[2], b[2], **tol)


def test_dilated_tcn_empty_sketch_is_finite() -> None:
    model = DilatedTCN(3, channels=16, num_blocks=3, embed_dim=32)
    x = torch.cat([_sketch(40, 100, batch=2), torch.zeros(1, 100, 4)])
    logits = model(x)  # train mode: batch statistics with an empty member
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        pool, logits = model(torch.zeros(2, 100, 4), ["pool", "classifier"])
    assert torch.equal(pool, torch.zeros(2, 32))
    assert torch.isfinite(logits).all()


def test_dilated_tcn_receptive_field_matches_gradient() -> None:
    assert receptive_field(3, 6) == 253
    model = DilatedTCN(2, channels=16, num_blocks=3, kernel_size=3, embed_dim=8).eval()
    x = _sketch(64, 64, batch=1).requires_grad_(True)
    model(x, "block3")[0, :, 32].sum().backward()
    touched = (x.grad[0].abs().sum(dim=1) > 0).nonzero().flatten()
    rf = receptive_field(3, 3)  # 1 + 2 * 2 * 7 = 29
    assert rf == 29
    assert touched.tolist() == list(range(32 - rf // 2, 32 + rf // 2 + 1))


def test_masked_batchnorm_matches_batchnorm_on_valid_steps() -> None:
    x = torch.randn(3, 5, 7)
    mask = torch.rand(3, 7) < 0.6
    ours = MaskedBatchNorm1d(5)
    ref = nn.BatchNorm1d(5)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(5) + 0.5)
        ours.bias.copy_(torch.randn(5))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    y = ours(x, mask)
    valid = x.permute(0, 2, 1)[mask]  # (n, C): only the valid steps
    torch.testing.assert_close(y.permute(0, 2, 1)[mask], ref(valid))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    # No valid step: running statistics are used and not updated.
    before = ours.running_mean.clone()
    assert torch.isfinite(ours(x, torch.zeros(3, 7, dtype=torch.bool))).all()
    assert torch.equal(ours.running_mean, before)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x, mask).permute(0, 2, 1)[mask], ref(valid))


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("name", "params", "shape"),
    [
        ("alexnet", {}, (4, 1, 64, 64)),
        ("resnet", {"stem": "small"}, (4, 3, 16, 16)),
        ("tcn", {}, (4, 100, 4)),
        ("tcn", {"mask_padding": True}, (4, 100, 4)),
        ("tcn_paper", {}, (4, 100, 4)),
        ("tcn_dilated", {}, (4, 100, 4)),
    ],
)
def test_sgd_steps_lower_loss(name: str, params: dict, shape: tuple[int, ...]) -> None:
    model = build_model(name, 5, **params).train()
    x = _sketch(70, shape[1], batch=4) if MODELS[name].modality == "stroke" else torch.rand(shape)
    y = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = F.cross_entropy(model(x), y).item()
    assert final < 0.5 * losses[0], (name, losses, final)
