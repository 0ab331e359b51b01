"""Importers: LSP / LSP-extended joints.mat and COCO json in their real layouts."""

import json

import numpy as np
import pytest
import scipy.io

from hmr_fast.body.constants import J24_NAMES
from hmr_fast.data.formats import load_annotations
from hmr_fast.data.importers import main

COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip


def _box(xy):
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), 1.2 * max(x1 - x0, y1 - y0) / 200


@pytest.mark.parametrize("split", ["train", "test"])
def test_lsp(tmp_path, split):
    rng = np.random.default_rng()
    n = 8
    joints = np.zeros((3, 14, n))
    joints[:2] = rng.uniform(10, 400, (2, 14, n))
    joints[2] = rng.integers(0, 2, (14, n))  # 0 visible, 1 occluded
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    out = tmp_path / "lsp.npz"
    assert (
        main(["--format", "lsp", "--src", str(tmp_path), "--out", str(out), "--split", split]) == 0
    )
    ann = load_annotations(out)
    first = 0 if split == "train" else n // 2
    assert len(ann["imgname"]) == n // 2
    for r in range(n // 2):
        i = first + r
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
    rng = np.random.default_rng()
    n = 5
    joints = np.zeros((14, 3, n))
    joints[:, :2] = rng.uniform(10, 400, (14, 2, n))
    joints[:, 2] = rng.integers(0, 2, (14, n))  # 1 visible
    joints[:, 2, 0] = 0
    joints[3, 2, 0] = 1  # row 0: a single visible joint -> box from all joints
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    out = tmp_path / "lspet.npz"
    assert main(["--format", "lsp-extended", "--src", str(tmp_path), "--out", str(out)]) == 0
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


def test_lsp_wrong_layout(tmp_path):
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((14, 3, 4))})
    assert main(["--format", "lsp", "--src", str(tmp_path), "--out", str(tmp_path / "o.npz")]) == 2


def _coco_ann(rng, k, image_id, n_body, crowd=0):
    """A person annotation with ``n_body`` of the 12 body keypoints labelled (v in 1, 2)."""
    kp = np.concatenate([rng.uniform(0, 500, (17, 2)), rng.integers(1, 3, (17, 1))], 1)
    body = 5 + rng.permutation(12)
    kp[body[n_body:], 2] = 0
    kp[rng.integers(0, 5), 2] = 0  # a face keypoint unlabelled: it does not count
    box = [float(v) for v in rng.uniform(10, 200, 4)]
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


@pytest.mark.parametrize("min_kp", [None, "8"])
def test_coco(tmp_path, min_kp, capsys):
    rng = np.random.default_rng(0)
    anns, expected = [], []
    body_counts = [12, 12, 9, 12, 0, 7, 12, 8]
    for k, nb in enumerate(body_counts):
        ann, kp = _coco_ann(rng, k, 7 if k % 2 else 9, nb, crowd=int(k == 3))
        if nb == 0:
            kp[:, 2] = 0  # nothing labelled at all
            ann["keypoints"] = kp.ravel().tolist()
        anns.append(ann)
        need = 12 if min_kp is None else int(min_kp)
        if k != 3 and nb >= need and (kp[:, 2] > 0).any():
            expected.append((ann, kp))
    path = _write_coco(tmp_path / "person_keypoints_val2017.json", IMAGES, anns)
    out = tmp_path / "coco.npz"
    argv = ["--format", "coco", "--src", str(path), "--out", str(out), "--image-prefix", "val/"]
    assert main(argv + ([] if min_kp is None else ["--min-keypoints", min_kp])) == 0
    printed = capsys.readouterr().out
    assert "1 crowd" in printed and "1 no_keypoints" in printed
    too_few = sum(1 for k, nb in enumerate(body_counts) if k != 3 and 0 < nb < (int(min_kp or 12)))
    assert f"{too_few} too_few_keypoints" in printed
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


def test_coco_malformed_annotations_are_counted_with_their_id(tmp_path, capsys):
    rng = np.random.default_rng(1)
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
    rng = np.random.default_rng(2)
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
    assert main(["--format", "coco", "--src", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no row" in err and "1 too_few_keypoints" in err and not out.exists()
    assert main(["--format", "coco", "--src", str(path), "--out", str(out),
                 "--min-keypoints", "13"]) == 2  # fmt: skip
