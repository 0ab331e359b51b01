"""Importers: LSP / LSP-extended joints.mat and COCO json in their real layouts, the paper's
person filters, and the face keypoints' vertices."""

import json

import numpy as np
import pytest
import scipy.io

from hmr_fast.body.constants import (
    COCO_TO_J24,
    HMR19_FROM_J24,
    HMR_FACE_VERTEX_IDS,
    J24_NAMES,
    VERTEX_JOINT_IDS,
    VERTEX_JOINT_NAMES,
)
from hmr_fast.data.formats import load_annotations
from hmr_fast.data.import_cli import main
from tests import seeding

COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# The paper's filters, written out as the reference: at least 6 visible keypoints (HMR Sec. 4),
# a person taller than 60 px (akanazawa/hmr coco_to_tfrecords.py L124, L212).
PAPER_MIN_VISIBLE = 6
PAPER_MIN_HEIGHT = 60
NO_FILTERS = ["--min-visible", "0", "--min-size", "0", "--face-shoulders-only", "keep"]


def _box(xy):
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), 1.2 * max(x1 - x0, y1 - y0) / 200


@pytest.mark.parametrize("split", ["train", "test"])
def test_lsp(tmp_path, split, capsys):
    rng = seeding.rng()
    n = 12
    joints = np.zeros((3, 14, n))
    joints[:2] = rng.uniform(10, 400, (2, 14, n))
    joints[2] = rng.integers(0, 2, (14, n))  # 0 visible, 1 occluded
    first = 0 if split == "train" else n // 2
    small, few = first, first + 1
    joints[1, :, small] = 100 + np.linspace(0, 50, 14)  # 50 px tall
    joints[2, :, small] = 0
    joints[2, :, few] = 1
    joints[2, :3, few] = 0  # 3 visible
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    out = tmp_path / "lsp.npz"
    assert (
        main(["--format", "lsp", "--src", str(tmp_path), "--out", str(out), "--split", split]) == 0
    )
    printed = capsys.readouterr().out
    ann = load_annotations(out)
    rows = list(range(first, first + n // 2))
    if split == "train":  # the paper's filters; none for the test split
        n_vis = (joints[2, :, rows] == 0).sum(1)
        height = joints[1, :, rows].max(1) - joints[1, :, rows].min(1)
        too_few = n_vis < PAPER_MIN_VISIBLE
        too_small = ~too_few & (height <= PAPER_MIN_HEIGHT)
        assert f"{too_few.sum()} too_few_visible" in printed
        assert f"{too_small.sum()} too_small" in printed
        rows = [i for i, f, s in zip(rows, too_few, too_small) if not (f or s)]
    else:
        assert "skipped: nothing" in printed
    assert len(ann["imgname"]) == len(rows)
    for r, i in enumerate(rows):
        assert ann["imgname"][r] == f"images/im{i + 1:04d}.jpg"
        xy = joints[:2, :, i].T
        c, s = _box(xy)
        np.testing.assert_allclose(ann["center"][r], c, rtol=1e-5)
        np.testing.assert_allclose(ann["scale"][r], s, rtol=1e-5)
        # LSP order == J24[:14]: right ankle first
        np.testing.assert_allclose(ann["part"][r, :14, :2], xy, rtol=1e-5)
        np.testing.assert_array_equal(ann["part"][r, :14, 2], joints[2, :, i] == 0)
        assert not ann["part"][r, 14:].any()


def test_lsp_extended(tmp_path):
    rng = seeding.rng()
    n = 5
    joints = np.zeros((14, 3, n))
    joints[:, :2] = rng.uniform(10, 400, (14, 2, n))
    joints[:, 2] = rng.integers(0, 2, (14, n))  # 1 visible
    joints[:, 2, 0] = 0
    joints[3, 2, 0] = 1  # row 0: a single visible joint -> box from all joints
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    out = tmp_path / "lspet.npz"
    argv = ["--format", "lsp-extended", "--src", str(tmp_path), "--out", str(out)]
    assert main(argv + NO_FILTERS) == 0
    ann = load_annotations(out)
    assert len(ann["imgname"]) == n
    for i in range(n):
        assert ann["imgname"][i] == f"images/im{i + 1:05d}.jpg"
        vis = joints[:, 2, i] == 1
        xy = joints[:, :2, i]
        c, s = _box(xy[vis] if vis.sum() >= 2 else xy)
        np.testing.assert_allclose(ann["center"][i], c, rtol=1e-5)
        np.testing.assert_allclose(ann["scale"][i], s, rtol=1e-5)
        np.testing.assert_allclose(ann["part"][i, :14, :2], xy, rtol=1e-5)
        np.testing.assert_array_equal(ann["part"][i, :14, 2], vis)
    # The default filters: row 0 has one visible joint.
    assert main(argv) == 0
    kept = load_annotations(out)["imgname"].tolist()
    assert "images/im00001.jpg" not in kept
    assert len(kept) == sum((joints[:, 2, i] == 1).sum() >= PAPER_MIN_VISIBLE for i in range(n))


def test_lsp_wrong_layout(tmp_path):
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((14, 3, 4))})
    assert main(["--format", "lsp", "--src", str(tmp_path), "--out", str(tmp_path / "o.npz")]) == 2


def _coco_ann(rng, k, image_id, n_body, crowd=0):
    """A person annotation with ``n_body`` of the 12 body keypoints labelled and visible
    (v = 2), four face keypoints labelled (v in 1, 2) and a box 80..200 px on each side."""
    kp = np.concatenate([rng.uniform(0, 500, (17, 2)), rng.integers(1, 3, (17, 1))], 1)
    body = 5 + rng.permutation(12)
    kp[5:, 2] = 2
    kp[body[n_body:], 2] = 0
    kp[rng.integers(0, 5), 2] = 0  # a face keypoint unlabelled: it does not count
    box = [float(v) for v in np.concatenate([rng.uniform(0, 200, 2), rng.uniform(80, 200, 2)])]
    return {"id": k, "image_id": image_id, "iscrowd": crowd, "bbox": box,
            "keypoints": kp.ravel().tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()),
            "category_id": 1, "area": 100.0, "segmentation": []}, kp  # fmt: skip


def _write_coco(path, images, anns):
    cats = [{"id": 1, "name": "person", "keypoints": list(COCO_NAMES), "skeleton": []}]
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": anns,
                                "categories": cats}))  # fmt: skip
    return path


IMAGES = [{"id": 7, "file_name": "a.jpg", "height": 480, "width": 640},
          {"id": 9, "file_name": "b.jpg", "height": 480, "width": 640}]  # fmt: skip


@pytest.mark.parametrize("min_kp", [None, "12", "8"])
def test_coco(tmp_path, min_kp, capsys):
    """Keypoints land in their J24 slots; SPIN's --min-keypoints rule when asked for (these
    people all pass the paper's filters: >= 7 visible keypoints, boxes >= 80 px)."""
    rng = seeding.rng()
    anns, expected = [], []
    body_counts = [12, 12, 9, 12, 0, 7, 12, 8]
    need = 0 if min_kp is None else int(min_kp)
    for k, nb in enumerate(body_counts):
        ann, kp = _coco_ann(rng, k, 7 if k % 2 else 9, nb, crowd=int(k == 3))
        if nb == 0:
            kp[:, 2] = 0  # nothing labelled at all
            ann["keypoints"] = kp.ravel().tolist()
        anns.append(ann)
        if k != 3 and nb >= need and (kp[:, 2] > 0).any():
            expected.append((ann, kp))
    path = _write_coco(tmp_path / "person_keypoints_val2017.json", IMAGES, anns)
    out = tmp_path / "coco.npz"
    argv = ["--format", "coco", "--src", str(path), "--out", str(out), "--image-prefix", "val/"]
    assert main(argv + ([] if min_kp is None else ["--min-keypoints", min_kp])) == 0
    printed = capsys.readouterr().out
    assert "1 crowd" in printed and "1 no_keypoints" in printed
    too_few = sum(1 for k, nb in enumerate(body_counts) if k != 3 and 0 < nb < need)
    assert (f"{too_few} too_few_keypoints" in printed) == (too_few > 0)
    res = load_annotations(out)
    assert len(res["imgname"]) == len(expected)
    for r, (ann, kp) in enumerate(expected):
        x, y, w, h = ann["bbox"]
        assert res["imgname"][r] == "val/" + ("a.jpg" if ann["image_id"] == 7 else "b.jpg")
        np.testing.assert_allclose(res["center"][r], [x + w / 2, y + h / 2], rtol=1e-5)
        np.testing.assert_allclose(res["scale"][r], 1.2 * max(w, h) / 200, rtol=1e-5)
        for c, name in enumerate(COCO_NAMES):
            j = J24_NAMES.index(name)
            np.testing.assert_allclose(res["part"][r, j, :2], kp[c, :2], rtol=1e-5)
            assert res["part"][r, j, 2] == float(kp[c, 2] > 0)
        # LSP-only joints stay unlabelled
        for name in ("neck", "head_top", "pelvis_mpii"):
            assert res["part"][r, J24_NAMES.index(name), 2] == 0


def _coco_person(k, visible, labelled=(), box=(10.0, 10.0, 100.0, 100.0)):
    """An annotation with the named keypoints visible (v = 2) and labelled (v = 1)."""
    kp = np.zeros((17, 3))
    kp[:, :2] = np.arange(34).reshape(17, 2) + 20
    for names, v in ((visible, 2), (labelled, 1)):
        for name in names:
            kp[COCO_NAMES.index(name), 2] = v
    n = int((kp[:, 2] > 0).sum())
    return {"id": k, "image_id": 7, "iscrowd": 0, "bbox": list(box), "category_id": 1,
            "keypoints": kp.ravel().tolist(), "num_keypoints": n}  # fmt: skip


FACE_SHOULDERS = COCO_NAMES[:7]
LIMBS = COCO_NAMES[7:]


@pytest.mark.parametrize("measure", [None, "max-side"])
def test_coco_paper_filters(tmp_path, capsys, measure):
    """6 visible (v == 2) keypoints, a box taller than 60 px (or, asked for, a larger side
    over 60 px), not face and shoulders only (a labelled limb keypoint suffices)."""
    people = {
        1: _coco_person(1, LIMBS[:6]),  # kept: exactly 6 visible
        2: _coco_person(2, LIMBS[:5], labelled=LIMBS[5:]),  # 5 visible, 5 occluded
        3: _coco_person(3, LIMBS, box=(0, 0, 100, 60)),  # 60 px tall: not over 60
        4: _coco_person(4, LIMBS, box=(0, 0, 30, 61)),  # tall and narrow: kept
        5: _coco_person(5, FACE_SHOULDERS),  # 7 visible, face and shoulders only
        6: _coco_person(6, FACE_SHOULDERS, labelled=["left_wrist"]),  # kept: a wrist labelled
        7: _coco_person(7, LIMBS, box=(0, 0, 59, 40)),  # small either way
    }
    path = _write_coco(tmp_path / "person_keypoints_f.json", IMAGES, list(people.values()))
    out = tmp_path / "o.npz"
    argv = ["--format", "coco", "--src", str(path), "--out", str(out)]
    assert main(argv + (["--size-measure", measure] if measure else [])) == 0
    printed = capsys.readouterr().out
    kept = [1, 4, 6] if measure is None else [1, 3, 4, 6]
    small = [3, 7] if measure is None else [7]
    assert f"wrote {len(kept)} rows" in printed
    assert "1 too_few_visible (e.g. annotation id 2: 5 visible keypoints)" in printed
    assert f"{len(small)} too_small (e.g. annotation id {small[0]}" in printed
    assert "1 face_shoulders_only (e.g. annotation id 5)" in printed
    res = load_annotations(out)
    x0 = np.array([people[k]["bbox"][0] + people[k]["bbox"][2] / 2 for k in kept])
    np.testing.assert_allclose(res["center"][:, 0], x0, rtol=1e-6)
    # All off: every person is written.
    assert main(argv + NO_FILTERS) == 0
    assert f"wrote {len(people)} rows" in capsys.readouterr().out
    # Values out of range are usage errors naming the option.
    for bad in (["--min-visible", "25"], ["--min-size", "-1"], ["--min-size", "nan"]):
        assert main(argv + bad) == 2
        assert bad[0] in capsys.readouterr().err


def test_face_keypoint_vertices_are_smplx_ids_in_j24_face_order():
    """The fallback face vertices (HMR_FACE_VERTEX_IDS) are, slot by slot, the vertices smplx
    uses for the keypoint of the same name, and COCO's face keypoints land in those slots."""
    smplx_ids = pytest.importorskip("smplx.vertex_ids").vertex_ids["smplh"]  # SMPL's table
    smplx_key = {"nose": "nose", "left_eye": "leye", "right_eye": "reye", "left_ear": "lear",
                 "right_ear": "rear"}  # fmt: skip
    face_slots = HMR19_FROM_J24[14:]
    assert [J24_NAMES[j] for j in face_slots] == list(COCO_NAMES[:5])
    facts = dict(zip(VERTEX_JOINT_NAMES, VERTEX_JOINT_IDS))  # shared/SMPL_FACTS.md
    for slot, vid in zip(face_slots, HMR_FACE_VERTEX_IDS):
        name = J24_NAMES[slot]
        assert vid == smplx_ids[smplx_key[name]] == facts[name], name
        assert COCO_TO_J24[COCO_NAMES.index(name)] == slot


def test_coco_malformed_annotations_are_counted_with_their_id(tmp_path, capsys):
    rng = seeding.rng()
    good, _ = _coco_ann(rng, 1, 7, 12)
    short, _ = _coco_ann(rng, 2, 7, 12)
    short["keypoints"] = short["keypoints"][:50]
    nobox, _ = _coco_ann(rng, 3, 9, 12)
    del nobox["bbox"]
    flat, _ = _coco_ann(rng, 4, 9, 12)
    flat["bbox"] = [10.0, 10.0, 0.0, 9.0]
    orphan, _ = _coco_ann(rng, 5, 99, 12)
    nokp, _ = _coco_ann(rng, 6, 9, 12)
    del nokp["keypoints"]
    path = _write_coco(tmp_path / "person_keypoints_x.json", IMAGES,
                       [good, short, nobox, flat, orphan, nokp])  # fmt: skip
    out = tmp_path / "o.npz"
    assert main(["--format", "coco", "--src", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 rows" in printed
    assert "2 malformed (e.g. annotation id 2" in printed
    assert "2 bad_bbox (e.g. annotation id 3" in printed
    assert "1 unknown_image (e.g. annotation id 5: image_id 99" in printed


def test_coco_files_that_are_not_keypoint_files(tmp_path, capsys):
    rng = seeding.rng()
    ann, _ = _coco_ann(rng, 1, 7, 12)
    del ann["keypoints"], ann["num_keypoints"]
    inst = tmp_path / "instances_val2017.json"
    inst.write_text(json.dumps({"images": IMAGES, "annotations": [ann], "categories": []}))
    out = tmp_path / "o.npz"
    assert main(["--format", "coco", "--src", str(inst), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "instances" in err and str(inst) in err and not out.exists()
    broken = tmp_path / "person_keypoints_cut.json"
    broken.write_text(inst.read_text()[:40])
    assert main(["--format", "coco", "--src", str(broken), "--out", str(out)]) == 2
    assert str(broken) in capsys.readouterr().err
    # nothing kept: an error, not "wrote 0 rows"
    few, _ = _coco_ann(rng, 2, 7, 5)
    path = _write_coco(tmp_path / "person_keypoints_few.json", IMAGES, [few])
    assert main(["--format", "coco", "--src", str(path), "--out", str(out),
                 "--min-keypoints", "12"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "no row" in err and "1 too_few_keypoints" in err and not out.exists()
    assert main(["--format", "coco", "--src", str(path), "--out", str(out),
                 "--min-keypoints", "13"]) == 2  # fmt: skip
