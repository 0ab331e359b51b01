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


def test_coco(tmp_path):
    rng = np.random.default_rng()
    images = [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}]
    anns, expected = [], []
    for k in range(6):
        kp = np.concatenate([rng.uniform(0, 500, (17, 2)), rng.integers(0, 3, (17, 1))], 1)
        box = [float(v) for v in rng.uniform(10, 200, 4)]
        crowd = int(k == 2)
        if k == 3:
            kp[:, 2] = 0
        ann = {"id": k, "image_id": 7 if k % 2 else 9, "iscrowd": crowd, "bbox": box,
               "keypoints": kp.ravel().tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()),
               "category_id": 1}  # fmt: skip
        anns.append(ann)
        if not crowd and (kp[:, 2] > 0).any():
            expected.append((ann, kp))
    path = tmp_path / "person_keypoints_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    out = tmp_path / "coco.npz"
    argv = ["--format", "coco", "--src", str(path), "--out", str(out), "--image-prefix", "val/"]
    assert main(argv) == 0
    res = load_annotations(out)
    assert len(res["imgname"]) == len(expected) == 4
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
