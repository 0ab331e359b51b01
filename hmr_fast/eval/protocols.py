"""Evaluation protocols: Human3.6M P1 / P2, MPI-INF-3DHP, LSP part segmentation, synthetic.

All 3D protocols work on the 14 LSP joints of the model (``keypoints_3d[:, :14]``) and the
dataset's ``keypoints_3d`` (14, 4), in millimetres, each skeleton translated so that its pelvis
(the midpoint of the hips) is at the origin. A sample counts when all 14 ground-truth joints
are valid.

* ``h36m-p1``: every row (the test npz holds S9 and S11, all cameras): MPJPE and PA-MPJPE.
* ``h36m-p2``: the frontal camera only (camera index 3, id 60457274, the 4th camera in
  H3.6M's order), chosen by an optional ``camera`` field (3 or 60457274) or the image name,
  reported after Procrustes alignment (PA-MPJPE; MPJPE is printed too).
* ``3dhp``: PCK at 150 mm and AUC over 0..150 mm (31 thresholds), before and after rigid
  (similarity) alignment; MPJPE / PA-MPJPE too.
* ``lsp-seg``: the predicted mesh is rendered in the crop with each vertex labelled by its
  body part (``render.vertex_part_labels``) and compared with the part masks (``partname``)
  and silhouettes: accuracy and macro F1 over the 6 parts + background, and accuracy and F1
  for foreground / background.
* ``synth``: like ``h36m-p1`` plus the same errors of the mean-pose baseline (the model's
  initial Theta_0 for every sample), for held-out synthetic sets.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from hmr_fast.body.constants import LSP_LEFT_HIP, LSP_RIGHT_HIP
from hmr_fast.eval.metrics import auc, mpjpe, pa_mpjpe, pck, procrustes_align

PROTOCOLS = ("h36m-p1", "h36m-p2", "3dhp", "lsp-seg", "synth")
H36M_FRONTAL_CAMERA_ID = "60457274"
H36M_FRONTAL_CAMERA_INDEX = 3
NUM_PART_LABELS = 7  # background + 6 parts


def pelvis_align(joints):
    """Subtract the hip midpoint. joints (N, 14, 3) (LSP order) -> (N, 14, 3)."""
    pelvis = (joints[:, LSP_LEFT_HIP] + joints[:, LSP_RIGHT_HIP]) / 2
    return joints - pelvis[:, None]


def frontal_camera_rows(ann: dict) -> np.ndarray:
    """(N,) bool: rows from H3.6M's frontal camera (protocol 2).

    Uses ``camera`` (index 3 or id 60457274) when the npz has it, else the image name
    (``..._60457274_...`` / ``.60457274.``, or ``cam3`` / ``ca_03`` style names).
    """
    if "camera" in ann:
        cam = np.asarray(ann["camera"]).astype(str)
        return (cam == str(H36M_FRONTAL_CAMERA_INDEX)) | (cam == H36M_FRONTAL_CAMERA_ID)
    names = np.asarray(ann["imgname"]).astype(str)
    pattern = re.compile(rf"{H36M_FRONTAL_CAMERA_ID}|cam_?0?3(?!\d)|ca_0?3(?!\d)", re.I)
    rows = np.array([bool(pattern.search(n)) for n in names])
    if not rows.any():
        raise ValueError(
            "h36m-p2 needs the camera of each row: add a 'camera' field (3 or 60457274) to the "
            "npz, or image names containing the camera id 60457274"
        )
    return rows


def joint_errors_mm(pred_m: np.ndarray, gt: np.ndarray) -> dict:
    """Per-sample MPJPE / PA-MPJPE / PCK / AUC in mm.

    Args:
        pred_m: (N, 14, 3) predicted joints, metres.
        gt: (N, 14, 4) ground-truth joints, metres + validity.
    Returns:
        dict of (M,) arrays over the M samples whose 14 joints are all valid, plus
        ``valid`` (N,) bool.
    """
    valid = (gt[..., 3] > 0).all(1)
    p = pelvis_align(np.asarray(pred_m, np.float64)[valid] * 1000.0)
    g = pelvis_align(np.asarray(gt[valid, :, :3], np.float64) * 1000.0)
    out = {"valid": valid}
    if len(p) == 0:
        return out
    aligned = procrustes_align(p, g)
    out.update(
        mpjpe=mpjpe(p, g),
        pa_mpjpe=pa_mpjpe(p, g),
        pck=pck(p, g, 150.0),
        auc=auc(p, g),
        pa_pck=pck(aligned, g, 150.0),
        pa_auc=auc(aligned, g),
    )
    return out


def summarize_3d(errors: dict, keys) -> dict:
    """Means of the per-sample arrays (mm; PCK/AUC as percentages)."""
    n = int(len(errors.get("mpjpe", [])))
    res = {"num_samples": n}
    for k in keys:
        if n == 0:
            res[k] = float("nan")
            continue
        v = float(np.mean(errors[k]))
        res[k] = 100.0 * v if k.endswith(("pck", "auc")) else v
    return res


# ---- part segmentation ------------------------------------------------------------------


def render_part_labels(vertices, cam, faces, part_of_vertex, image_size: int) -> np.ndarray:
    """(S, S) uint8 part labels (0 background, 1..6) of a predicted mesh in its crop."""
    from hmr_fast.render import face_index_map, face_labels, label_map, weak_perspective_pixels

    px = weak_perspective_pixels(vertices, cam, image_size)
    fidx = face_index_map(px, faces, (image_size, image_size))
    return label_map(fidx, face_labels(part_of_vertex, faces))


def confusion(pred: np.ndarray, gt: np.ndarray, n: int = NUM_PART_LABELS) -> np.ndarray:
    """(n, n) int64 confusion matrix, rows = ground truth, columns = prediction."""
    gt = np.minimum(np.asarray(gt, np.int64).ravel(), n - 1)
    pred = np.minimum(np.asarray(pred, np.int64).ravel(), n - 1)
    return np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)


def segmentation_scores(conf: np.ndarray) -> dict:
    """Accuracy and macro F1 of a confusion matrix (classes absent from both count as 0/0
    and are left out of the mean)."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1)
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), np.nan)
    return {
        "accuracy": float(tp.sum() / max(conf.sum(), 1)),
        "f1": float(np.nanmean(f1[present])) if present.any() else float("nan"),
        "per_class_f1": [None if np.isnan(x) else float(x) for x in f1],
    }


# ---- running a model over a dataset ---------------------------------------------------------


@torch.no_grad()
def predict_dataset(
    model,
    dataset,
    batch_size=32,
    device="cpu",
    workers=0,
    render=False,
    progress=True,
    max_samples=None,
):
    """Run ``model`` over ``dataset`` (eval mode). Returns numpy arrays:
    ``pred_joints`` (N, 14, 3) m, ``gt_joints`` (N, 14, 4), ``index`` (N,), and with
    ``render`` the confusion matrices ``conf_parts`` (7, 7) / ``conf_fg`` (2, 2)."""
    from hmr_fast.demo import model_faces
    from hmr_fast.render import vertex_part_labels
    from hmr_fast.train.trainer import collate

    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    model.eval()
    faces = model_faces(model) if render else None
    part_of_vertex = (
        vertex_part_labels(model.smpl.lbs_weights.detach().cpu().numpy()) if render else None
    )
    preds, gts, idx = [], [], []
    conf_parts = np.zeros((NUM_PART_LABELS, NUM_PART_LABELS), np.int64)
    conf_fg = np.zeros((2, 2), np.int64)
    n_masks = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="eval", unit="img", mininterval=1.0)
    for batch in loader:
        out = model(batch["img"].to(device), return_verts=render)
        preds.append(out["keypoints_3d"][:, :14].float().cpu().numpy())
        gts.append(batch["keypoints_3d"].numpy())
        idx.append(batch["index"].numpy())
        if render:
            verts = out["vertices"].float().cpu().numpy()
            cams = out["cam"].float().cpu().numpy()
            size = batch["img"].shape[-1]
            for i in range(len(verts)):
                if float(batch["has_mask"][i]) <= 0:
                    continue
                n_masks += 1
                lab = render_part_labels(verts[i], cams[i], faces, part_of_vertex, size)
                conf_parts += confusion(lab, batch["part_mask"][i].numpy())
                conf_fg += confusion(lab > 0, batch["silhouette"][i].numpy() > 0, 2)
        if bar is not None:
            bar.update(len(batch["img"]))
    if bar is not None:
        bar.close()
    res = {
        "pred_joints": np.concatenate(preds) if preds else np.zeros((0, 14, 3)),
        "gt_joints": np.concatenate(gts) if gts else np.zeros((0, 14, 4)),
        "index": np.concatenate(idx) if idx else np.zeros((0,), np.int64),
    }
    if render:
        res.update(conf_parts=conf_parts, conf_fg=conf_fg, num_with_masks=n_masks)
    return res


@torch.no_grad()
def keypoints_from_theta(model, theta: torch.Tensor) -> torch.Tensor:
    """HMR's 19 keypoints (B, 19, 3) of Thetas (B, 85) through the model's SMPL layer."""
    from hmr_fast.models.hmr import split_theta
    from hmr_fast.ops.reference import rodrigues

    _, pose, betas = split_theta(theta)
    rot = rodrigues(pose.reshape(-1, 3)).reshape(len(theta), 24, 3, 3)
    dtype = getattr(model.smpl, "dtype", torch.float32)
    out = model.smpl(
        betas=betas.to(dtype),
        body_pose=rot[:, 1:].to(dtype),
        global_orient=rot[:, :1].to(dtype),
        pose2rot=False,
        return_verts=False,
    )
    return out.keypoints


def mean_theta(model, mocap=None) -> torch.Tensor:
    """Theta_0 (85,): the mocap mean (as HMR initialises it) when ``mocap`` is an existing
    file, else the model's (trained) initial Theta."""
    from pathlib import Path

    if mocap and Path(mocap).is_file():
        from hmr_fast.models.hmr import initial_theta

        return initial_theta(mocap)
    return model.init_theta.detach().float().cpu()


@torch.no_grad()
def mean_pose_joints(model, n: int, theta0=None) -> np.ndarray:
    """(n, 14, 3) joints (m) of the mean-pose baseline: Theta_0 for every sample."""
    theta0 = mean_theta(model) if theta0 is None else torch.as_tensor(theta0)
    device = next(model.parameters()).device
    joints = keypoints_from_theta(model, theta0.reshape(1, -1).float().to(device))[:, :14]
    return joints.float().cpu().numpy().repeat(n, 0)


def evaluate(
    protocol: str,
    model,
    dataset,
    batch_size=32,
    device="cpu",
    workers=0,
    progress=True,
    max_samples=None,
    theta0=None,
) -> dict:
    """Run one protocol; returns a JSON-able dict of results. ``theta0`` (85,): the
    mean-pose baseline's Theta for ``synth`` (default: the model's initial Theta)."""
    if protocol not in PROTOCOLS:
        from hmr_fast.train.config import unknown_key_error

        raise unknown_key_error(protocol, PROTOCOLS, "protocol")
    render = protocol == "lsp-seg"
    pred = predict_dataset(
        model, dataset, batch_size, device, workers, render, progress, max_samples
    )
    res = {"protocol": protocol, "num_images": int(len(pred["index"]))}
    if render:
        res.update({f"parts_{k}": v for k, v in segmentation_scores(pred["conf_parts"]).items()})
        res.update({f"fg_{k}": v for k, v in segmentation_scores(pred["conf_fg"]).items()})
        res["num_with_masks"] = pred["num_with_masks"]
        if not pred["num_with_masks"]:
            raise ValueError(
                "lsp-seg: no sample has part masks (the npz needs 'partname' / 'maskname')"
            )
        return res
    p, g = pred["pred_joints"], pred["gt_joints"]
    if protocol == "h36m-p2":
        rows = frontal_camera_rows(dataset.ann)[pred["index"]]
        p, g = p[rows], g[rows]
    errors = joint_errors_mm(p, g)
    if protocol == "3dhp":
        keys = ("pck", "auc", "pa_pck", "pa_auc", "mpjpe", "pa_mpjpe")
    else:
        keys = ("mpjpe", "pa_mpjpe")
    res.update(summarize_3d(errors, keys))
    if protocol == "synth":
        base = joint_errors_mm(mean_pose_joints(model, len(g), theta0), g)
        res.update(
            {f"mean_pose_{k}": v for k, v in summarize_3d(base, keys).items() if k != "num_samples"}
        )
    return res
