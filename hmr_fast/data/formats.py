"""The annotation format: one SPIN-style ``.npz`` per dataset split.

Every dataset hmr-fast reads (imported LSP / COCO, the synthetic set, user data) is one
``.npz`` file of per-row arrays plus a directory of images (the *image root*). One row is one
person crop; N rows in total.

Required keys
-------------
``imgname``  (N,) str      image path relative to the image root (``images/im0001.jpg``).
``center``   (N, 2) float  crop centre (x, y) in image pixels (pixel centres at integers).
``scale``    (N,) float    crop box side / 200, i.e. the square crop is ``200 * scale`` pixels.
and at least one of

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
``maskname``  (N,) str       silhouette PNG (0 background, 255 person), relative to the root.
``partname``  (N,) str       part-label PNG, relative to the root: 0 background, 1 head,
                             2 torso, 3 left arm, 4 right arm, 5 left leg, 6 right leg
                             (see ``hmr_fast.render.PART_NAMES``).
Any other keys (e.g. SPIN's ``openpose``, the synthetic set's ``cam_t`` / ``focal``) are kept
as they are and ignored by the loaders.

``load_annotations`` validates the shapes, converts to float32 and fills the missing optional
keys with zeros / empty strings plus the flags ``has_part`` / ``has_S`` (bool scalars) so that
callers never branch on key presence. ``save_annotations`` validates and writes (atomically).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hmr_fast.body.constants import J24_NAMES

NUM_KP = len(J24_NAMES)  # 24
REQUIRED_KEYS = ("imgname", "center", "scale")
STRING_KEYS = ("imgname", "maskname", "partname")
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
    if "part" not in arrays and "S" not in arrays:
        missing.append("part or S")
    if missing:
        raise ValueError(
            f"{source}: annotation file lacks required key(s) {missing}; "
            f"has {sorted(arrays)}. Required: imgname, center, scale and part and/or S."
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
    return n


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
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:  # object arrays need pickle: refuse rather than unpickle
        raise ValueError(
            f"{path}: cannot read without pickle ({exc}); re-save the string arrays "
            "(imgname, ...) with a unicode dtype, e.g. np.asarray(names, dtype=str)"
        ) from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def invalid_rows(ann: dict) -> np.ndarray:
    """(N,) bool: rows whose numbers cannot be trained on.

    A row is invalid when its centre/scale are non-finite or scale <= 0, when a *labelled*
    2D / valid 3D keypoint is non-finite (or its flag is), or when ``has_smpl`` is set and the
    pose / shape contain non-finite values. Unlabelled NaN keypoints are harmless and allowed.
    """
    center, scale = ann["center"], ann["scale"]
    bad = ~np.isfinite(center).all(1) | ~np.isfinite(scale) | (scale <= 0)
    part, s3 = ann["part"], ann["S"]
    flag2 = np.nan_to_num(part[..., 2], nan=1.0)
    bad |= (~np.isfinite(part[..., 2])).any(1)
    bad |= ((flag2 > 0) & ~np.isfinite(part[..., :2]).all(-1)).any(1)
    flag3 = np.nan_to_num(s3[..., 3], nan=1.0)
    bad |= (~np.isfinite(s3[..., 3])).any(1)
    bad |= ((flag3 > 0) & ~np.isfinite(s3[..., :3]).all(-1)).any(1)
    smpl_bad = ~np.isfinite(ann["pose"]).all(1) | ~np.isfinite(ann["shape"]).all(1)
    has_smpl = np.nan_to_num(ann["has_smpl"], nan=1.0) > 0
    bad |= has_smpl & smpl_bad
    bad |= ~np.isfinite(ann["has_smpl"])
    return bad
