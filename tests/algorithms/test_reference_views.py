"""The batched pretext views equal the per-sample reference path, for every task and branch."""

import pytest
import torch

from algorithms import build_algorithm
from algorithms.reference import reference_views
from data.datasets import RasterDataset, StrokeDataset
from data.synthetic import SyntheticSketches

SOURCE = SyntheticSketches("train", per_class=1, num_classes=6, seed=5)


def batch(modality):
    ds = RasterDataset(SOURCE, image_size=64) if modality == "raster" else StrokeDataset(SOURCE)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


CASES = [
    ("rotation", {}),
    ("deformation", {"module": "released"}),
    ("deformation", {"module": "HC"}),
    ("deformation", {"custom": {"y": [2.1, 0.0, 1.0]}}),
    ("supervised", {}),
]


@pytest.mark.parametrize("modality", ["raster", "stroke"])
@pytest.mark.parametrize("name, params", CASES)
def test_batched_views_equal_per_sample_reference(modality, name, params):
    algorithm = build_algorithm(name, modality, **params)
    x, y = batch(modality)
    fast_inputs, fast_targets = algorithm.views(x, y)
    ref_inputs, ref_targets = reference_views(algorithm, x, y)
    assert torch.equal(fast_targets, ref_targets)
    assert fast_inputs.shape == ref_inputs.shape
    if modality == "raster" or name == "rotation":
        assert torch.equal(fast_inputs, ref_inputs)  # index moves and closed-form turns: bit for bit
    else:
        torch.testing.assert_close(fast_inputs, ref_inputs, rtol=0, atol=1e-6)
    # the views differ from the input where the task changes the sketch
    if name != "supervised":
        assert not torch.equal(fast_inputs[len(x):2 * len(x)], fast_inputs[: len(x)])


def test_released_stroke_order_reference_follows_the_applied_warp():
    algorithm = build_algorithm("deformation", "stroke", stroke_argument_order="released", allow_folding=True)
    x, y = batch("stroke")
    torch.testing.assert_close(algorithm.views(x, y)[0], reference_views(algorithm, x, y)[0], rtol=0, atol=1e-6)


# ----------------------------------------------------------------- fast raster paths
# The raster views have two batched implementations each: deformation takes a gather path
# (runs of sources merged by index_select + amax) when the warp's destination map is
# monotone and the scatter_reduce(amax) path otherwise; rotation writes four strided copies
# into one preallocated tensor (NumPy on the CPU) or falls back to torch.cat under autograd.

import numpy as np  # noqa: E402

from algorithms import deformation as deformation_module  # noqa: E402
from algorithms.deformation import (  # noqa: E402
    _deform_raster_scatter,
    _raster_plan,
    deform_raster,
    deform_raster_reference,
)
from algorithms.rotation import (  # noqa: E402
    rotate_raster,
    rotate_strokes,
    rotation_views_raster,
    rotation_views_strokes,
)
from algorithms.warps import DEFORMATION_MODULES, IDENTITY, AxisWarp, DeformationModule  # noqa: E402

FOLDING = AxisWarp(1.0, -4.1, 0.0)  # its destination map goes backwards on 64 and 31 pixels


def grey_rasters(*shape, seed=0):
    """Grey levels with ties (multiples of 1/8) and plenty of zeros, so max merges matter."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 9, shape, generator=g).float() / 8
    return values * (torch.rand(shape, generator=g) < 0.3)


@pytest.mark.parametrize("module", list(DEFORMATION_MODULES.values()), ids=list(DEFORMATION_MODULES))
@pytest.mark.parametrize("shape", [(3, 2, 64, 64), (2, 1, 31, 57), (5, 224, 224), (17, 9), (2, 1, 1, 7), (1, 1, 6, 1)])
def test_gather_path_equals_scatter_path_and_reference(module, shape):
    x = grey_rasters(*shape)
    fast = deform_raster(x, module)
    assert fast.is_contiguous() and fast.dtype == x.dtype
    assert torch.equal(fast, _deform_raster_scatter(x, module))
    flat = x.reshape(-1, *shape[-2:])
    ref = np.stack([deform_raster_reference(img.numpy(), module) for img in flat]).reshape(shape)
    assert torch.equal(fast, torch.from_numpy(ref))


def test_gather_path_chunks_and_dtypes(monkeypatch):
    module = DEFORMATION_MODULES["released"]
    x = grey_rasters(7, 3, 40, 40, seed=1)
    expected = _deform_raster_scatter(x, module)
    monkeypatch.setattr(deformation_module, "RASTER_CHUNK_ELEMENTS", 2 * 40 * 40)  # 11 chunks, last one short
    assert torch.equal(deform_raster(x, module), expected)
    for dtype in (torch.float64, torch.uint8):
        assert torch.equal(deform_raster((x * 8).to(dtype), module), _deform_raster_scatter((x * 8).to(dtype), module))
    out = torch.full_like(x, -1.0)
    assert deform_raster(x, module, out=out) is out and torch.equal(out, expected)
    for name, strided in (("released", x.transpose(-1, -2)), ("HE", x[:, :, ::2]), ("VE", x[::2])):
        assert not strided.is_contiguous()
        expected = _deform_raster_scatter(strided, DEFORMATION_MODULES[name])
        assert torch.equal(deform_raster(strided, DEFORMATION_MODULES[name]), expected), name
    with pytest.raises(ValueError, match="out must be a contiguous"):
        deform_raster(x, module, out=torch.empty(7, 3, 40, 40).transpose(-1, -2))


def test_folding_warp_takes_the_scatter_path_and_still_matches_the_reference():
    cpu = torch.device("cpu")
    assert _raster_plan(64, 64, DeformationModule("fold_x", x=FOLDING, y=IDENTITY, allow_folding=True), cpu) is None
    assert _raster_plan(64, 64, DEFORMATION_MODULES["released"], cpu) is not None
    for module in (DeformationModule("fold_x", x=FOLDING, y=IDENTITY, allow_folding=True),
                   DeformationModule("mixed", x=DEFORMATION_MODULES["released"].x, y=FOLDING, allow_folding=True)):
        x = grey_rasters(2, 1, 64, 64, seed=2)
        ref = np.stack([[deform_raster_reference(c.numpy(), module) for c in img] for img in x])
        assert torch.equal(deform_raster(x, module), torch.from_numpy(ref))
    algorithm = build_algorithm("deformation", "raster", custom={"x": [1.0, -4.1, 0.0]}, allow_folding=True)
    x, y = batch("raster")
    assert torch.equal(algorithm.views(x, y)[0], reference_views(algorithm, x, y)[0])


def test_raster_views_keep_the_gradient_path():
    x = grey_rasters(2, 1, 16, 16).requires_grad_()
    for name, params in (("rotation", {}), ("deformation", {"module": "released"})):
        inputs, _ = build_algorithm(name, "raster", **params).views(x)
        assert inputs.requires_grad
        inputs.sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape
        x.grad = None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_stroke_rotation_views_in_one_gather_equal_the_per_turn_cat(dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.zeros(3, 7, 4, dtype=dtype)
    x[:, :, :2] = torch.rand(3, 7, 2, generator=g).to(dtype)
    x[:, :5, 2] = 1  # rows 0-4 carry a point, rows 5-6 are padding
    x[:, 4, 2], x[:, 4, 3] = 0, 1
    x[1, 5:, :2] = 0.3  # junk coordinates on padding rows must come out zero
    x[2, :, 2:] = 0  # an empty sketch
    views = rotation_views_strokes(x)
    expected = torch.cat([rotate_strokes(x, k) for k in range(4)])
    assert views.shape == (12, 7, 4) and views.dtype == dtype
    assert torch.equal(views, expected)
    assert views[:, 5:].abs().sum() == 0 and views[2::3].abs().sum() == 0  # padding rows, the empty sketch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int16, torch.bfloat16])
def test_rotation_views_into_one_tensor_equal_the_cat(dtype):
    x = (grey_rasters(3, 2, 9, 9, seed=3) * 8).to(dtype)
    for source in (x, x.transpose(-1, -2), x[:, :1]):
        views = rotation_views_raster(source)
        assert views.is_contiguous() and views.dtype == dtype
        assert torch.equal(views, torch.cat([rotate_raster(source, k) for k in range(4)]))


def test_rotation_views_of_ink_levels_are_the_float_views_bit_for_bit():
    # uint8 is ink levels: turned with OpenCV, then level / 255 in float32.
    levels = torch.randint(0, 256, (3, 2, 9, 9), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    for source in (levels, levels.transpose(-1, -2), levels[:, :1]):
        views = rotation_views_raster(source)
        floats = source.double().div(255).float()  # correctly rounded: the double is exact enough
        expected = torch.cat([rotate_raster(floats, k) for k in range(4)])
        assert views.is_contiguous() and views.dtype == torch.float32
        assert torch.equal(views.view(torch.int32), expected.view(torch.int32))


# ----------------------------------------------------------------- planar stroke paths
# Stroke views are computed on contiguous (view, axis, B, L) planes (algorithms/strokes.py);
# these tests pin them to independent per-sketch loops and to the per-axis warp, bit for bit.

from algorithms.deformation import deform_strokes, deformation_views_strokes  # noqa: E402
from algorithms.strokes import normalize_strokes  # noqa: E402


def awkward_strokes(dtype=torch.float32):
    """Sketches a prefix-of-valid-rows batch never shows: a gap of padding inside the
    sequence, junk on padding rows, an empty sketch, a single repeated point, negative
    coordinates and a sketch wider than tall."""
    g = torch.Generator().manual_seed(11)
    x = torch.zeros(6, 9, 4, dtype=dtype)
    x[:, :, :2] = torch.rand(6, 9, 2, generator=g).to(dtype)
    x[:, :, 2] = 1
    x[:, 8, 2], x[:, 8, 3] = 0, 1
    x[0, 3:5, 2:] = 0  # padding rows 3-4 in the middle ...
    x[0, 3:5, :2] = 0.25  # ... holding junk coordinates
    x[1, :, 2:] = 0  # no valid row at all
    x[1, :, :2] = 0
    x[2, :, :2] = 0.625  # every point the same: extent 0
    x[3, :, :2] -= 0.75  # negative coordinates
    x[4, :, 1] *= 0.1  # wide, flat sketch
    x[5, :, :2] = 0.6 + 0.4 * x[5, :, :2]  # far from the origin: its padding rows would map below 0
    x[5, 6:8] = 0
    return x


def normalize_loop(x, min_extent=0.0):
    """normalize_strokes one sketch at a time, the plain way."""
    out = torch.zeros_like(x)
    out[..., 2:] = x[..., 2:]
    for b in range(len(x)):
        valid = x[b, :, 2] + x[b, :, 3] > 0
        if not valid.any():
            continue
        xy = x[b, valid, :2]
        lo, hi = xy.amin(0), xy.amax(0)
        scale = (hi - lo).amax()
        scale = scale if scale > min_extent else torch.ones_like(scale)
        out[b, valid, :2] = (xy - (lo + hi) / 2) / scale + 0.5
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("min_extent", [0.0, 0.5])
def test_planar_normalize_equals_a_per_sketch_loop(dtype, min_extent):
    x = awkward_strokes(dtype)
    got = normalize_strokes(x, min_extent)
    assert got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, normalize_loop(x, min_extent))
    padding = x[..., 2] + x[..., 3] == 0
    assert not torch.signbit(got[padding]).any()  # padding is +0.0, not -0.0
    assert got[0, 3:5].abs().sum() == 0 and got[1].abs().sum() == 0 and got[5, 6:8].abs().sum() == 0


def test_warp_planes_equals_each_axis_warp():
    folding = DeformationModule("folding", x=AxisWarp(lam=1.0, a=2.1, b=0.0), y=AxisWarp(lam=0.7, a=0.3, b=-0.2),
                                allow_folding=True)
    t = torch.rand(2, 5, 33, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t[:, 0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # the ends: f(0) = 0, f(1) = 1 exactly
    for module in (*DEFORMATION_MODULES.values(), folding):
        for dtype in (torch.float64, torch.float32):
            planes = t.to(dtype)
            expected = torch.stack([module.x.f(planes[0]), module.y.f(planes[1])])
            assert torch.equal(module.warp_planes(planes), expected), (module.name, dtype)
            assert torch.equal(module.warp_planes(planes.clone().requires_grad_()), expected)  # autograd path
            warped = module.warp_planes(planes)
            assert warped[:, 0, 0].tolist() == [0.0, 0.0] and warped[:, 0, 1].tolist() == [1.0, 1.0]
    he = DEFORMATION_MODULES["HE"]  # y is the identity: that plane comes back unchanged
    assert torch.equal(he.warp_planes(t)[1], t[1]) and not torch.equal(he.warp_planes(t)[0], t[0])
    with pytest.raises(ValueError, match="x and y planes"):
        he.warp_planes(t[:1])


@pytest.mark.parametrize("module", ["released", "HE", "VC"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planar_stroke_deformation_views_equal_the_two_step_path(module, dtype):
    x = awkward_strokes(dtype).abs()  # coordinates in [0, 1], as the warps expect
    m = DEFORMATION_MODULES[module]
    expected = torch.cat([normalize_strokes(x), deform_strokes(x, m)])
    views = deformation_views_strokes(x, m)
    assert views.shape == (12, 9, 4) and views.dtype == dtype and views.is_contiguous()
    assert torch.equal(views, expected)
    assert not torch.equal(views[6:], views[:6])
    x.requires_grad_()
    views = build_algorithm("deformation", "stroke", module=module).views(x)[0]
    assert torch.equal(views.detach(), expected)
    views.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --------------------------------------------------------- planar stroke views, bit for bit
# The planar stroke deformation views must give the two-step path's bits, compared as
# integers (so a -0.0 for +0.0 would show), for the a = 0, b = 1 shortcut and for the
# general warp.

INTEGER_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(INTEGER_VIEW[a.dtype]),
                                                                       b.view(INTEGER_VIEW[b.dtype]))


@pytest.mark.parametrize("module", [DEFORMATION_MODULES["released"], DEFORMATION_MODULES["HC"],
                                    DeformationModule("folding", x=AxisWarp(1.0, 2.1, 0.0), y=AxisWarp(0.7, 0.3, -0.2),
                                                      allow_folding=True)], ids=["released", "HC", "folding"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_planar_deformation_views_keep_the_bits(module, dtype):
    x = awkward_strokes(dtype).abs()
    x[0, :2, :2] = -0.0  # signed zeros on valid rows
    expected = torch.cat([normalize_strokes(x), deform_strokes(x, module)])
    assert same_bits(deformation_views_strokes(x, module), expected)
    assert same_bits(deformation_views_strokes(x.transpose(0, 1).contiguous().transpose(0, 1), module), expected)
    padding = (x[..., 2] + x[..., 3] == 0).repeat(2, 1)
    assert not torch.signbit(expected[padding]).any()


def test_unit_warp_shortcut_keeps_the_bits_of_each_axis_warp():
    g = torch.Generator().manual_seed(4)
    t = torch.cat([torch.rand(2, 400, generator=g, dtype=torch.float64) * s for s in (1.0, 3.0, -2.0, 1e-300)], dim=1)
    t[:, :5] = torch.tensor([0.0, -0.0, 1.0, 5e-324, 1.0 - 2.0 ** -53], dtype=torch.float64)
    for module in DEFORMATION_MODULES.values():
        for dtype in (torch.float64, torch.float32):
            planes = t.to(dtype)
            expected = torch.stack([module.x.f(planes[0]), module.y.f(planes[1])])
            assert same_bits(module.warp_planes(planes), expected), (module.name, dtype)
            out = torch.empty_like(planes, dtype=torch.float32)
            assert module.warp_planes(planes, out=out) is out and same_bits(out, expected.float())


def test_mixed_modules_warp_plane_by_plane_with_each_axis_bits():
    # One a = 0, b = 1 axis (the direct form) and one other warping axis (the product form).
    g = torch.Generator().manual_seed(5)
    t = torch.rand(2, 600, generator=g, dtype=torch.float64)
    t[:, :3] = torch.tensor([0.0, 1.0, -0.0], dtype=torch.float64)[:, None].T
    for module in (DeformationModule("mix", x=AxisWarp(2.1, 0.0, 1.0), y=AxisWarp(1.0, 0.2, 0.7)),
                   DeformationModule("mix2", x=AxisWarp(0.5, -0.3, 0.4), y=AxisWarp(-4.1, 0.0, 1.0))):
        expected = torch.stack([module.x.f(t[0]), module.y.f(t[1])])
        assert same_bits(module.warp_planes(t), expected), module.name
        grad_t = t.clone().requires_grad_(True)
        assert same_bits(module.warp_planes(grad_t).detach(), expected), module.name


def test_unit_settings_take_the_direct_form_one_sine():
    import math

    t = np.concatenate([np.linspace(0.0, 1.0, 257), np.random.default_rng(0).random(500)])
    for warp in (AxisWarp(2.1, 0.0, 1.0), AxisWarp(-4.1, 0.0, 1.0), AxisWarp(0.3, 0.0, 1.0)):
        assert warp.is_unit
        direct = t + (t * (0.5 * warp.lam)) * (np.sin(2.0 * t) - math.sin(2.0))  # by hand, this order
        assert np.array_equal(warp.f(t), direct)
        tt = torch.from_numpy(t)
        assert same_bits(warp.f(tt), tt + (tt * (0.5 * warp.lam)) * (torch.sin(2.0 * tt) - math.sin(2.0)))
    assert not AxisWarp(2.1, 0.2, 1.0).is_unit and not AxisWarp(2.1, 0.0, 0.9).is_unit


def test_direct_and_product_forms_differ_by_at_most_one_float32_ulp():
    # The stroke views warp float32 coordinates in float64 and cast back. On every float32 in
    # [0, 1] the two forms' casts differ on 75 (lam 2.1, all below 6.6e-8) and 0 (lam -4.1) of
    # 1.07e9 inputs (bench/warp_forms.py, run once); here a million of them, never > 1 ulp apart.
    from algorithms.warps import _warp

    g = torch.Generator().manual_seed(6)
    t32 = torch.cat([torch.rand(1 << 20, generator=g), torch.linspace(0, 1, 4097),
                     torch.arange(0, 256, dtype=torch.float32) / 255])
    t = t32.double()
    for warp in (AxisWarp(2.1, 0.0, 1.0), AxisWarp(-4.1, 0.0, 1.0)):
        direct = warp.f(t).float()
        product = _warp(t, warp.lam, warp.a, warp.b, torch.sin, torch.cos).float()
        ulps = (direct.view(torch.int32) - product.view(torch.int32)).abs()
        assert int(ulps.max()) <= 1 and int((ulps > 0).sum()) <= 4, (warp, int((ulps > 0).sum()))


# ------------------------------------------------------------------- real Quick, Draw! sketches
# The equality above on real players' sketches (read in place from ../shared/quickdraw): raw
# files (coordinates outside 0..255, long strokes) and simplified ones, at the paper's 224 px.

from itertools import islice  # noqa: E402

from data.formats import read_sketches  # noqa: E402
from tests.common import QUICKDRAW


def real_sketches(per_file=4):
    if not QUICKDRAW.is_dir():
        pytest.skip(f"shared Quick, Draw! sample not found at {QUICKDRAW} (expected ../shared/quickdraw)")
    files = [QUICKDRAW / kind / name for kind in ("raw", "simplified")
             for name in ("The Eiffel Tower.ndjson", "airplane.ndjson", "banana.ndjson")]
    return [s for path in files for s in islice(read_sketches(path, label=0), per_file)]


@pytest.mark.parametrize("name, params", CASES[:3])
def test_views_on_real_sketches_equal_the_per_sample_reference(name, params):
    sketches = real_sketches()
    for modality, dataset in (("raster", RasterDataset(sketches, image_size=224)), ("stroke", StrokeDataset(sketches))):
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        algorithm = build_algorithm(name, modality, **params)
        fast, ref = algorithm.views(x, None)[0], reference_views(algorithm, x, None)[0]
        if modality == "raster" or name == "rotation":
            assert torch.equal(fast, ref), (name, params, modality)
        else:  # the reference's warp uses NumPy's sin and cos, the batched one torch's
            torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
        assert not torch.equal(fast[len(x):2 * len(x)], fast[: len(x)])


def test_chunk_size_per_device(monkeypatch):
    # CPU: chunks sized for the cache; elsewhere a training batch (256 at 224 px) in one chunk
    assert deformation_module.raster_chunk_elements(torch.device("cpu")) == deformation_module.RASTER_CHUNK_ELEMENTS
    for device in ("cuda", "mps"):
        elements = deformation_module.raster_chunk_elements(torch.device(device))
        assert elements == deformation_module.RASTER_CHUNK_ELEMENTS_ACCELERATOR and elements // (224 * 224) >= 256
    # the CPU chunk is what deform_raster uses there: count the plan's calls
    calls = []
    plan = deformation_module._raster_plan(40, 40, DEFORMATION_MODULES["released"], torch.device("cpu"))
    monkeypatch.setattr(type(plan), "apply", lambda self, x, out, scratch: calls.append(len(x)))
    monkeypatch.setattr(deformation_module, "RASTER_CHUNK_ELEMENTS", 3 * 40 * 40)
    deform_raster(torch.zeros(7, 1, 40, 40), DEFORMATION_MODULES["released"])
    assert calls == [3, 3, 1]
