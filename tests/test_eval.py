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
    row_trials,
    segmentation_scores,
)
from tests import seeding


def test_pelvis_align_puts_hip_midpoint_at_origin():
    rng = seeding.rng()
    j = rng.normal(size=(5, 14, 3))
    out = pelvis_align(j)
    mid = (out[:, LSP_LEFT_HIP] + out[:, LSP_RIGHT_HIP]) / 2
    np.testing.assert_allclose(mid, 0, atol=1e-12)
    np.testing.assert_allclose(out[:, 7] - out[:, 4], j[:, 7] - j[:, 4])  # shape unchanged


def test_joint_errors_translation_invariant_and_masked():
    rng = seeding.rng()
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
    from hmr_fast.train.cli import main

    root = tmp_path_factory.mktemp("eval")
    assert synth.main(["--out", str(root / "synth"), "--n", "10", "--image-size", "64",
                       "--seed", "7", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert synth_mocap.main(["--out", str(root / "mocap.npz"), "--n", "200"]) == 0
    assert main(["--data", str(root / "synth"), "--mocap", str(root / "mocap.npz"),
                 "--backbone", "resnet18", "--image-size", "64", "--batch-size", "4",
                 "--workers", "0", "--steps", "1", "--out", str(root / "run"),
                 "--log-images-every", "0", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    return root


def test_eval_synth_end_to_end(trained, preds, capsys):
    """`hmr-fast eval --protocol synth` against the written-out reference on the model's own
    predictions (hip-centred MPJPE, Umeyama PA-MPJPE), and its mean-pose baseline against the
    checkpoint's Theta_0 posed by the SMPL layer."""
    import torch

    from hmr_fast.eval.run import main
    from hmr_fast.models.hmr import split_theta
    from hmr_fast.train.build import load_trained_model

    out = trained / "synth.json"
    rc = main(["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
               "--protocol", "synth", "--json", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_samples"] == 10 and res["backbone"] == "resnet18"
    gt = preds["ann"]["S"][:, :14, :3].astype(np.float64)
    mp, pa = _ref_errors(preds["joints"], gt)
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)
    # The baseline predicts Theta_0 for every image.
    model, _ = load_trained_model(trained / "run")
    _, pose, betas = split_theta(model.initial_theta[None].float())
    with torch.no_grad():
        joints0 = model.smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3])
    base = model.smpl.keypoint_regressor.double().numpy() @ joints0.vertices[0].double().numpy()
    mp0, pa0 = _ref_errors(np.repeat(base[None, :14], len(gt), 0), gt)
    assert res["mean_pose_mpjpe"] == pytest.approx(mp0.mean(), rel=1e-4)
    assert res["mean_pose_pa_mpjpe"] == pytest.approx(pa0.mean(), rel=1e-4)
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


def test_eval_lsp_seg(trained, monkeypatch):
    """lsp-seg's aggregation against numbers counted here from the masks: a prediction that
    is the ground truth scores 1, one that is all background scores the background's share
    (accuracy) and 2a / (2a + b) / classes for the macro F1."""
    from hmr_fast.data.datasets import KeypointDataset
    from hmr_fast.eval import protocols
    from hmr_fast.eval.run import run_eval

    res = run_eval(trained / "run", trained / "synth", "lsp-seg", progress=False)
    assert res["num_with_masks"] == 10
    for k in ("parts_accuracy", "parts_f1", "fg_accuracy", "fg_f1"):
        assert 0 <= res[k] <= 1, k
    ds = KeypointDataset(trained / "synth" / "annotations.npz", trained / "synth",
                         image_size=64, train=False, return_masks=True)
    parts = [ds[i]["part_mask"].numpy() for i in range(len(ds))]
    assert all(p.shape == (64, 64) for p in parts) and any(p.any() for p in parts)
    queue = iter(parts)  # rows are scored in order
    monkeypatch.setattr(protocols, "render_part_labels", lambda *a, **k: next(queue))
    perfect = run_eval(trained / "run", trained / "synth", "lsp-seg", progress=False)
    for k in ("parts_accuracy", "parts_f1", "fg_accuracy", "fg_f1"):
        assert perfect[k] == pytest.approx(1.0), k
    monkeypatch.setattr(protocols, "render_part_labels",
                        lambda *a, **k: np.zeros((64, 64), np.int64))
    empty = run_eval(trained / "run", trained / "synth", "lsp-seg", progress=False)
    gt = np.stack(parts)
    background, other = int((gt == 0).sum()), int((gt > 0).sum())
    assert empty["parts_accuracy"] == pytest.approx(background / gt.size)
    assert empty["fg_accuracy"] == pytest.approx(background / gt.size)
    f1_background = 2 * background / (2 * background + other)
    classes = len(np.unique(gt))  # the part classes present; those never predicted score 0
    assert empty["parts_f1"] == pytest.approx(f1_background / classes)
    assert empty["fg_f1"] == pytest.approx(f1_background / 2)


def test_eval_errors(trained, capsys):
    from hmr_fast.eval.run import main

    assert main(["--checkpoint", str(trained / "nope"), "--data", str(trained / "synth")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
                 "--protocol", "h36m_p1"]) == 2  # fmt: skip
    assert "h36m-p1" in capsys.readouterr().err


# --- SPIN's standard test files, built in their exact public layouts -------------------------

# SPIN's preprocess/h36m.py: where the 17 H3.6M joints go in J24 (its `global_idx`), and the
# joint subsets of its constants.py, written out here as the independent reference.
SPIN_H36M_SLOTS = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
SPIN_J14 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18]
SPIN_J17 = SPIN_J14 + [14, 16, 17]
SPIN_H36M_TO_J17 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]
H36M_CAMS = ["54138969", "55011271", "58860488", "60457274"]


@pytest.fixture(scope="module")
def preds(trained):
    """Per-row predictions of the trained model on the synth crops: joints (N, 14, 3),
    vertices (N, V, 3), keypoint regressor, and the synth annotations."""
    import torch

    from hmr_fast.data.datasets import KeypointDataset
    from hmr_fast.train.build import load_trained_model

    model, cfg = load_trained_model(trained / "run")
    ds = KeypointDataset(trained / "synth" / "annotations.npz", trained / "synth",
                         image_size=cfg.image_size, train=False)  # fmt: skip
    imgs = torch.stack([ds[i]["img"] for i in range(len(ds))])
    with torch.no_grad():
        out = model(imgs, return_verts=True)
    return {
        "joints": out["keypoints_3d"][:, :14].double().numpy(),
        "verts": out["vertices"].double().numpy(),
        "regressor": model.smpl.keypoint_regressor.double().numpy(),
        "ann": load_annotations(trained / "synth" / "annotations.npz"),
    }


def _spin_layout(trained, tmp_path, names):
    """Images under <tmp>/h36m/<names> (links to the synth images), annotations apart in
    <tmp>/dataset_extras/, as SPIN keeps them. Returns (extras dir, image root)."""
    ann = load_annotations(trained / "synth" / "annotations.npz")
    root = tmp_path / "h36m"
    for name, src in zip(names, ann["imgname"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(trained / "synth" / src)
    extras = tmp_path / "dataset_extras"
    extras.mkdir()
    return extras, root


def _spin_h36m_S(ann, rng):
    """(N, 24, 4) as SPIN's h36m_valid files: the 17 H3.6M slots valid, no head-top (13)."""
    n = len(ann["imgname"])
    s = np.zeros((n, 24, 4))
    src = ann["S"][:, :, :3].astype(np.float64)
    s[:, :13, :3] = src[:, :13]
    s[:, 18, :3] = src[:, 13] + rng.normal(scale=0.02, size=(n, 3))  # H3.6M head
    s[:, 14, :3] = (src[:, 2] + src[:, 3]) / 2  # pelvis
    s[:, 16, :3] = (s[:, 14, :3] + src[:, 12]) / 2  # spine
    s[:, 17, :3] = src[:, 12] + rng.normal(scale=0.03, size=(n, 3))  # jaw
    s[:, SPIN_H36M_SLOTS, 3] = 1.0
    return s


def _h36m_names(n, cams, style="spin"):
    if style == "spin":  # SPIN: images/S9_Walking.60457274_000001.jpg
        return [f"images/S9_Walking.{H36M_CAMS[c]}_{5 * i + 1:06d}.jpg" for i, c in
                enumerate(cams)]  # fmt: skip
    # H36M-Toolbox: 1-based camera numbers
    return [f"images/s_09_act_02_subact_01_ca_{c + 1:02d}/s_09_act_02_subact_01_ca_{c + 1:02d}"
            f"_{i + 1:06d}.jpg" for i, c in enumerate(cams)]  # fmt: skip


def _ref_errors(pred, gt, pred_root=None, gt_root=None):
    """Reference MPJPE / PA-MPJPE (mm), written out: root alignment then Umeyama."""
    if pred_root is None:
        pred_root = (pred[:, 2] + pred[:, 3]) / 2
        gt_root = (gt[:, 2] + gt[:, 3]) / 2
    p = (pred - pred_root[:, None]) * 1000
    g = (gt - gt_root[:, None]) * 1000
    mp = np.linalg.norm(p - g, axis=-1).mean(1)
    pa = []
    for a, b in zip(p, g):
        a0, b0 = a - a.mean(0), b - b.mean(0)
        u, sv, vt = np.linalg.svd(b0.T @ a0)
        d = np.sign(np.linalg.det(u @ vt))
        r = u @ np.diag([1, 1, d]) @ vt
        scale = (sv * [1, 1, d]).sum() / (a0**2).sum()
        pa.append(np.linalg.norm(scale * a0 @ r.T - b0, axis=-1).mean())
    return mp, np.array(pa)


def test_spin_h36m_p1_file_separate_image_root(trained, preds, tmp_path, capsys):
    """SPIN's h36m_valid_protocol1.npz (imgname, center, scale, S with 17 joints and no
    head-top), annotations in dataset_extras/ and images elsewhere: scored on J24 [0..12, 18]."""
    from hmr_fast.eval.run import main

    rng = np.random.default_rng(0)
    ann = preds["ann"]
    n = len(ann["imgname"])
    names = _h36m_names(n, [i % 4 for i in range(n)])
    extras, root = _spin_layout(trained, tmp_path, names)
    s = _spin_h36m_S(ann, rng)
    npz = extras / "h36m_valid_protocol1.npz"
    np.savez(npz, imgname=names, center=ann["center"].astype(np.float64).tolist(),
             scale=ann["scale"].astype(np.float64).tolist(), S=s.tolist())  # fmt: skip
    out = tmp_path / "p1.json"
    assert main(["--checkpoint", str(trained / "run"), "--data", str(npz), "--image-root",
                 str(root), "--protocol", "h36m-p1", "--json", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["num_samples"] == n and res["skipped_unreadable_images"] == 0
    assert "[0..12, 18]" in res["joint_set"] and "hips" in res["root_alignment"]
    assert "joint_set" in printed and "root_alignment" in printed
    mp, pa = _ref_errors(preds["joints"], s[:, SPIN_J14, :3])
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)


@pytest.mark.parametrize("style", ["spin", "toolbox", "column0", "column1"])
def test_h36m_p2_selects_the_frontal_camera_by_id(trained, preds, tmp_path, style):
    from hmr_fast.eval.run import run_eval

    rng = np.random.default_rng(1)
    ann = preds["ann"]
    n = len(ann["imgname"])
    cams = rng.permutation([0, 1, 2, 3, 3, 0, 1, 3, 2, 3][:n])
    names = _h36m_names(n, cams, "toolbox" if style == "toolbox" else "spin")
    extras, root = _spin_layout(trained, tmp_path, names)
    s = _spin_h36m_S(ann, rng)
    arrays = dict(imgname=names, center=ann["center"], scale=ann["scale"], S=s)
    if style.startswith("column"):  # camera numbers instead of ids in the names
        arrays["imgname"] = [nm.replace(H36M_CAMS[c], "cam") for nm, c in zip(names, cams)]
        for old, new in zip(names, arrays["imgname"]):
            (root / new).symlink_to(root / old)
        arrays["camera"] = cams + (1 if style == "column1" else 0)
    np.savez(extras / "h36m_p2.npz", **arrays)
    res = run_eval(trained / "run", extras / "h36m_p2.npz", "h36m-p2", progress=False,
                   image_root=root)  # fmt: skip
    frontal = cams == 3
    assert res["num_samples"] == frontal.sum()
    assert res["skipped_not_frontal_camera"] == (~frontal).sum()
    mp, pa = _ref_errors(preds["joints"][frontal], s[frontal][:, SPIN_J14, :3])
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)


def test_camera_columns_that_cannot_be_read_are_errors():
    names = np.array(["a.jpg"] * 3)
    with pytest.raises(ValueError, match="0-based from 1-based"):
        frontal_camera_rows({"imgname": names, "camera": np.array([1, 2, 3])})
    with pytest.raises(ValueError, match="both 0 and 4"):
        frontal_camera_rows({"imgname": names, "camera": np.array([0, 4, 3])})
    ids = np.array(["60457274", "54138969", "60457274"])
    assert frontal_camera_rows({"imgname": names, "camera": ids}).tolist() == [True, False, True]
    ca = np.array(["x_ca_04_000001.jpg", "x_ca_03_000001.jpg", "x_ca_01_000001.jpg"])
    assert frontal_camera_rows({"imgname": ca}).tolist() == [True, False, False]


# H3.6M's first / second trial (subaction 1 / 2) of some S9 / S11 videos, from the dataset's
# metadata: the "... 1" video is not always the first trial.
FIRST_TRIAL = [("S9", "Directions_1"), ("S9", "SittingDown"), ("S11", "Phoning_3"),
               ("S11", "Greeting_2"), ("S9", "Discussion_1")]  # fmt: skip
SECOND_TRIAL = [("S9", "Directions"), ("S9", "SittingDown_1"), ("S11", "Phoning_2"),
                ("S11", "Greeting"), ("S9", "Discussion_2")]  # fmt: skip


def test_row_trials_from_names_and_columns():
    def spin(subject, video, cam="60457274"):
        return f"images/{subject}_{video}.{cam}_000001.jpg"

    names = [spin(*v) for v in FIRST_TRIAL + SECOND_TRIAL]
    expect = [0] * len(FIRST_TRIAL) + [1] * len(SECOND_TRIAL)
    assert row_trials({"imgname": np.array(names)}).tolist() == expect
    unknown = [spin("S1", "Directions_1"), spin("S9", "Directions_7"), "images/x.jpg"]
    assert row_trials({"imgname": np.array(unknown)}).tolist() == [-1, -1, -1]
    toolbox = ["s_09_act_02_subact_01_ca_04/s_09_act_02_subact_01_ca_04_000001.jpg",
               "s_11_act_05_subact_02_ca_04/s_11_act_05_subact_02_ca_04_000006.jpg"]  # fmt: skip
    assert row_trials({"imgname": np.array(toolbox)}).tolist() == [0, 1]
    four = np.array(["a.jpg"] * 4)
    assert row_trials({"imgname": four, "subaction": np.array([1, 2, 2, 1])}).tolist() == [
        0, 1, 1, 0]  # fmt: skip
    assert row_trials({"imgname": four, "subaction": np.array([0, 1, 0, 0])}).tolist() == [
        0, 1, 0, 0]  # fmt: skip
    with pytest.raises(ValueError, match="'subaction' column holds only"):
        row_trials({"imgname": four, "subaction": np.array([1, 1, 1, 1])})


@pytest.mark.parametrize("trials", [None, "all", "first"])
def test_h36m_p2_trials(trained, preds, tmp_path, trials):
    """--h36m-p2-trials: both trials (default, SPIN's file) or the first only (HMR's
    evaluate_h36m.py), on a small SPIN-style file of both trials and all four cameras."""
    from hmr_fast.eval.run import main

    rng = np.random.default_rng(3)
    ann = preds["ann"]
    n = len(ann["imgname"])
    cams = rng.permutation([3, 3, 3, 3, 3, 3, 0, 1, 2, 3][:n])
    videos = FIRST_TRIAL + SECOND_TRIAL
    pick = rng.permutation(len(videos))[:n]
    names = [f"images/{videos[k][0]}_{videos[k][1]}.{H36M_CAMS[c]}_{5 * i + 1:06d}.jpg"
             for i, (k, c) in enumerate(zip(pick, cams))]  # fmt: skip
    first = pick < len(FIRST_TRIAL)
    extras, root = _spin_layout(trained, tmp_path, names)
    s = _spin_h36m_S(ann, rng)
    np.savez(extras / "h36m_p2.npz", imgname=names, center=ann["center"], scale=ann["scale"],
             S=s)  # fmt: skip
    out = tmp_path / "p2.json"
    argv = ["--checkpoint", str(trained / "run"), "--data", str(extras / "h36m_p2.npz"),
            "--image-root", str(root), "--protocol", "h36m-p2", "--json", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv + (["--h36m-p2-trials", trials] if trials else [])) == 0
    res = json.loads(out.read_text())
    frontal = cams == 3
    keep = frontal & first if trials == "first" else frontal
    assert res["num_samples"] == keep.sum()
    assert res["skipped_not_frontal_camera"] == (~frontal).sum()
    assert res.get("skipped_not_first_trial", 0) == (frontal & ~first).sum() * (
        trials == "first")  # fmt: skip
    assert res["h36m_p2_trials"].startswith(trials or "all")
    mp, pa = _ref_errors(preds["joints"][keep], s[keep][:, SPIN_J14, :3])
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)


def test_h36m_p2_trials_errors(trained, tmp_path, capsys):
    from hmr_fast.eval.run import main

    base = ["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
            "--no-progress", "--json", str(tmp_path / "x.json")]  # fmt: skip
    # Only protocol 2 reads it: elsewhere it is an error, not silently ignored.
    assert main(base + ["--protocol", "h36m-p1", "--h36m-p2-trials", "first"]) == 2
    assert "--h36m-p2-trials applies to --protocol h36m-p2" in capsys.readouterr().err
    # Names without a trial: "first" cannot select, and says what to add.
    ann = load_annotations(trained / "synth" / "annotations.npz")
    keep = {k: v for k, v in ann.items() if k not in ("has_part", "has_S")}
    keep["camera"] = np.full(len(keep["imgname"]), "60457274")
    p2 = tmp_path / "p2"
    p2.mkdir()
    (p2 / "images").symlink_to(trained / "synth" / "images")
    save_annotations(p2 / "annotations.npz", **keep)
    argv = ["--checkpoint", str(trained / "run"), "--data", str(p2), "--protocol", "h36m-p2",
            "--no-progress", "--json", str(tmp_path / "y.json")]  # fmt: skip
    assert main(argv + ["--h36m-p2-trials", "first"]) == 2
    assert "subaction" in capsys.readouterr().err
    keep["subaction"] = np.arange(len(keep["imgname"])) % 2 + 1
    save_annotations(p2 / "annotations.npz", **keep)
    assert main(argv + ["--h36m-p2-trials", "first"]) == 0
    res = json.loads((tmp_path / "y.json").read_text())
    assert res["num_samples"] == (keep["subaction"] == 1).sum()
    assert res["skipped_not_first_trial"] == (keep["subaction"] == 2).sum()


def test_3dhp_spin_file_with_and_without_the_h36m_regressor(trained, preds, tmp_path):
    """mpi_inf_3dhp_test.npz (imgname, center, scale, part, S): 14 joints with HMR's
    keypoints, SPIN's 17 with J_regressor_h36m (here a seeded stand-in of its shape)."""
    from hmr_fast.eval.run import run_eval

    rng = np.random.default_rng(2)
    ann = preds["ann"]
    n = len(ann["imgname"])
    names = [f"mpi_inf_3dhp_test_set/TS1/imageSequence/img_{i + 1:06d}.jpg" for i in range(n)]
    extras, root = _spin_layout(trained, tmp_path, names)
    s = _spin_h36m_S(ann, rng)
    part = np.zeros((n, 24, 3))
    part[:, SPIN_H36M_SLOTS] = np.concatenate([rng.uniform(0, 64, (n, 17, 2)),
                                               np.ones((n, 17, 1))], -1)  # fmt: skip
    np.savez(extras / "mpi_inf_3dhp_test.npz", imgname=names, center=ann["center"],
             scale=ann["scale"], part=part, S=s)  # fmt: skip
    npz = extras / "mpi_inf_3dhp_test.npz"
    res = run_eval(trained / "run", npz, "3dhp", progress=False, image_root=root)
    assert res["num_samples"] == n and "--joint-regressor" in res["joint_set"]
    g14 = s[:, SPIN_J14, :3]
    p = preds["joints"]
    ref = np.linalg.norm((p - (p[:, 2:3] + p[:, 3:4]) / 2) - (g14 - (g14[:, 2:3] + g14[:, 3:4])
                         / 2), axis=-1) * 1000  # fmt: skip
    assert res["pck"] == pytest.approx(100 * (ref < 150).mean(), abs=1e-6)
    # the 17-joint protocol with a regressor of J_regressor_h36m's shape
    reg = np.zeros((17, preds["verts"].shape[1]))
    for j in range(17):
        reg[j, rng.choice(reg.shape[1], 8, replace=False)] = 1 / 8
    np.save(tmp_path / "J_regressor_h36m.npy", reg)
    res = run_eval(trained / "run", npz, "3dhp", progress=False, image_root=root,
                   joint_regressor=tmp_path / "J_regressor_h36m.npy")  # fmt: skip
    assert res["num_samples"] == n and "17 joints" in res["joint_set"]
    j17 = np.einsum("jv,bvc->bjc", reg, preds["verts"])
    pred17 = j17[:, SPIN_H36M_TO_J17] - j17[:, :1]
    gt17 = s[:, SPIN_J17, :3] - s[:, 14:15, :3]
    err = np.linalg.norm(pred17 - gt17, axis=-1) * 1000
    assert res["mpjpe"] == pytest.approx(err.mean(), rel=1e-4)
    assert res["pck"] == pytest.approx(100 * (err < 150).mean(), abs=1e-6)
    assert res["auc"] == pytest.approx(
        100 * np.mean([(err < t).mean() for t in np.linspace(0, 150, 31)]), abs=1e-6
    )
    with pytest.raises(ValueError, match="17, "):
        np.save(tmp_path / "bad.npy", reg[:14])
        run_eval(trained / "run", npz, "3dhp", progress=False, image_root=root,
                 joint_regressor=tmp_path / "bad.npy")  # fmt: skip


def test_3dpw_file(trained, preds, tmp_path, monkeypatch):
    """3dpw_test.npz (imgname, center, scale, pose, shape, gender; no part / S): ground truth
    from the gendered body (the embedded one here), MPJPE, PA-MPJPE and PVE."""
    import torch

    from hmr_fast import SMPL
    from hmr_fast.eval.run import run_eval

    monkeypatch.delenv("HMR_FAST_SMPL_DIR", raising=False)
    rng = np.random.default_rng(3)
    ann = preds["ann"]
    n = len(ann["imgname"])
    names = [f"imageFiles/downtown_walking_00/image_{i:05d}.jpg" for i in range(n)]
    extras, root = _spin_layout(trained, tmp_path, names)
    pose = rng.normal(scale=0.2, size=(n, 72))
    pose[:, 0] = np.pi  # upright in the camera frame, as 3DPW's global orientations are
    shape = rng.normal(scale=0.5, size=(n, 10))
    gender = ["m" if i % 3 else "f" for i in range(n)]
    gender[4] = "x"  # not a gender: skipped and counted
    np.savez(extras / "3dpw_test.npz", imgname=names, center=ann["center"], scale=ann["scale"],
             pose=pose, shape=shape, gender=gender)  # fmt: skip
    res = run_eval(trained / "run", extras / "3dpw_test.npz", "3dpw", progress=False,
                   image_root=root)  # fmt: skip
    keep = np.array([g in ("m", "f") for g in gender])
    assert res["num_samples"] == keep.sum() and res["skipped_unknown_gender"] == 1
    assert set(res["gt_body"]) == {"male", "female"} and "pve" in res
    # reference: the body layer directly, with the model's keypoint regressor on the GT mesh
    ref_j, ref_v = [], []
    for i in np.nonzero(keep)[0]:
        body = SMPL(None, gender="male" if gender[i] == "m" else "female")
        t = torch.tensor(pose[i : i + 1], dtype=torch.float32)
        out = body(betas=torch.tensor(shape[i : i + 1], dtype=torch.float32),
                   body_pose=t[:, 3:], global_orient=t[:, :3])  # fmt: skip
        v = out.vertices[0].detach().double().numpy()
        ref_v.append(v)
        ref_j.append(preds["regressor"][:14] @ v)
    gj, gv = np.stack(ref_j), np.stack(ref_v)
    pj, pv = preds["joints"][keep], preds["verts"][keep]
    mp, pa = _ref_errors(pj, gj)
    groot, proot = (gj[:, 2] + gj[:, 3]) / 2, (pj[:, 2] + pj[:, 3]) / 2
    pve = np.linalg.norm((pv - proot[:, None]) - (gv - groot[:, None]), axis=-1).mean(1) * 1000
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)
    assert res["pve"] == pytest.approx(pve.mean(), rel=1e-4)


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_and_truncated_images_are_skipped_not_replaced(trained, preds, tmp_path,
                                                                   workers):  # fmt: skip
    from hmr_fast.eval.run import run_eval

    ann = preds["ann"]
    n = len(ann["imgname"])
    names = [f"img/{i}.jpg" for i in range(n)]
    extras, root = _spin_layout(trained, tmp_path, names)
    (root / names[2]).unlink()  # missing
    data = (trained / "synth" / ann["imgname"][6]).read_bytes()
    (root / names[6]).unlink()
    (root / names[6]).write_bytes(data[: len(data) // 2])  # a JPEG cut halfway
    save_annotations(extras / "test.npz", imgname=np.array(names), center=ann["center"],
                     scale=ann["scale"], S=ann["S"])  # fmt: skip
    res = run_eval(trained / "run", extras / "test.npz", "synth", progress=False,
                   image_root=root, workers=workers)  # fmt: skip
    keep = np.ones(n, bool)
    keep[[2, 6]] = False
    assert res["num_samples"] == n - 2 and res["skipped_unreadable_images"] == 2
    mp, pa = _ref_errors(preds["joints"][keep], ann["S"][keep][:, :14, :3].astype(np.float64))
    assert res["mpjpe"] == pytest.approx(mp.mean(), rel=1e-4)
    assert res["pa_mpjpe"] == pytest.approx(pa.mean(), rel=1e-4)


def test_nothing_scored_is_an_error_and_the_cache_is_explicit(trained, preds, tmp_path, capsys):
    from hmr_fast.data.cache import main as cache_main
    from hmr_fast.eval.run import main

    ann = preds["ann"]
    names = [f"img/{i}.jpg" for i in range(len(ann["imgname"]))]
    extras, root = _spin_layout(trained, tmp_path, names)
    npz = save_annotations(extras / "test.npz", imgname=np.array(names), center=ann["center"],
                           scale=ann["scale"], S=ann["S"])  # fmt: skip
    assert cache_main(["--npz", str(npz), "--image-root", str(root), "--image-size", "64",
                       "--workers", "1"]) == 0  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--checkpoint", str(trained / "run"), "--data", str(npz), "--protocol", "synth",
            "--image-root", str(empty), "--no-progress", "--json", str(tmp_path / "r.json")]
    capsys.readouterr()
    assert main(base) == 1  # the cache next to the npz is not used unless named
    err = capsys.readouterr().err
    assert "no sample could be scored" in err and f"{len(names)} unreadable_images" in err
    assert not (tmp_path / "r.json").exists()
    assert main(base + ["--image-cache", "auto"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["num_samples"] == len(names)
    nowhere = [str(tmp_path / "nowhere") if a == str(empty) else a for a in base]
    assert main(nowhere) == 2
    assert "nowhere" in capsys.readouterr().err


def test_eval_checks_its_output_first_and_prints_before_writing(trained, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    import hmr_fast.data.fileio as fileio
    from hmr_fast.eval.run import main

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    args = ["--checkpoint", str(trained / "run"), "--data", str(trained / "synth"),
            "--protocol", "synth", "--no-progress"]  # fmt: skip
    assert main(args + ["--json", str(blocker / "out.json")]) == 2
    captured = capsys.readouterr()
    assert "cannot write the results file" in captured.err and captured.out == ""

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "atomic_write_text", full_disk)
    assert main(args + ["--json", str(tmp_path / "r.json")]) == 1
    captured = capsys.readouterr()
    assert "pa_mpjpe" in captured.out and "No space left" in captured.err


def test_lsp_seg_counts_missing_masks(trained, tmp_path):
    """Masks come from their own root; a listed mask that cannot be read is counted."""
    import shutil

    from hmr_fast.eval.run import run_eval

    ann = load_annotations(trained / "synth" / "annotations.npz")
    masks = tmp_path / "upi-s1h"
    shutil.copytree(trained / "synth" / "masks", masks / "masks")
    shutil.copytree(trained / "synth" / "parts", masks / "parts")
    (masks / ann["maskname"][1]).unlink()
    (masks / ann["partname"][1]).unlink()
    keep = {k: v for k, v in ann.items() if k not in ("has_part", "has_S")}
    keep["maskname"] = keep["maskname"].copy()
    keep["partname"] = keep["partname"].copy()
    keep["maskname"][3] = keep["partname"][3] = ""  # no mask for this row
    npz = save_annotations(tmp_path / "lsp_test.npz", **keep)
    res = run_eval(trained / "run", npz, "lsp-seg", progress=False,
                   image_root=trained / "synth", mask_root=masks)  # fmt: skip
    n = len(ann["imgname"])
    assert res["num_samples"] == n - 2
    assert res["skipped_unreadable_masks"] == 1 and res["skipped_no_mask_listed"] == 1
