"""Evaluation protocols: Human3.6M P1 / P2, MPI-INF-3DHP, 3DPW, LSP part segmentation, synthetic.

They run unchanged on SPIN's preprocessed test files (``h36m_valid_protocol1.npz``,
``h36m_valid_protocol2.npz``, ``mpi_inf_3dhp_test.npz``, ``3dpw_test.npz``) and on any npz of
the same format. Every result states what it measured: ``joint_set``, ``predicted_joints``,
``root_alignment``, ``num_samples`` (scored) and ``skipped_<reason>`` counts for the rows that
were not scored. Zero scored samples is an error (:class:`NoSamplesError`), never NaN.

Joints (all distances in mm, per sample, then averaged)
--------------------------------------------------------
* Ground truth of H3.6M / 3DHP files is the ``S`` array (J24 order). SPIN's test files hold
  the 17 H3.6M joints only: no LSP head-top (J24 13), the head is J24 18. They are scored on
  SPIN's subsets, ``J24_TO_J14`` = J24 [0..12, 18] (H3.6M, and 3DHP without a 17-joint
  predictor) and ``J24_TO_J17`` = [0..12, 18, 14, 16, 17] (3DHP). A file without any J24 18
  label but with head-tops (LSP-style files such as ``hmr-fast synth`` output) is scored on
  the 14 LSP joints J24 [0..13] instead, and ``joint_set`` says so.
* Predictions: by default HMR's 14 LSP keypoints (``keypoints_3d[:, :14]``, the model's
  keypoint regressor), compared with the 14-joint set (joint 13 is then the predicted head-top
  against the H3.6M head, as in HMR's evaluation). With ``joint_regressor`` (SPIN's
  ``J_regressor_h36m.npy``, (17, 6890)) the 17 H3.6M joints are regressed from the predicted
  mesh and mapped with SPIN's ``H36M_TO_J14`` / ``H36M_TO_J17``: exactly SPIN's protocol,
  including the 17 joints of 3DHP.
* Root alignment: without ``joint_regressor`` each skeleton is translated so that the midpoint
  of its hips (joints 2 and 3 of every set) is at the origin (HMR's protocol); with it, so that
  its H3.6M pelvis is (regressor joint 0; J24 14 of the ground truth), as SPIN does.
* A sample is scored when every ground-truth joint of the set (and the pelvis it is aligned
  with) is valid; other rows are counted in ``skipped_incomplete_ground_truth``.

Protocols
---------
* ``h36m-p1``: every row (S9 and S11, all cameras): MPJPE and PA-MPJPE.
* ``h36m-p2``: the frontal camera only, chosen by its id 60457274 whatever the naming: a
  ``camera`` field (the id, or an index: 0-based when the column holds a 0, 1-based when it
  holds a 4), or the image name (the id, as in SPIN's ``S9_Walking.60457274_000001.jpg``, or
  1-based ``ca_04`` as in H36M-Toolbox names). Reported after Procrustes alignment (PA-MPJPE;
  MPJPE too). SPIN's ``h36m_valid_protocol2.npz`` holds frontal rows only already.
  Trials (``p2_trials``, ``--h36m-p2-trials``): ``all`` (default) scores both trials of each
  action, as SPIN's ``h36m_valid_protocol2.npz`` (its preprocess/h36m.py keeps every frontal
  sequence) and the papers compared with it; ``first`` keeps the first trial only, as the
  original HMR's ``evaluate_h36m.py`` (``get_h36m_seqs``: protocol 2 = camera 3 and trial 0),
  for the paper's own table. A row's trial is H3.6M's subaction (1 = first): a ``subaction``
  field (1-/2-based, or 0-/1-based when it holds a 0), H36M-Toolbox names (``subact_01``), or
  SPIN's names (``S9_Directions_1.60457274_...``), whose video name is looked up in
  ``H36M_FIRST_TRIAL_VIDEOS`` (H3.6M's metadata: the first trial is not always the "... 1"
  video, e.g. S9 SittingDown, S11 Phoning 3). Rows of the second trial are counted in
  ``skipped_not_first_trial``, rows whose trial cannot be told in ``skipped_unknown_trial``.
* ``3dhp``: PCK at 150 mm and AUC over 0..150 mm (31 thresholds), before and after similarity
  alignment; MPJPE / PA-MPJPE too.
* ``3dpw``: the ground truth comes from ``pose`` / ``shape`` through the SMPL model of each
  row's ``gender`` (``m`` / ``f``), built with ``hmr_fast.SMPL(smpl_dir, gender=...)``: the
  user's gendered SMPL files (``smpl_dir`` or ``$HMR_FAST_SMPL_DIR``), else the embedded
  procedural body (which has no genders; ``gt_body`` says which was used). Its joints are
  regressed from the ground-truth mesh with the same regressor as the prediction's. MPJPE,
  PA-MPJPE and PVE: the mean per-vertex distance after translating each mesh by its own
  root (the root of ``root_alignment``; no rotation or scale), as PARE / 4D-Humans report it.
* ``lsp-seg``: the predicted mesh is rendered in the crop with each vertex labelled by its
  body part (``render.vertex_part_labels``) and compared with the part masks (``partname``)
  and silhouettes (``maskname``), read from the mask root: accuracy and macro F1 over the 6
  parts + background, and accuracy and F1 for foreground / background. Rows without a mask
  and rows whose listed mask cannot be read are counted, not silently dropped.
* ``synth``: like ``h36m-p1`` on the 14 LSP joints, plus the same errors of the mean-pose
  baseline (the model's initial Theta_0 for every sample), for held-out synthetic sets.

Unreadable or truncated images are skipped and counted (``skipped_unreadable_images``) with
any number of DataLoader workers: the dataset is read in its ``on_unreadable="skip"`` mode, so
no other row stands in for them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmr_fast.body.constants import LSP_LEFT_HIP, LSP_RIGHT_HIP
from hmr_fast.eval.metrics import auc, mpjpe, pa_mpjpe, pck, procrustes_align

PROTOCOLS = ("h36m-p1", "h36m-p2", "3dhp", "3dpw", "lsp-seg", "synth")
NUM_PART_LABELS = 7  # background + 6 parts

# SPIN's joint subsets (its constants.py): J24 indices of the ground truth, and indices into the
# 17 joints of J_regressor_h36m for predictions regressed from the mesh.
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)
J24_TO_J14 = J24_TO_J17[:14]
LSP14 = tuple(range(14))  # J24 0..13 = HMR's 14 LSP keypoints (head-top at 13)
H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
H36M_TO_J14 = H36M_TO_J17[:14]
H36M_PELVIS = 0  # pelvis among the 17 H3.6M joints
J24_H36M_HEAD = 18
J24_H36M_PELVIS = 14  # where SPIN's files store the H3.6M pelvis
NUM_H36M_JOINTS = 17

# H3.6M's four cameras in its own order (0-based index = position; 1-based names add one).
H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
H36M_FRONTAL_CAMERA_ID = "60457274"
_CAMERA_ID_RE = re.compile("|".join(H36M_CAMERA_IDS))
_CA_RE = re.compile(r"ca_0?([1-4])(?!\d)", re.I)  # H36M-Toolbox names: 1-based

# Protocol 2's two readings of "which trials" (module docstring).
P2_TRIALS = ("all", "first")
DEFAULT_P2_TRIALS = "all"
P2_TRIALS_TEXT = {
    "all": "all: both trials (SPIN's h36m_valid_protocol2.npz)",
    "first": "first: trial 1 only (the original HMR's evaluate_h36m.py)",
}
# H3.6M's subaction 1 / 2 ("trial") of the test subjects by video name, from the dataset's
# metadata (metadata.xml's mapping; the same in anibali/h36m-fetch's reading of it and in the
# H36M-Toolbox conversions). Numbers in names are not trial numbers.
H36M_TRIAL_VIDEOS = {
    "S9": (
        ("Directions 1", "Discussion 1", "Eating 1", "Greeting 1", "Phoning 1", "Photo 1",
         "Posing 1", "Purchases 1", "Sitting 1", "SittingDown", "Smoking 1", "Waiting 1",
         "WalkDog 1", "Walking 1", "WalkTogether 1"),
        ("Directions", "Discussion 2", "Eating", "Greeting", "Phoning", "Photo", "Posing",
         "Purchases", "Sitting", "SittingDown 1", "Smoking", "Waiting", "WalkDog", "Walking",
         "WalkTogether"),
    ),
    "S11": (
        ("Directions 1", "Discussion 1", "Eating 1", "Greeting 2", "Phoning 3", "Photo 1",
         "Posing 1", "Purchases 1", "Sitting 1", "SittingDown", "Smoking 2", "Waiting 1",
         "WalkDog 1", "Walking 1", "WalkTogether 1"),
        ("Directions", "Discussion 2", "Eating", "Greeting", "Phoning 2", "Photo", "Posing",
         "Purchases", "Sitting", "SittingDown 1", "Smoking", "Waiting", "WalkDog", "Walking",
         "WalkTogether"),
    ),
}  # fmt: skip
_VIDEO_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}  # names in some releases
# SPIN: images/S9_Directions_1.60457274_000001.jpg (the video name, spaces as "_")
_SPIN_NAME_RE = re.compile(r"(?:^|/)(S\d+)_([A-Za-z]+(?:_\d+)?)\.\d{8}_\d+")
_SUBACT_RE = re.compile(r"subact_0?([12])(?!\d)", re.I)  # H36M-Toolbox names: 1-based

GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female",
           "n": "neutral", "neutral": "neutral"}  # fmt: skip


class NoSamplesError(ValueError):
    """A protocol found nothing it could score."""


@dataclass(frozen=True)
class JointSpec:
    """What a 3D protocol compares.

    gt: J24 indices of the ground truth (empty for 3DPW, whose joints come from the mesh);
    pred: indices into the predictor's joints (HMR's 19 keypoints or the 17 H3.6M joints);
    h36m: True when predictions come from ``joint_regressor`` (root = H3.6M pelvis), False
    for HMR's keypoints (root = hip midpoint).
    """

    gt: tuple
    pred: tuple
    h36m: bool
    joint_set: str

    @property
    def root_alignment(self) -> str:
        if self.h36m:
            return "H3.6M pelvis at the origin (regressor joint 0; ground truth J24 14)"
        return "pelvis = midpoint of the hips (joints 2, 3) at the origin, both skeletons"

    @property
    def predicted_joints(self) -> str:
        if self.h36m:
            return "J_regressor_h36m (17 joints) on the predicted mesh, SPIN's H36M_TO_J*"
        return "HMR keypoint regressor, 14 LSP keypoints"


def _set_name(gt: tuple) -> str:
    names = {
        J24_TO_J14: "14 joints: J24 [0..12, 18] (SPIN's J24_TO_J14; head = H3.6M head)",
        J24_TO_J17: "17 joints: J24 [0..12, 18, 14, 16, 17] (SPIN's J24_TO_J17)",
        LSP14: "14 LSP joints: J24 [0..13] (head = LSP head-top)",
    }
    return names[gt]


def joint_spec(protocol: str, ann: dict | None, h36m_regressor: bool) -> JointSpec:
    """The joint sets of a 3D protocol (module docstring) for a file's ground truth."""
    if protocol == "synth" and h36m_regressor:
        raise ValueError(
            "synth is scored on HMR's 14 LSP keypoints; --joint-regressor applies to "
            "h36m-p1, h36m-p2, 3dhp and 3dpw"
        )
    pred14 = H36M_TO_J14 if h36m_regressor else LSP14
    if protocol == "3dpw":
        name = "14 joints regressed from both meshes: " + (
            "H3.6M J14 (SPIN's H36M_TO_J14)" if h36m_regressor else "HMR's 14 LSP keypoints"
        )
        return JointSpec((), pred14, h36m_regressor, name)
    if protocol == "synth":
        return JointSpec(LSP14, LSP14, False, _set_name(LSP14))
    if protocol == "3dhp" and h36m_regressor:
        return JointSpec(J24_TO_J17, H36M_TO_J17, True, _set_name(J24_TO_J17))
    labelled = np.asarray(ann["S"])[..., 3] > 0 if ann is not None else np.zeros((0, 24), bool)
    has_h36m_head = bool(labelled[:, J24_H36M_HEAD].any())
    has_head_top = bool(labelled[:, 13].any())
    gt = J24_TO_J14 if has_h36m_head or not has_head_top else LSP14
    name = _set_name(gt)
    if protocol == "3dhp":
        name += "; the 17-joint set needs --joint-regressor (J_regressor_h36m.npy)"
    return JointSpec(gt, pred14, h36m_regressor, name)


def load_joint_regressor(path, num_vertices: int) -> torch.Tensor:
    """SPIN's ``J_regressor_h36m.npy``: (17, num_vertices) float32. ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--joint-regressor: file not found: {path}")
    try:
        reg = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"--joint-regressor {path}: not a readable .npy array ({exc}); expected SPIN's "
            f"J_regressor_h36m.npy ({NUM_H36M_JOINTS}, {num_vertices})"
        ) from None
    if reg.shape != (NUM_H36M_JOINTS, num_vertices) or not np.isfinite(reg).all():
        raise ValueError(
            f"--joint-regressor {path}: expected a finite ({NUM_H36M_JOINTS}, {num_vertices}) "
            f"array (SPIN's J_regressor_h36m.npy), got shape {reg.shape}"
        )
    return torch.from_numpy(np.asarray(reg, np.float32))


# ---- geometry -------------------------------------------------------------------------------


def hip_midpoint(joints):
    """(N, J, 3) joints of any set starting with the LSP joints -> (N, 3) hip midpoint."""
    return (joints[:, LSP_LEFT_HIP] + joints[:, LSP_RIGHT_HIP]) / 2


def pelvis_align(joints):
    """Subtract the hip midpoint. joints (N, J, 3) (LSP order first) -> (N, J, 3)."""
    return joints - hip_midpoint(joints)[:, None]


def joint_errors_mm(pred_m, gt, pred_root=None, gt_root=None) -> dict:
    """Per-sample MPJPE / PA-MPJPE / PCK / AUC in mm.

    Args:
        pred_m: (N, J, 3) predicted joints, metres.
        gt: (N, J, 4) ground-truth joints, metres + validity.
        pred_root, gt_root: (N, 3) metres, the points moved to the origin; None = the hip
            midpoint of each skeleton.
    Returns:
        dict of (M,) arrays over the M samples whose J joints (and root) are all valid and
        finite, plus ``valid`` (N,) bool.
    """
    pred_m = np.asarray(pred_m, np.float64)
    gt = np.asarray(gt, np.float64)
    valid = (gt[..., 3] > 0).all(1) & np.isfinite(gt[..., :3]).all((1, 2))
    if gt_root is not None:
        valid &= np.isfinite(gt_root).all(1)
    p = pred_m[valid] * 1000.0
    g = gt[valid, :, :3] * 1000.0
    if pred_root is None:
        p, g = pelvis_align(p), pelvis_align(g)
    else:
        p = p - np.asarray(pred_root, np.float64)[valid][:, None] * 1000.0
        g = g - np.asarray(gt_root, np.float64)[valid][:, None] * 1000.0
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


def vertex_errors_mm(pred_v, pred_root, gt_v, gt_root) -> np.ndarray:
    """PVE: (B,) mean per-vertex distance in mm of root-translated meshes.

    pred_v, gt_v: (B, V, 3) metres; pred_root, gt_root: (B, 3) metres.
    """
    d = (pred_v - pred_root[:, None]) - (gt_v - gt_root[:, None])
    return 1000.0 * torch.linalg.vector_norm(d.double(), dim=-1).mean(-1).cpu().numpy()


def summarize_3d(errors: dict, keys) -> dict:
    """Means of the per-sample arrays (mm; PCK/AUC as percentages); NaN only when empty."""
    n = int(len(errors.get("mpjpe", [])))
    res = {"num_samples": n}
    for k in keys:
        if n == 0:
            res[k] = float("nan")
            continue
        v = float(np.mean(errors[k]))
        res[k] = 100.0 * v if k.endswith(("pck", "auc")) else v
    return res


# ---- row selection --------------------------------------------------------------------------


def _numbered_column(vals: np.ndarray, count: int, field: str, fix: str) -> np.ndarray:
    """(N,) 0-based indices from a column of 0-based (0..count-1) or 1-based (1..count)
    numbers, -1 where a value is not such a number. The base is told by a 0 or a ``count``
    in the column; a column with neither, or with both, is a ValueError (``fix``: what to
    store instead)."""
    vals = np.char.strip(np.asarray(vals).astype(str))
    idx = np.array([int(float(v)) if re.fullmatch(r"\d+(\.0*)?", v) else -1 for v in vals])
    ok = (idx >= 0) & (idx <= count)
    present = set(idx[ok].tolist())
    out = np.full(len(vals), -1)
    if not ok.any():
        return out
    if 0 in present and count in present:
        raise ValueError(
            f"h36m-p2: the {field!r} column holds both 0 and {count}, so it is neither 0-based "
            f"nor 1-based; {fix}"
        )
    if 0 not in present and count not in present:
        raise ValueError(
            f"h36m-p2: the {field!r} column holds only {sorted(present)}: cannot tell 0-based "
            f"from 1-based numbering; {fix}"
        )
    out[ok] = idx[ok] - (0 if 0 in present else 1)
    return out


def _camera_from_column(values: np.ndarray) -> np.ndarray:
    """(N,) camera ids from a ``camera`` column of ids or 0-/1-based indices."""
    vals = np.char.strip(np.asarray(values).astype(str))
    out = np.full(len(vals), "", dtype=object)
    is_id = np.isin(vals, H36M_CAMERA_IDS)
    out[is_id] = vals[is_id]
    fix = "store the camera ids (54138969, 55011271, 58860488, 60457274; 60457274 is frontal)"
    idx = _numbered_column(np.where(is_id, "", vals), 4, "camera", fix)
    small = idx >= 0
    out[small] = np.asarray(H36M_CAMERA_IDS, dtype=object)[idx[small]]
    return out


def _camera_from_name(name: str) -> str:
    m = _CAMERA_ID_RE.search(name)
    if m:
        return m.group(0)
    m = _CA_RE.search(name)
    return H36M_CAMERA_IDS[int(m.group(1)) - 1] if m else ""


def row_cameras(ann: dict) -> np.ndarray:
    """(N,) H3.6M camera id of every row ("" where unknown): the ``camera`` field, else the
    image name (see the module docstring)."""
    if "camera" in ann:
        return _camera_from_column(ann["camera"])
    return np.array([_camera_from_name(str(n)) for n in ann["imgname"]], dtype=object)


def known_cameras(ann: dict) -> np.ndarray:
    """``row_cameras``, raising ValueError when no row's camera can be told."""
    cams = row_cameras(ann)
    if not (cams != "").any():
        raise ValueError(
            "h36m-p2 needs the camera of each row: add a 'camera' field (the id 60457274, or "
            "the camera index) to the npz, or image names containing the camera id "
            "(..._60457274_...) or a 1-based 'ca_04'"
        )
    return cams


def frontal_camera_rows(ann: dict) -> np.ndarray:
    """(N,) bool: rows from H3.6M's frontal camera 60457274 (protocol 2)."""
    return known_cameras(ann) == H36M_FRONTAL_CAMERA_ID


def _trial_from_name(name: str) -> int:
    """0 / 1 for H3.6M's subaction 1 / 2 from an image name, -1 when it cannot be told."""
    m = _SUBACT_RE.search(name)
    if m:
        return int(m.group(1)) - 1
    m = _SPIN_NAME_RE.search(name)
    if not m or m.group(1) not in H36M_TRIAL_VIDEOS:
        return -1
    video = m.group(2).replace("_", " ")
    base, _, num = video.partition(" ")
    video = " ".join(filter(None, (_VIDEO_ALIASES.get(base, base), num)))
    for trial, videos in enumerate(H36M_TRIAL_VIDEOS[m.group(1)]):
        if video in videos:
            return trial
    return -1


def row_trials(ann: dict) -> np.ndarray:
    """(N,) 0 for H3.6M's first trial (subaction 1), 1 for the second, -1 where unknown: the
    ``subaction`` field, else the image name (see the module docstring)."""
    if "subaction" in ann:
        fix = "store H3.6M's subaction numbers 1 and 2"
        return _numbered_column(ann["subaction"], 2, "subaction", fix)
    return np.array([_trial_from_name(str(n)) for n in ann["imgname"]], dtype=int)


def resolve_p2_trials(protocol: str, p2_trials: str | None) -> str:
    """The trials reading to use: ``p2_trials`` checked, or the default when None. A value
    for another protocol than ``h36m-p2`` is a ValueError (it would be silently ignored)."""
    if p2_trials is None:
        return DEFAULT_P2_TRIALS
    if p2_trials not in P2_TRIALS:
        raise ValueError(
            f"--h36m-p2-trials must be one of {', '.join(P2_TRIALS)}, got {p2_trials!r}"
        )
    if protocol != "h36m-p2":
        raise ValueError(f"--h36m-p2-trials applies to --protocol h36m-p2 only, not {protocol!r}")
    return p2_trials


def known_trials(ann: dict) -> np.ndarray:
    """``row_trials``, raising ValueError when no row's trial can be told."""
    trials = row_trials(ann)
    if not (trials >= 0).any():
        raise ValueError(
            "h36m-p2 with --h36m-p2-trials first needs the trial of each row: add a "
            "'subaction' field (H3.6M's subaction, 1 or 2) to the npz, or image names with "
            "'subact_01' (H36M-Toolbox) or SPIN's 'S9_<video>.<camera>_<frame>' form; or "
            "use --h36m-p2-trials all"
        )
    return trials


def row_genders(ann: dict) -> np.ndarray:
    """(N,) 'male' / 'female' / 'neutral' from the ``gender`` field, "" where not understood."""
    vals = np.char.lower(np.char.strip(np.asarray(ann["gender"]).astype(str)))
    if not (vals != "").any():
        raise ValueError(
            "3dpw needs the gender of every row ('gender': 'm' / 'f', as in SPIN's "
            "3dpw_test.npz): the ground truth comes from the gendered SMPL model"
        )
    return np.array([GENDERS.get(v, "") for v in vals], dtype=object)


def select_rows(
    protocol: str, dataset, spec: JointSpec | None, max_samples=None,
    p2_trials: str = DEFAULT_P2_TRIALS,
):  # fmt: skip
    """Dataset positions a protocol can score, and {reason: count} of the rows it cannot.

    Rows are left out before the model runs: other cameras (``h36m-p2``) and, with
    ``p2_trials="first"``, the second trial, incomplete ground truth, no SMPL label or unknown
    gender (``3dpw``), no mask listed (``lsp-seg``).
    """
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    rows = np.asarray(dataset.rows[:n])
    ann = dataset.ann
    keep = np.ones(n, bool)
    skipped = {}

    def drop(reason, mask):
        mask = mask & keep
        if mask.any():
            skipped[reason] = skipped.get(reason, 0) + int(mask.sum())
        keep[mask] = False

    if protocol == "h36m-p2":
        cams = known_cameras(ann)
        drop("unknown_camera", cams[rows] == "")
        drop("not_frontal_camera", cams[rows] != H36M_FRONTAL_CAMERA_ID)
        if p2_trials == "first":
            trials = known_trials(ann)
            drop("unknown_trial", trials[rows] < 0)
            drop("not_first_trial", trials[rows] != 0)
    if protocol == "lsp-seg":
        listed = (np.char.str_len(ann["maskname"][rows].astype(str)) > 0) | (
            np.char.str_len(ann["partname"][rows].astype(str)) > 0
        )
        drop("no_mask_listed", ~listed)
    elif protocol == "3dpw":
        drop("no_smpl_ground_truth", ann["has_smpl"][rows] <= 0)
        drop("unknown_gender", row_genders(ann)[rows] == "")
    elif spec is not None:
        s = ann["S"][rows]
        ok = (s[:, list(spec.gt), 3] > 0).all(1)
        if spec.h36m:
            ok &= s[:, J24_H36M_PELVIS, 3] > 0
        drop("incomplete_ground_truth", ~ok)
    return np.nonzero(keep)[0], skipped


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


def _skipping_copy(dataset):
    """The dataset in its "skip" mode: evaluation never lets another row stand in."""
    if getattr(dataset, "on_unreadable", "skip") == "skip":
        return dataset
    ds = copy.copy(dataset)
    ds.on_unreadable = "skip"
    return ds


@torch.no_grad()
def model_batches(
    model, dataset, positions, counts: dict, batch_size=32, device="cpu", workers=0,
    verts=False, progress=True,
):  # fmt: skip
    """Yield (batch, model output) over ``positions`` of ``dataset`` (eval mode), the rows
    whose image could not be read removed from the batch and counted in
    ``counts["unreadable_images"]`` (the flag travels with each sample, so this holds with
    any number of DataLoader workers)."""
    from hmr_fast.data.collate import collate

    subset = torch.utils.data.Subset(_skipping_copy(dataset), [int(p) for p in positions])
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(subset), desc="eval", unit="img", mininterval=1.0)
    try:
        for batch in loader:
            if bar is not None:
                bar.update(len(batch["img"]))
            ok = batch["image_ok"].bool()
            bad = int((~ok).sum())
            if bad:
                counts["unreadable_images"] = counts.get("unreadable_images", 0) + bad
            if not ok.any():
                continue
            batch = {
                k: (v[ok] if isinstance(v, torch.Tensor) else [x for x, o in zip(v, ok) if o])
                for k, v in batch.items()
            }
            yield batch, model(batch["img"].to(device), return_verts=verts)
    finally:
        if bar is not None:
            bar.close()


def predicted_joints(out: dict, spec: JointSpec, regressor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (joints (B, J, 3), root (B, 3)) of the predictions, metres, float32 CPU."""
    if regressor is None:
        joints = out["keypoints_3d"][:, list(spec.pred)].float().cpu()
        return joints, hip_midpoint(joints)
    j17 = torch.einsum("jv,bvc->bjc", regressor, out["vertices"].float().cpu())
    return j17[:, list(spec.pred)], j17[:, H36M_PELVIS]


class GroundTruthBodies:
    """Gendered SMPL layers for 3DPW's ground truth, built on first use.

    ``smpl_dir``: a file/folder for ``hmr_fast.SMPL(smpl_dir, gender=g)``, or None for
    ``$HMR_FAST_SMPL_DIR`` / the embedded procedural body. The joints are regressed from the
    mesh with ``regressor`` (17 H3.6M joints) or, without it, with ``keypoint_regressor``
    (the model's HMR keypoint regressor, so that both sides use the same joints).
    """

    def __init__(self, smpl_dir, keypoint_regressor, regressor=None):
        self.smpl_dir = smpl_dir
        self.keypoint_regressor = keypoint_regressor
        self.regressor = regressor
        self.layers = {}

    def layer(self, gender: str):
        if gender not in self.layers:
            from hmr_fast.body.smpl import SMPL

            self.layers[gender] = SMPL(
                self.smpl_dir, gender=gender, create_betas=False, create_global_orient=False,
                create_body_pose=False, create_transl=False, backend="torch",
                keypoint_regressor=None if self.regressor is not None
                else self.keypoint_regressor.detach().cpu(),
            )  # fmt: skip
        return self.layers[gender]

    def sources(self) -> dict:
        """gender -> the model file used (or the embedded body)."""
        return {
            g: (layer.model_path or "embedded procedural body (no genders; not SMPL)")
            for g, layer in self.layers.items()
        }

    def __call__(self, pose, betas, genders, spec: JointSpec):
        """pose (B, 72), betas (B, 10), genders (B,) -> (joints (B, J, 3), root (B, 3),
        vertices (B, V, 3)), metres, float32 CPU."""
        b = len(pose)
        joints = root = verts = None
        for g in sorted(set(genders)):
            idx = torch.as_tensor([i for i in range(b) if genders[i] == g])
            out = self.layer(g)(
                betas=betas[idx].float(), body_pose=pose[idx, 3:].float(),
                global_orient=pose[idx, :3].float(),
            )  # fmt: skip
            v = out.vertices.float()
            if self.regressor is not None:
                j17 = torch.einsum("jv,bvc->bjc", self.regressor, v)
                j, r = j17[:, list(spec.pred)], j17[:, H36M_PELVIS]
            else:
                j = out.keypoints[:, list(spec.pred)].float()
                r = hip_midpoint(j)
            if verts is None:
                joints = torch.zeros(b, *j.shape[1:])
                root = torch.zeros(b, 3)
                verts = torch.zeros(b, *v.shape[1:])
            joints[idx], root[idx], verts[idx] = j, r, v
        return joints, root, verts


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
    """Theta_0 (85,) of the mean-pose baseline: the one training started from, stored in the
    checkpoint (`load_trained_model` sets ``model.initial_theta``); for checkpoints older than
    that, the mocap mean (as HMR initialises it) when ``mocap`` is an existing file, else the
    model's (trained) initial Theta."""
    stored = getattr(model, "initial_theta", None)
    if stored is not None:
        return torch.as_tensor(stored).detach().float().cpu()
    if mocap and Path(mocap).is_file():
        from hmr_fast.data.mocap import load_mocap
        from hmr_fast.models.hmr import initial_theta

        load_mocap(mocap)  # a damaged file: a ValueError naming it, not a zipfile traceback
        return initial_theta(mocap)
    return model.init_theta.detach().float().cpu()


@torch.no_grad()
def mean_pose_joints(model, n: int, theta0=None) -> np.ndarray:
    """(n, 14, 3) joints (m) of the mean-pose baseline: Theta_0 for every sample."""
    theta0 = mean_theta(model) if theta0 is None else torch.as_tensor(theta0)
    device = next(model.parameters()).device
    joints = keypoints_from_theta(model, theta0.reshape(1, -1).float().to(device))[:, :14]
    return joints.float().cpu().numpy().repeat(n, 0)


# ---- the protocols --------------------------------------------------------------------------


def _score_joints(batches, spec, regressor, ann, gt_bodies=None):
    """Collect predictions and ground truth over the batches.

    -> dict of numpy arrays: pred (M, J, 3), pred_root (M, 3), gt (M, J, 4), gt_root (M, 3),
    index (M,), and pve (M,) for 3DPW.
    """
    cols = {k: [] for k in ("pred", "pred_root", "gt", "gt_root", "index", "pve")}
    for batch, out in batches:
        pred, pred_root = predicted_joints(out, spec, regressor)
        index = batch["index"].numpy()
        if gt_bodies is not None:
            genders = row_genders(ann)[index]
            pose = torch.from_numpy(ann["pose"][index])
            betas = torch.from_numpy(ann["shape"][index])
            gj, groot, gv = gt_bodies(pose, betas, genders, spec)
            gt = torch.cat([gj, torch.ones(*gj.shape[:2], 1)], -1).numpy()
            gt_root = groot.numpy()
            pv = out["vertices"].float().cpu()
            cols["pve"].append(vertex_errors_mm(pv, pred_root, gv, groot))
        else:
            s = ann["S"][index]
            gt = s[:, list(spec.gt)]
            gt_root = s[:, J24_H36M_PELVIS, :3] if spec.h36m else None
        cols["pred"].append(pred.numpy())
        cols["pred_root"].append(pred_root.numpy())
        cols["gt"].append(gt)
        cols["gt_root"].append(gt_root)
        cols["index"].append(index)
    if not cols["index"]:
        return None
    res = {k: np.concatenate(v) for k, v in cols.items() if v and v[0] is not None}
    return res


def _no_samples(protocol: str, n_rows: int, skipped: dict) -> NoSamplesError:
    reasons = ", ".join(f"{v} {k}" for k, v in skipped.items() if v) or "none recorded"
    return NoSamplesError(
        f"{protocol}: no sample could be scored ({n_rows} rows; left out: {reasons}); check "
        "the image root and that the file holds this protocol's ground truth"
    )


def _seg_results(model, dataset, positions, counts, batch_size, device, workers, progress):
    """lsp-seg: confusion matrices over the rows whose masks could be read."""
    from hmr_fast.demo import model_faces
    from hmr_fast.render import vertex_part_labels

    faces = model_faces(model)
    part_of_vertex = vertex_part_labels(model.smpl.lbs_weights.detach().cpu().numpy())
    conf_parts = np.zeros((NUM_PART_LABELS, NUM_PART_LABELS), np.int64)
    conf_fg = np.zeros((2, 2), np.int64)
    n = 0
    batches = model_batches(model, dataset, positions, counts, batch_size, device, workers,
                            True, progress)  # fmt: skip
    for batch, out in batches:
        verts = out["vertices"].float().cpu().numpy()
        cams = out["cam"].float().cpu().numpy()
        size = batch["img"].shape[-1]
        for i in range(len(verts)):
            if int(batch["mask_state"][i]) != 1:
                counts["unreadable_masks"] = counts.get("unreadable_masks", 0) + 1
                continue
            n += 1
            lab = render_part_labels(verts[i], cams[i], faces, part_of_vertex, size)
            conf_parts += confusion(lab, batch["part_mask"][i].numpy())
            conf_fg += confusion(lab > 0, batch["silhouette"][i].numpy() > 0, 2)
    res = {"num_samples": n}
    res.update({f"parts_{k}": v for k, v in segmentation_scores(conf_parts).items()})
    res.update({f"fg_{k}": v for k, v in segmentation_scores(conf_fg).items()})
    return res


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
    *,
    joint_regressor=None,
    smpl_dir=None,
    p2_trials: str | None = None,
) -> dict:
    """Run one protocol; returns a JSON-able dict of results (see the module docstring).

    ``theta0`` (85,): the mean-pose baseline's Theta for ``synth`` (default: the model's
    initial Theta). ``joint_regressor``: path of SPIN's J_regressor_h36m.npy (or a (17, V)
    tensor). ``smpl_dir``: where 3DPW's gendered SMPL files are. ``p2_trials``: "all" or
    "first", ``h36m-p2`` only (None: ``DEFAULT_P2_TRIALS``; the result's ``h36m_p2_trials``
    says which was scored). Raises NoSamplesError when nothing could be scored.
    """
    if protocol not in PROTOCOLS:
        from hmr_fast.train.config import unknown_key_error

        raise unknown_key_error(protocol, PROTOCOLS, "protocol")
    p2_trials = resolve_p2_trials(protocol, p2_trials)
    regressor = joint_regressor
    if regressor is not None and not isinstance(regressor, torch.Tensor):
        regressor = load_joint_regressor(regressor, int(model.smpl.v_template.shape[0]))
    spec = None
    if protocol != "lsp-seg":
        spec = joint_spec(protocol, dataset.ann, regressor is not None)
    positions, skipped = select_rows(protocol, dataset, spec, max_samples, p2_trials)
    n_rows = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    # Rows without a usable crop were dropped by the dataset; with --max-samples only the
    # first usable rows are considered, so they are not counted then.
    skipped["invalid_rows"] = (
        0 if max_samples is not None else int(getattr(dataset, "num_invalid_rows", 0))
    )
    skipped["unreadable_images"] = 0
    res = {"protocol": protocol, "num_rows": n_rows + skipped["invalid_rows"]}
    if protocol == "h36m-p2":
        res["h36m_p2_trials"] = P2_TRIALS_TEXT[p2_trials]
    if protocol == "lsp-seg":
        skipped["unreadable_masks"] = 0
        res.update(_seg_results(model, dataset, positions, skipped, batch_size, device,
                                workers, progress))  # fmt: skip
        res["num_with_masks"] = res["num_samples"]
    else:
        res.update(joint_set=spec.joint_set, predicted_joints=spec.predicted_joints,
                   root_alignment=spec.root_alignment)  # fmt: skip
        gt_bodies = None
        if protocol == "3dpw":
            gt_bodies = GroundTruthBodies(smpl_dir, model.smpl.keypoint_regressor, regressor)
        batches = model_batches(model, dataset, positions, skipped, batch_size, device,
                                workers, regressor is not None or protocol == "3dpw",
                                progress)  # fmt: skip
        cols = _score_joints(batches, spec, regressor, dataset.ann, gt_bodies)
        if cols is not None:
            res.update(_joint_metrics(protocol, cols, spec, model, theta0, skipped))
        else:
            res["num_samples"] = 0
        if gt_bodies is not None:
            res["gt_body"] = gt_bodies.sources()
    res.update({f"skipped_{k}": int(v) for k, v in skipped.items()})
    if res["num_samples"] == 0:
        raise _no_samples(protocol, res["num_rows"], skipped)
    return res


def _joint_metrics(protocol, cols, spec, model, theta0, skipped: dict) -> dict:
    """Summaries of one 3D protocol from the collected columns (``_score_joints``); rows
    with non-finite ground truth are added to ``skipped``."""
    roots = (cols["pred_root"], cols["gt_root"]) if spec.h36m else (None, None)
    errors = joint_errors_mm(cols["pred"], cols["gt"], *roots)
    keys = ("mpjpe", "pa_mpjpe")
    if protocol == "3dhp":
        keys = ("pck", "auc", "pa_pck", "pa_auc", "mpjpe", "pa_mpjpe")
    res = summarize_3d(errors, keys)
    bad = int((~errors["valid"]).sum())
    if bad:
        skipped["incomplete_ground_truth"] = skipped.get("incomplete_ground_truth", 0) + bad
    if protocol == "3dpw" and res["num_samples"]:
        res["pve"] = float(np.mean(cols["pve"][errors["valid"]]))
    if protocol == "synth" and res["num_samples"]:
        g = cols["gt"][errors["valid"]]
        base = joint_errors_mm(mean_pose_joints(model, len(g), theta0), g)
        res.update(
            {f"mean_pose_{k}": v for k, v in summarize_3d(base, keys).items() if k != "num_samples"}
        )
    return res
