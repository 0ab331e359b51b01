"""The annotation format: one SPIN-style ``.npz`` per dataset split.

Every dataset hmr-fast reads (imported LSP / COCO, the synthetic set, user data) is one
``.npz`` file of per-row arrays plus a directory of images (the *image root*). One row is one
person crop; N rows in total.

Required keys
-------------
``imgname``  (N,) str      image path relative to the image root (``images/im0001.jpg``).
``center``   (N, 2) float  crop centre (x, y) in image pixels (pixel centres at integers).
``scale``    (N,) float    crop box side / 200, i.e. the square crop is ``200 * scale`` pixels.
and at least one label: ``part``, ``S`` or ``pose`` (SPIN's ``3dpw_test.npz`` has only
``pose`` / ``shape`` / ``gender``; its H3.6M test files only ``S``)

``part``     (N, 24, 3)    2D keypoints (x, y) in image pixels + a label flag in SPIN's J24
                           order (``hmr_fast.body.constants.J24_NAMES``). Flag > 0 means
                           "labelled" (its value is used as the keypoint's loss weight).
``S``        (N, 24, 4)    3D keypoints (x, y, z) in metres, camera frame (x right, y down,
                           z forward), + a validity flag, in the same J24 order.

Optional keys (missing means "not labelled")
--------------------------------------------
``pose``      (N, 72) float  SMPL axis-angle pose, ``pose[:, :3]`` = global orientation in the
                             camera frame.
``shape``     (N, 10) float  SMPL betas.
``has_smpl``  (N,) float     1 where ``pose`` / ``shape`` are valid. If ``pose`` is present
                             without ``has_smpl``, every row counts as labelled (SPIN does this).
                             ``has_smpl`` > 0 without ``pose`` and ``shape`` is an error (it
                             would train toward a zero pose).
``gender``    (N,) str       ``m`` / ``f`` (SPIN's 3DPW file; also ``male`` / ``female`` /
                             ``neutral``): which SMPL model the ground truth ``pose`` belongs to.
``maskname``  (N,) str       silhouette PNG (0 background, 255 person), relative to the root.
``partname``  (N,) str       part-label PNG, relative to the root: 0 background, 1 head,
                             2 torso, 3 left arm, 4 right arm, 5 left leg, 6 right leg
                             (see ``hmr_fast.render.PART_NAMES``).
Any other keys (e.g. SPIN's ``openpose``, the synthetic set's ``cam_t`` / ``focal``) are kept
as they are and ignored by the loaders.

``load_annotations`` validates the shapes, converts to float32 and fills the missing optional
keys with zeros / empty strings plus the flags ``has_part`` / ``has_S`` (bool scalars) so that
callers never branch on key presence. ``save_annotations`` validates and writes (atomically,
``hmr_fast.data.fileio``).

Bad numbers cost as little as possible (``clean_labels``): a non-finite labelled keypoint
loses its label (that joint only, not the row), a labelled SMPL row with non-finite
parameters loses ``has_smpl``; only a row whose crop (``center`` / ``scale``) is unusable is
dropped (``invalid_rows``). Everything is counted per reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hmr_fast.body.constants import J24_NAMES
from hmr_fast.data.fileio import atomic_savez, is_temp_file, read_npz

NUM_KP = len(J24_NAMES)  # 24
REQUIRED_KEYS = ("imgname", "center", "scale")
LABEL_KEYS = ("part", "S", "pose")  # a file needs at least one
STRING_KEYS = ("imgname", "maskname", "partname", "gender")
# key -> per-row shape (after the leading N)
ROW_SHAPES = {
    "center": (2,),
    "scale": (),
    "part": (NUM_KP, 3),
    "S": (NUM_KP, 4),
    "pose": (72,),
    "shape": (10,),
    "has_smpl": (),
}


def _validate(arrays: dict, source: str) -> int:
    """Check keys and shapes of an annotation dict; returns N. Raises ValueError."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if not any(k in arrays for k in LABEL_KEYS):
        missing.append("part or S or pose")
    if missing:
        raise ValueError(
            f"{source}: annotation file lacks required key(s) {missing}; "
            f"has {sorted(arrays)}. Required: imgname, center, scale and at least one of "
            "part, S, pose."
        )
    n = len(arrays["imgname"])
    for key, row_shape in ROW_SHAPES.items():
        if key not in arrays:
            continue
        arr = np.asarray(arrays[key])
        if key == "scale" and arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if key == "shape" and arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] > 10:
            arr = arr[:, :10]
        if arr.shape != (n, *row_shape):
            raise ValueError(
                f"{source}: key {key!r} must have shape {(n, *row_shape)} (N={n} rows from "
                f"imgname), got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise ValueError(f"{source}: key {key!r} must be numeric, got dtype {arr.dtype}")
    for key in STRING_KEYS:
        if key in arrays:
            arr = np.asarray(arrays[key])
            if arr.shape != (n,):
                raise ValueError(f"{source}: key {key!r} must have shape ({n},), got {arr.shape}")
    _check_smpl_keys(arrays, source)
    return n


def _check_smpl_keys(arrays: dict, source: str) -> None:
    """``has_smpl`` > 0 needs ``pose`` and ``shape``: without them the loss would pull toward
    zeros. ``pose`` without ``shape`` (or the reverse) is incomplete too."""
    has = np.asarray(arrays.get("has_smpl", np.zeros(0)), np.float64)
    labelled = "pose" in arrays or bool(np.nan_to_num(has, nan=1.0).any())
    absent = [k for k in ("pose", "shape") if k not in arrays]
    if labelled and absent:
        why = "has_smpl > 0 in some rows" if "pose" not in arrays else "pose is present"
        raise ValueError(
            f"{source}: {why} but key(s) {absent} are missing: SMPL labels need both 'pose' "
            "(N, 72) and 'shape' (N, 10); add them or set has_smpl to 0"
        )


def _normalise(arrays: dict, n: int) -> dict:
    """Float32 arrays, missing optional keys filled, flags added."""
    out = {k: v for k, v in arrays.items()}
    for key in STRING_KEYS:
        if key in out:
            out[key] = np.asarray(out[key]).astype(str)
        else:
            out[key] = np.full((n,), "", dtype="<U1")
    out["center"] = np.asarray(out["center"], np.float32)
    out["scale"] = np.asarray(out["scale"], np.float32).reshape(n)
    out["has_part"] = np.bool_("part" in arrays)
    out["has_S"] = np.bool_("S" in arrays)
    out["part"] = np.asarray(out.get("part", np.zeros((n, NUM_KP, 3))), np.float32)
    out["S"] = np.asarray(out.get("S", np.zeros((n, NUM_KP, 4))), np.float32)
    if "has_smpl" in arrays:
        has_smpl = np.asarray(arrays["has_smpl"], np.float32)
    else:
        has_smpl = np.full((n,), 1.0 if "pose" in arrays else 0.0, np.float32)
    out["has_smpl"] = has_smpl
    out["pose"] = np.asarray(out.get("pose", np.zeros((n, 72))), np.float32)
    shape = np.asarray(out.get("shape", np.zeros((n, 10))), np.float32)
    out["shape"] = shape[:, :10]
    return out


def load_annotations(path: str | os.PathLike) -> dict:
    """Load and validate an annotation npz (format: module docstring).

    Returns a dict with every key of the format present (missing optional ones filled with
    zeros / ``""``; ``has_smpl`` zero where unlabelled), float32 numeric arrays, plus the
    bool scalars ``has_part`` / ``has_S`` saying whether the file had those keys.
    Raises FileNotFoundError for a missing file and ValueError naming the file for a malformed
    one (missing keys, wrong shapes, object arrays).
    """
    path = Path(path)
    arrays = read_npz(
        path, "annotation file", "download, copy or import it again (hmr-fast import-data)"
    )
    n = _validate(arrays, str(path))
    return _normalise(arrays, n)


def save_annotations(path: str | os.PathLike, **arrays) -> Path:
    """Validate ``arrays`` against the format and write them to ``path`` (npz, atomically).

    String arrays are stored with a unicode dtype so that the file loads without pickle.
    Returns the path written.
    """
    path = Path(path)
    n = _validate(arrays, str(path))
    out = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if key in STRING_KEYS:
            arr = arr.astype(str) if n else np.zeros((0,), "<U1")
        elif key in ROW_SHAPES and np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        if key == "scale":
            arr = arr.reshape(n)
        out[key] = arr
    return atomic_savez(path, **out)


def invalid_rows(ann: dict) -> np.ndarray:
    """(N,) bool: rows that cannot be cropped: non-finite centre / scale or scale <= 0.

    Bad labels do not make a row invalid: ``clean_labels`` removes just those labels.
    """
    center, scale = ann["center"], ann["scale"]
    return ~np.isfinite(center).all(1) | ~np.isfinite(scale) | (scale <= 0)


def clean_labels(ann: dict) -> tuple[dict, dict]:
    """Unlabel what is non-finite, keep the rest of the row.

    * a labelled 2D keypoint (flag > 0) with a non-finite coordinate, or a non-finite flag,
      gets flag 0 and coordinates 0 (the other joints keep their labels);
    * the same for 3D keypoints (``S``);
    * a row with ``has_smpl`` > 0 (or a non-finite ``has_smpl``) and non-finite ``pose`` /
      ``shape`` gets ``has_smpl`` 0 and zero parameters.
    Unlabelled non-finite values are zeroed silently: they carry no label.

    Returns (a cleaned copy of ``ann``, counts): ``invalid_joints_2d`` / ``invalid_joints_3d``
    (joints unlabelled), ``invalid_smpl_rows`` (rows unlabelled).
    """
    out = dict(ann)
    counts = {}
    for key, name in (("part", "invalid_joints_2d"), ("S", "invalid_joints_3d")):
        arr = np.array(ann[key], np.float32, copy=True)
        coords, flag = arr[..., :-1], arr[..., -1]
        bad_flag = ~np.isfinite(flag)
        bad = bad_flag | ((flag > 0) & ~np.isfinite(coords).all(-1))
        counts[name] = int(bad.sum())
        unusable = bad | ~np.isfinite(coords).all(-1)
        arr[unusable] = 0.0
        out[key] = arr
    has_smpl = np.asarray(ann["has_smpl"], np.float32)
    labelled = np.nan_to_num(has_smpl, nan=1.0) > 0
    finite = np.isfinite(ann["pose"]).all(1) & np.isfinite(ann["shape"]).all(1)
    bad_smpl = (labelled & ~finite) | ~np.isfinite(has_smpl)
    counts["invalid_smpl_rows"] = int(bad_smpl.sum())
    drop = bad_smpl | ~finite
    out["has_smpl"] = np.where(drop, 0.0, has_smpl).astype(np.float32)
    out["pose"] = np.where(drop[:, None], 0.0, ann["pose"]).astype(np.float32)
    out["shape"] = np.where(drop[:, None], 0.0, ann["shape"]).astype(np.float32)
    return out, counts


def find_annotation_file(data: str | os.PathLike) -> Path:
    """The annotation .npz of ``data``: the file itself, or the one .npz in a folder.

    Temporary files of interrupted writes are not candidates. Among several .npz files,
    ``annotations.npz`` / ``train.npz`` / ``dataset.npz`` win; otherwise a ValueError asks for
    the file.
    """
    path = Path(data)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"data not found: {path} (an annotation .npz or its folder)")
    npzs = sorted(p for p in path.glob("*.npz") if p.is_file() and not is_temp_file(p))
    if not npzs:
        raise FileNotFoundError(f"no annotation .npz in data directory {path}")
    if len(npzs) > 1:
        for preferred in ("annotations.npz", "train.npz", "dataset.npz"):
            if (path / preferred).is_file():
                return path / preferred
        raise ValueError(
            f"data directory {path} holds several .npz files ({[p.name for p in npzs]}); "
            "pass the file itself"
        )
    return npzs[0]
