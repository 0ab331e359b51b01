"""Evaluation protocols (pure parts against hand computations) and `hmr-fast eval` end to end."""

import json

import numpy as np
import pytest

from hmr_fast.body.constants import LSP_LEFT_HIP, LSP_RIGHT_HIP
from hmr_fast.data.formats import load_annotations, save_annotations
from hmr_fast.eval.metrics import mpjpe, pa_mpjpe
from hmr_fast.eval.protocols import (
    confusion,
    frontal_camera_rows,
    joint_errors_mm,
    pelvis_align,
    segmentation_scores,
)


def test_pelvis_align_puts_hip_midpoint_at_origin():
    rng = np.random.default_rng()
    j = rng.normal(size=(5, 14, 3))
    out = pelvis_align(j)
    mid = (out[:, LSP_LEFT_HIP] + out[:, LSP_RIGHT_HIP]) / 2
    np.testing.assert_allclose(mid, 0, atol=1e-12)
    np.testing.assert_allclose(out[:, 7] - out[:, 4], j[:, 7] - j[:, 4])  # shape unchanged


def test_joint_errors_translation_invariant_and_masked():
    rng = np.random.default_rng()
    gt = np.concatenate([rng.normal(size=(6, 14, 3)), np.ones((6, 14, 1))], -1)
    pred = gt[..., :3] + rng.normal(size=(6, 14, 3)) * 0.05 + rng.normal(size=(6, 1, 3))
    gt[2, 5, 3] = 0  # one invalid joint: the sample is left out
    err = joint_errors_mm(pred, gt)
    keep = [0, 1, 3, 4, 5]
    assert err["valid"].tolist() == [True, True, False, True, True, True]
    p = pred[keep] * 1000
    g = gt[keep, :, :3] * 1000
    hips = [LSP_LEFT_HIP, LSP_RIGHT_HIP]
    p_al = p - p[:, hips].mean(1, keepdims=True)
    g_al = g - g[:, hips].mean(1, keepdims=True)
    ref = np.linalg.norm(p_al - g_al, axis=-1).mean(1)
    np.testing.assert_allclose(err["mpjpe"], ref, rtol=1e-10)
    np.testing.assert_allclose(err["pa_mpjpe"], pa_mpjpe(p, g), rtol=1e-8)
    assert np.all(err["pa_mpjpe"] <= mpjpe(p_al, g_al) + 1e-9)
    assert np.all((0 <= err["pck"]) & (err["pck"] <= 1))


def test_frontal_camera_rows():
    names = np.array(["S9_Walk_1.54138969_000001.jpg", "S9_Walk_1.60457274_000001.jpg",
                      "S11_Sit.58860488_000101.jpg", "S11_Sit.60457274_000101.jpg"])  # fmt: skip
    assert frontal_camera_rows({"imgname": names}).tolist() == [False, True, False, True]
    cams = {"imgname": names, "camera": np.array([0, 3, 2, 3])}
    assert frontal_camera_rows(cams).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="camera"):
        frontal_camera_rows({"imgname": np.array(["a.jpg", "b.jpg"])})


def test_segmentation_scores_hand_example():
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    conf = confusion(pred, gt, 3)
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    s = segmentation_scores(conf)
    assert s["accuracy"] == pytest.approx(6 / 8)
    f1 = [2 * 2 / (3 + 3), 2 * 2 / (2 + 3), 2 * 2 / (3 + 2)]
    assert s["f1"] == pytest.approx(np.mean(f1))
    # Absent classes do not count.
    s7 = segmentation_scores(confusion(pred, gt, 7))
    assert s7["f1"] == pytest.approx(np.mean(f1)) and s7["per_class_f1"][5] is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hmr_fast.data import synth, synth_mocap
    from hmr_fast.train.trainer import main

    root = tmp_path_factory.mktemp("eval")
    assert synth.main(["--out", str(root / "synth"), "--n", "10", "--image-size", "64",
                       "--seed", "7", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert synth_mocap.main(["--out", str(root / "mocap.npz"), "--n", "200"]) == 0
    assert main(["--data", str(root / "synth"), "--mocap", str(root / "mocap.npz"),
                 "--backbone", "resnet18", "--image-size", "64", "--batch-size", "4",
                 "--workers", "0", "--steps", "1", "--out", str(root / "run"),
                 "--log-images-every", "0", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    return root


def test_eval_synth_end_to_end(trained, capsys):
    from hmr_fast.eval.run import main

    out = trained / "synth.json"
    rc = main(["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
               "--protocol", "synth", "--json", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_samples"] == 10 and res["backbone"] == "resnet18"
    for k in ("mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "mean_pose_pa_mpjpe"):
        assert np.isfinite(res[k]) and res[k] > 0, k
    assert res["pa_mpjpe"] <= res["mpjpe"] + 1e-6
    printed = capsys.readouterr().out
    assert "pa_mpjpe" in printed and "mm" in printed


def test_eval_3dhp_and_p2(trained, tmp_path):
    from hmr_fast.eval.run import run_eval

    res = run_eval(trained / "run", trained / "synth", "3dhp", progress=False)
    for k in ("pck", "auc", "pa_pck", "pa_auc"):
        assert 0 <= res[k] <= 100, k
    assert res["pa_mpjpe"] <= res["mpjpe"] + 1e-6
    # Protocol 2 keeps the frontal-camera rows only.
    ann = load_annotations(trained / "synth" / "annotations.npz")
    keep = {k: v for k, v in ann.items() if k not in ("has_part", "has_S")}
    keep["camera"] = np.array([3, 0, 1, 3, 2, 3, 0, 1, 2, 3])
    p2 = tmp_path / "p2"
    p2.mkdir()
    (p2 / "images").symlink_to(trained / "synth" / "images")
    save_annotations(p2 / "annotations.npz", **keep)
    res = run_eval(trained / "run", p2, "h36m-p2", progress=False)
    assert res["num_samples"] == 4 and np.isfinite(res["pa_mpjpe"])
    res1 = run_eval(trained / "run", p2, "h36m-p1", progress=False)
    assert res1["num_samples"] == 10


def test_eval_lsp_seg(trained):
    from hmr_fast.eval.run import run_eval

    res = run_eval(trained / "run", trained / "synth", "lsp-seg", progress=False)
    assert res["num_with_masks"] == 10
    for k in ("parts_accuracy", "parts_f1", "fg_accuracy", "fg_f1"):
        assert 0 <= res[k] <= 1, k


def test_eval_errors(trained, capsys):
    from hmr_fast.eval.run import main

    assert main(["--checkpoint", str(trained / "nope"), "--data", str(trained / "synth")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
                 "--protocol", "h36m_p1"]) == 2  # fmt: skip
    assert "h36m-p1" in capsys.readouterr().err
