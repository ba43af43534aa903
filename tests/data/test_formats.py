"""The four Quick, Draw! readers on the real shared sample (../shared/quickdraw), Google's
simplification of raw drawings against Google's own simplified files, and every kind of
bad input: skipped and counted (with where), or a one-line error naming the file."""

import json
import os
import struct

import numpy as np
import pytest

from data.formats import (
    BadRecord,
    FormatError,
    Report,
    categories,
    category_key,
    decode_drawing,
    read_binary,
    read_ndjson,
    read_npz,
    read_sketches,
    stroke3_to_strokes,
)
from data.simplify import resample, simplify_raw
from tests.common import QUICKDRAW, needs_quickdraw

pytestmark = needs_quickdraw


def _read_folder(kind: str) -> dict[str, dict[str, object]]:
    """class -> {key_id: Sketch} for every file of a sample folder (strict: no bad records)."""
    out = {}
    for f in sorted((QUICKDRAW / kind).iterdir()):
        out[f.stem] = {s.key_id: s for s in read_ndjson(f, word=f.stem)}
    return out


@pytest.fixture(scope="module")
def simplified():
    return _read_folder("simplified")


@pytest.fixture(scope="module")
def raw():
    return _read_folder("raw")


def _all_points(sketches) -> np.ndarray:
    return np.concatenate([np.concatenate(s.strokes) for s in sketches])


# ----------------------------------------------------------------------------- categories


def test_categories_are_googles_345_in_googles_order():
    names = categories()
    assert len(names) == 345 and len(set(names)) == 345
    assert list(names) == sorted(names, key=category_key)  # Google's letters-only order
    assert names[0] == "aircraft carrier" and names[-1] == "zigzag"
    assert names.index("cello") + 1 == names.index("cell phone")
    assert names.index("tent") + 1 == names.index("The Eiffel Tower")
    assert names.index("trumpet") + 1 == names.index("t-shirt")
    sample = {f.stem for kind in ("simplified", "raw") for f in (QUICKDRAW / kind).iterdir()}
    assert sample <= set(names)  # every sample file is a category, spelled exactly
    assert len(set(names) - sample) == 3  # the three categories withheld from the sample


# ----------------------------------------------------------------------------- simplified


def test_simplified_ndjson_counts_and_ranges(simplified):
    assert len(simplified) == 341
    assert sum(len(v) for v in simplified.values()) == 6470  # the sample README's count
    assert len(simplified["monkey"]) == 990 and len(simplified["apple"]) == 90
    pts = _all_points(s for v in simplified.values() for s in v.values())
    assert pts.dtype == np.float32 and pts.min() == 0 and pts.max() == 255
    assert np.array_equal(pts, np.round(pts))
    banana = simplified["banana"]["5871142554304512"]
    assert len(banana.strokes) == 366  # the README's largest drawing
    first = simplified["dog"]["6718004173733888"].strokes[0]
    np.testing.assert_array_equal(first, [[115, 45], [110, 52], [111, 60], [130, 60], [132, 51], [125, 42]])


# ----------------------------------------------------------------------------- binary


def test_binary_matches_ndjson_record_for_record(simplified):
    sketches = list(read_binary(QUICKDRAW / "binary" / "dog.bin", label=5))
    assert len(sketches) == 39
    assert sketches[0].key_id == "6718004173733888" and sketches[0].label == 5
    assert len(sketches[0].strokes) == 9
    np.testing.assert_array_equal(sketches[0].strokes[0][:, 0], [115, 110, 111, 130, 132, 125])
    ndjson = simplified["dog"]
    both = [s for s in sketches if s.key_id in ndjson]
    assert len(both) == 15  # positions 1-15 of Google's file are in both
    for s in both:
        other = ndjson[s.key_id]
        assert len(s.strokes) == len(other.strokes)
        for a, b in zip(s.strokes, other.strokes):
            np.testing.assert_array_equal(a, b)
    pts = _all_points(sketches)
    assert 0 <= pts.min() and pts.max() <= 255


# ----------------------------------------------------------------------------- raw


def test_raw_ndjson_is_simplified_like_googles(raw, simplified):
    assert len(raw) == 342 and sum(len(v) for v in raw.values()) == 6790
    pts = _all_points(s for v in raw.values() for s in v.values())
    assert pts.min() >= 0 and pts.max() <= 255 and np.array_equal(pts, np.round(pts))
    assert all(len(st) >= 2 for v in raw.values() for s in v.values() for st in s.strokes)

    pairs = [(r, simplified[c][k]) for c in raw for k, r in raw[c].items() if c in simplified and k in simplified[c]]
    assert len(pairs) == 5140
    exact = sum(
        len(a.strokes) == len(b.strokes)
        and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a.strokes, b.strokes))
        for a, b in pairs
    )
    strokes = [(x, y) for a, b in pairs for x, y in zip(a.strokes, b.strokes)]
    exact_strokes = sum(x.shape == y.shape and np.array_equal(x, y) for x, y in strokes)
    dist = np.array([_polyline_hausdorff(a.strokes, b.strokes) for a, b in pairs])
    print(
        f"\nraw -> simplified vs Google's simplified, {len(pairs)} drawings: "
        f"{exact / len(pairs):.2%} identical, {exact_strokes / len(strokes):.2%} of strokes identical, "
        f"polyline Hausdorff median {np.median(dist):.2f} px, p99 {np.percentile(dist, 99):.2f}, max {dist.max():.2f}"
    )
    assert all(len(a.strokes) == len(b.strokes) for a, b in pairs)
    assert exact / len(pairs) >= 0.93  # measured 94.1%
    assert exact_strokes / len(strokes) >= 0.985  # measured 98.8%
    assert dist.max() <= 3.0  # measured 2.77 px: never more than RDP's tolerance + rounding
    assert np.mean(dist <= 2.0) >= 0.99


def _point_to_polyline(points: np.ndarray, strokes) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for s in strokes:
        s = s.astype(np.float64)
        a, b = s[:-1], s[1:]
        ab = b - a
        sq = (ab**2).sum(1)
        rel = points[:, None, :] - a[None]
        t = np.clip((rel * ab[None]).sum(2) / np.where(sq > 0, sq, 1.0), 0.0, 1.0)
        near = a[None] + t[..., None] * ab[None]
        best = np.minimum(best, np.hypot(*(points[:, None, :] - near).transpose(2, 0, 1)).min(1))
    return best


def _polyline_hausdorff(a, b) -> float:
    pa, pb = np.concatenate(a).astype(np.float64), np.concatenate(b).astype(np.float64)
    return float(max(_point_to_polyline(pa, b).max(), _point_to_polyline(pb, a).max()))


def test_simplify_raw_steps_by_hand():
    # Align top-left, scale the larger extent to 255 (x: 10..20 -> 0..255, y: 5..10 -> 0..127.5).
    out = simplify_raw([np.array([[10.0, 5.0], [20.0, 10.0]]), np.array([[15.0, 7.0]])])
    np.testing.assert_array_equal(out[0], [[0, 0], [255, 128]])  # a straight line keeps its ends
    np.testing.assert_array_equal(out[1], [[128, 51], [128, 51]])  # one point -> twice (as Google)
    # Resampling walks the arc length: 1-px steps plus the last point.
    r = resample(np.array([[0.0, 0.0], [2.5, 0.0], [2.5, 1.0]]))
    np.testing.assert_allclose(r, [[0, 0], [1, 0], [2, 0], [2.5, 0.5], [2.5, 1.0]])
    # RDP with epsilon 2 after scaling: a bump of 1% of the extent (2.55 px) is kept, 0.5% is not.
    for bump, kept in ((0.01, 3), (0.005, 2)):
        out = simplify_raw([np.array([[0.0, 0.0], [50.0, bump * 100], [100.0, 0.0]])])
        assert len(out[0]) == kept


# ----------------------------------------------------------------------------- npz


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the file's numpy-1 pickles, read directly here
def test_npz_offsets_come_into_the_same_frame():
    face = list(read_npz(QUICKDRAW / "sketchrnn_npz" / "face.npz", label=2))
    assert len(face) == 2500 and face[0].key_id == "npz:face:sketches:0" and face[-1].label == 2
    raw = np.load(QUICKDRAW / "sketchrnn_npz" / "face.npz", allow_pickle=True)["sketches"]
    for sketch, offsets in zip(face[:200], raw[:200]):
        pts = np.concatenate(sketch.strokes)
        assert pts.min() >= 0 and pts.max() <= 255 and np.array_equal(pts, np.round(pts))
        assert len(sketch.strokes) == int((offsets[:, 2] != 0).sum())  # one stroke per pen lift
        # Every kept point is a vertex of the original drawing, aligned, scaled and rounded.
        xy = np.cumsum(offsets[:, :2].astype(np.float64), axis=0)
        xy -= xy.min(axis=0)
        scaled = xy * (255.0 / xy.max())
        gap = np.abs(pts[:, None, :] - scaled[None, :, :]).max(axis=2).min(axis=1)
        assert gap.max() <= 0.5 + 1e-6  # rounding is the only change to a kept vertex
    extents = [np.concatenate(s.strokes).max() for s in face]
    assert min(extents) >= 250  # the larger extent fills the box (RDP may drop an extreme vertex)
    mean_points = np.mean([sum(len(st) for st in s.strokes) for s in face])
    assert 40 <= mean_points <= 70  # the density of the simplified files (face there: ~54)


def test_stroke3_conversion_by_hand():
    # Two strokes: (0,0)->(10,0) lifted, then (10,10)->(0,10) lifted; extent 10 -> x25.5.
    offsets = np.array([[0, 0, 0], [10, 0, 1], [0, 10, 0], [-10, 0, 1]], dtype=np.int16)
    out = stroke3_to_strokes(offsets)
    np.testing.assert_array_equal(out[0], [[0, 0], [255, 0]])
    np.testing.assert_array_equal(out[1], [[255, 255], [0, 255]])
    with pytest.raises(BadRecord, match="stroke-3"):
        stroke3_to_strokes(np.zeros((4, 2)))


def test_read_sketches_dispatches_by_suffix():
    n = sum(1 for _ in read_sketches(QUICKDRAW / "binary" / "dog.bin"))
    assert n == 39
    with pytest.raises(FormatError, match="unknown format"):
        read_sketches(QUICKDRAW / "README.md")


# ----------------------------------------------------------------------------- bad input


def _line(key_id: str, drawing, word: str = "apple") -> str:
    return json.dumps({"word": word, "countrycode": "US", "key_id": key_id, "drawing": drawing})


GOOD = [[[0, 10, 255], [0, 20, 30]]]


@pytest.mark.parametrize(
    "bad, kind",
    [
        ('{"word": "apple", "key_id": "2", "drawing": [[[0, 1], [0, 1]]', "malformed JSON"),
        (_line("2", []), "empty drawing"),
        (_line("2", [[[0, 1, 2], [0, 1]]]), "stroke lengths differ"),
        (_line("2", [[[0, 1], [0, 256]]]), "coordinate outside 0..255"),
        (_line("2", [[[0, -1], [0, 5]]]), "coordinate outside 0..255"),
        (_line("2", [[[], []]]), "empty stroke"),
        (_line("2", [[[0, 1.5], [0, 5]]]), "non-integer coordinate"),
        (_line("2", [[["a", 1], [0, 5]]]), "bad stroke"),
        (_line("2", [[[0, 1], [0, 2], [0, 5]], [[0, 1], [0, 2]]]), "bad stroke"),
        (_line("2", GOOD, word="pear"), "word does not match file"),
        ('{"word": "apple", "key_id": 2, "drawing": []}', "bad key_id"),
        ("[1, 2, 3]", "malformed JSON"),
    ],
)
def test_bad_ndjson_line_is_skipped_counted_and_located(tmp_path, bad, kind):
    f = tmp_path / "apple.ndjson"
    f.write_text("\n".join([_line("1", GOOD), bad, _line("3", GOOD), ""]) + "\n")
    report = Report()
    got = list(read_ndjson(f, report=report, word="apple"))
    assert [s.key_id for s in got] == ["1", "3"]  # the good lines around it are kept
    assert report.total == 1 and report.counts[kind] == 1
    assert report.problems[0].where == "line 2" and report.problems[0].path == str(f)
    # Strict (no report): one line naming the file, the line and the problem.
    with pytest.raises(FormatError) as err:
        list(read_ndjson(f, word="apple"))
    msg = str(err.value)
    assert "\n" not in msg and str(f) in msg and "line 2" in msg and kind in msg


def test_raw_line_with_mismatched_t_or_nan_is_bad():
    with pytest.raises(BadRecord, match="lengths differ"):
        decode_drawing([[[0, 1], [0, 1], [0]]])
    with pytest.raises(BadRecord, match="non-finite"):
        decode_drawing([[[0, 1], [0, None], [0, 1]]])  # JSON null
    with pytest.raises(BadRecord, match="bad stroke"):
        decode_drawing([[[0, 1], [0, [2]], [0, 1]]])
    strokes, kind = decode_drawing([[[-500.5, 1000], [30, 40], [0, 9]]])
    assert kind == "raw" and strokes[0].min() >= 0 and strokes[0].max() == 255


def test_truncated_bin_keeps_the_records_before(tmp_path):
    data = (QUICKDRAW / "binary" / "dog.bin").read_bytes()
    # Find where record 39 starts, then cut the file 5 bytes into it.
    pos = 0
    for _ in range(38):
        (n_strokes,) = struct.unpack_from("<H", data, pos + 15)
        pos += 17
        for _ in range(n_strokes):
            pos += 2 + 2 * struct.unpack_from("<H", data, pos)[0]
    for cut in (pos + 5, pos + 20, len(data) - 1):
        f = tmp_path / "dog.bin"
        f.write_bytes(data[:cut])
        report = Report()
        got = list(read_binary(f, report=report))
        assert len(got) == 38 and report.counts["truncated record"] == 1 and report.total == 1
        assert report.problems[0].where == f"record 39 at byte {pos}"
        assert [s.key_id for s in got] == [s.key_id for s in read_binary(QUICKDRAW / "binary" / "dog.bin")][:38]
    with pytest.raises(FormatError, match=r"dog\.bin: record 39 at byte \d+: truncated record"):
        list(read_binary(f))


def test_bin_record_with_an_empty_stroke_is_bad(tmp_path):
    head = struct.pack("<Q2sbIH", 42, b"US", 1, 0, 1)
    good = head + struct.pack("<H", 2) + bytes([1, 2, 3, 4])
    empty = struct.pack("<Q2sbIH", 43, b"US", 1, 0, 1) + struct.pack("<H", 0)
    nostroke = struct.pack("<Q2sbIH", 44, b"US", 1, 0, 0)
    f = tmp_path / "x.bin"
    f.write_bytes(good + empty + nostroke + good)
    report = Report()
    got = list(read_binary(f, report=report))
    assert [s.key_id for s in got] == ["42", "42"]
    np.testing.assert_array_equal(got[0].strokes[0], [[1, 3], [2, 4]])
    assert report.counts == {"empty stroke": 1, "empty drawing": 1}
    assert [p.where for p in report.problems] == ["record 2 at byte 23", "record 3 at byte 42"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no sketches"])
def test_corrupt_npz_stops_with_one_line_naming_the_file(tmp_path, damage):
    f = tmp_path / "face.npz"
    data = (QUICKDRAW / "sketchrnn_npz" / "face.npz").read_bytes()
    if damage == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(b"this is not a zip file at all" * 10)
    else:
        np.savez(f, pix_count=np.zeros(3))
    with pytest.raises(FormatError) as err:
        read_npz(f)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(f)) and "corrupt .npz" in msg


def test_npz_element_that_is_not_stroke3_is_skipped(tmp_path):
    good = np.array([[0, 0, 0], [5, 5, 1]], dtype=np.int16)
    arr = np.empty(3, dtype=object)
    arr[0], arr[1], arr[2] = good, np.zeros((3, 2)), good
    f = tmp_path / "pig.npz"
    np.savez(f, train=arr)
    report = Report()
    got = list(read_npz(f, report=report))
    assert [s.key_id for s in got] == ["npz:pig:train:0", "npz:pig:train:2"]
    assert report.counts["bad stroke-3 array"] == 1 and report.problems[0].where == "train[1]"


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        read_ndjson(tmp_path / "nope.ndjson")
    assert not os.path.exists(tmp_path / "nope.ndjson")


def test_key_id_written_with_escapes_is_still_read(tmp_path):
    f = tmp_path / "apple.ndjson"
    f.write_text('{"word": "apple", "key_id": "\\u0031\\u0032", "drawing": [[[0, 9], [0, 9]]]}\n')
    assert [s.key_id for s in read_ndjson(f)] == ["12"]
