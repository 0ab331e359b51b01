"""MPII importer: the official RELEASE .mat (with MATLAB's uneven nesting) and train/valid.h5."""

import sys

import numpy as np
import pytest
import scipy.io

from hmr_fast.body.constants import J24_NAMES
from hmr_fast.data.formats import load_annotations
from hmr_fast.data.import_cli import main
from tests import seeding

# MPII's 16 joints by name (the list), to find their J24 slots by name.
MPII_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis_mpii", "thorax_mpii", "neck", "head_top", "right_wrist", "right_elbow",
    "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)  # fmt: skip
SLOT = [J24_NAMES.index(n) for n in MPII_NAMES]
EMPTY = np.zeros((0, 0))


def _structs(items):
    """A 1 x k MATLAB struct array (all items have the same fields)."""
    arr = np.empty((1, len(items)), dtype=[(k, object) for k in items[0]])
    for i, item in enumerate(items):
        for k, v in item.items():
            arr[k][0, i] = v
    return arr


def _points(xy, ids, visibility):
    pts = [{"id": float(j), "x": float(xy[j, 0]), "y": float(xy[j, 1]), "is_visible": v}
           for j, v in zip(ids, visibility)]  # fmt: skip
    return pts[0] if len(pts) == 1 else _structs(pts)  # one point: a struct, not an array


def _rect(xy, ids, visibility, scale=2.0):
    return {"annopoints": {"point": _points(xy, ids, visibility)},
            "objpos": {"x": float(xy[:, 0].mean()), "y": float(xy[:, 1].mean())},
            "scale": scale}  # fmt: skip


def _no_points(rect):
    return {**rect, "annopoints": EMPTY}


def _expected_row(xy, ids):
    """(part (24, 3), center (2,), scale) from the labelled joints, written out."""
    part = np.zeros((24, 3))
    for j in ids:
        part[SLOT[j]] = xy[j, 0], xy[j, 1], 1.0
    pts = xy[list(ids)]
    lo, hi = pts.min(0), pts.max(0)
    return part, (lo + hi) / 2, 1.2 * (hi - lo).max() / 200


@pytest.fixture
def release(tmp_path):
    """A small mpii_human_pose_v1_u12_1.mat and what each person should become."""
    rng = seeding.rng()

    def joints():
        return rng.uniform(100, 500, (16, 2))

    all16 = list(range(16))
    one = joints()  # image 1: one person, annorect a bare struct; is_visible of every kind
    vis1 = [1.0] * 4 + ["1"] * 4 + [EMPTY] * 4 + ["0"] * 4  # 12 count as visible
    three = [joints() for _ in range(3)]
    ten = sorted(rng.choice(16, 10, replace=False).tolist())
    few, small = joints(), joints()
    lone = joints()
    images = [
        ("one.jpg", 1, _rect(one, all16, vis1), [1]),
        ("three.jpg", 1, _structs([
            _rect(three[0], ten, [1.0] * 10, scale=1.5),
            _no_points(_rect(three[1], all16, [1.0] * 16)),  # annopoints empty
            _rect(three[2], all16, ["1"] * 16),  # not a single person
        ]), [1, 2]),
        ("test.jpg", 0, {"objpos": {"x": 5.0, "y": 5.0}, "scale": 3.0}, EMPTY),
        ("few.jpg", 1, _structs([
            _rect(few, range(8), ["0"] * 4 + ["1"] * 4),  # 8 labelled, 4 visible
            _rect(lone, [9], [1.0]),  # a single point: a struct, not an array
        ]), [1, 2]),
        ("small.jpg", 1, _structs([
            _rect(small, all16, [1.0] * 16, scale=0.25),  # 50 px tall person
            {**_rect(joints(), all16, [1.0] * 16),
             "annopoints": {"point": _structs([{"id": 16.0, "x": 1.0, "y": 2.0,
                                                 "is_visible": 1.0}] * 8)}},  # bad joint id
        ]), [1, 2]),
        ("empty.jpg", 1, EMPTY, EMPTY),
        ("nofield.jpg", 1, {"objpos": {"x": 5.0, "y": 5.0}, "scale": 3.0}, [1]),
    ]  # fmt: skip
    annolist = _structs([{"image": {"name": n}, "annorect": r} for n, _, r, _ in images])
    single = np.empty((len(images), 1), dtype=object)
    for i, (*_, s) in enumerate(images):
        single[i, 0] = np.asarray(s, np.float64).reshape(-1, 1) if len(s) else EMPTY
    train = np.array([[t for _, t, _, _ in images]], np.float64)
    path = tmp_path / "annotations" / "mpii_human_pose_v1_u12_1.mat"
    path.parent.mkdir()
    scipy.io.savemat(path, {"RELEASE": {"annolist": annolist, "img_train": train,
                                        "single_person": single, "version": "12"}})  # fmt: skip
    kept = [("one.jpg", one, all16), ("three.jpg", three[0], ten)]
    return path, kept, ("three.jpg", three[2], all16)


def _check_rows(ann, expected, prefix="images/"):
    assert len(ann["imgname"]) == len(expected)
    for r, (name, xy, ids) in enumerate(expected):
        part, center, scale = _expected_row(xy, ids)
        assert ann["imgname"][r] == prefix + name
        np.testing.assert_allclose(ann["part"][r], part, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ann["center"][r], center, rtol=1e-5)
        np.testing.assert_allclose(ann["scale"][r], scale, rtol=1e-5)


def test_mpii_mat_single_people(release, tmp_path, capsys):
    path, kept, _ = release
    out = tmp_path / "mpii.npz"
    # SRC may be the release folder: the .mat is found in annotations/.
    assert main(["--format", "mpii", "--src", str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    _check_rows(load_annotations(out), kept)
    for text in ("1 not_single_person (e.g. image 2 (three.jpg) person 3)",
                 "2 no_annopoints (e.g. image 2 (three.jpg) person 2)",
                 "1 test_image (e.g. image 3 (test.jpg))",
                 "2 too_few_visible (e.g. image 4 (few.jpg) person 1: 4 visible keypoints)",
                 "1 too_small (e.g. image 5 (small.jpg) person 1: height 50.0 px)",
                 "1 malformed (e.g. image 5 (small.jpg) person 2: joint id"):  # fmt: skip
        assert text in printed, text


def test_mpii_mat_all_people_and_no_filters(release, tmp_path, capsys):
    path, kept, extra = release
    out = tmp_path / "mpii.npz"
    argv = ["--format", "mpii", "--src", str(path), "--out", str(out), "--image-prefix", "im/"]
    assert main(argv + ["--mpii-people", "all"]) == 0
    assert "not_single_person" not in capsys.readouterr().out
    _check_rows(load_annotations(out), kept[:2] + [extra], prefix="im/")
    # Filters off: the too-few and too-small people are written too.
    assert main(argv + ["--min-visible", "0", "--min-size", "0"]) == 0
    names = load_annotations(out)["imgname"].tolist()
    assert names == ["im/one.jpg", "im/three.jpg", "im/few.jpg", "im/few.jpg", "im/small.jpg"]


def test_mpii_bad_inputs(tmp_path, capsys):
    out = tmp_path / "o.npz"
    scipy.io.savemat(tmp_path / "other.mat", {"joints": np.zeros((3, 14, 2))})
    assert main(["--format", "mpii", "--src", str(tmp_path / "other.mat"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other.mat" in err and "RELEASE" in err and "joints" in err
    assert main(["--format", "mpii", "--src", str(tmp_path), "--out", str(out)]) == 2
    assert "mpii_human_pose_v1_u12_1.mat" in capsys.readouterr().err
    h5 = tmp_path / "train.h5"
    h5.write_bytes(b"not hdf5")
    assert main(["--format", "mpii", "--src", str(h5), "--out", str(out),
                 "--mpii-people", "single"]) == 2  # fmt: skip
    assert "single-person" in capsys.readouterr().err
    assert main(["--format", "coco", "--src", str(h5), "--out", str(out),
                 "--mpii-people", "all"]) == 2  # fmt: skip
    assert "--format mpii" in capsys.readouterr().err
    assert not out.exists()


def test_mpii_h5_without_h5py_names_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    h5 = tmp_path / "valid.h5"
    h5.write_bytes(b"")
    assert main(["--format", "mpii", "--src", str(h5), "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "h5py" in err and "hmr-fast[mpii]" in err and str(h5) in err


@pytest.mark.parametrize("names", ["bytes", "codes"])
@pytest.mark.parametrize("with_visible", [True, False])
def test_mpii_h5(tmp_path, capsys, names, with_visible):
    h5py = pytest.importorskip("h5py")
    rng = seeding.rng()
    n = 4
    part = rng.uniform(100, 500, (n, 16, 2))
    visible = np.ones((n, 16))
    visible[1, 5:] = 0  # 5 visible of 16 labelled
    missing = sorted(rng.choice(16, 6, replace=False).tolist())
    part[3, missing] = 0  # unlabelled joints are (0, 0)
    scale = np.array([2.0, 2.0, 0.25, 1.8])  # row 2: 50 px tall
    center = part.mean(1)
    imgnames = [f"{100000 + i:09d}.jpg" for i in range(n)]
    path = tmp_path / "valid.h5"
    with h5py.File(path, "w") as f:
        if names == "bytes":
            f["imgname"] = np.array([s.encode() for s in imgnames])
        else:  # character codes, NUL-padded
            codes = np.zeros((n, 16), np.uint8)
            for i, s in enumerate(imgnames):
                codes[i, : len(s)] = [ord(c) for c in s]
            f["imgname"] = codes
        f["part"], f["center"], f["scale"] = part, center, scale
        f["index"], f["person"] = np.arange(n), np.zeros(n)
        if with_visible:
            f["visible"] = visible
    out = tmp_path / "mpii.npz"
    assert main(["--format", "mpii", "--src", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 too_small (e.g. row 2" in printed
    labelled3 = [j for j in range(16) if j not in missing]
    expected = [(imgnames[0], part[0], range(16))]
    if with_visible:
        assert "1 too_few_visible (e.g. row 1" in printed
    else:  # visibility unknown: every labelled joint counts as visible
        expected.append((imgnames[1], part[1], range(16)))
    expected.append((imgnames[3], part[3], labelled3))
    _check_rows(load_annotations(out), expected)
