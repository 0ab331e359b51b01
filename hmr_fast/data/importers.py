"""Convert public 2D keypoint datasets to the annotation npz (``hmr_fast.data.formats``).

``hmr-fast import-data --format lsp|lsp-extended|coco --src SRC --out X.npz [--split ...]``

* ``lsp``: SRC is the LSP directory (``joints.mat`` + ``images/im0001.jpg`` ...). ``joints`` is
  3 x 14 x 2000 (x, y, flag) with flag 0 = visible, 1 = occluded. ``--split train`` takes the
  first 1000 images, ``test`` the last 1000. Occluded joints keep their (annotated) position
  and get label flag 0 (HMR trains only on visible LSP joints); the crop box is the extent of
  all 14 joints (all are annotated).
* ``lsp-extended``: SRC is the LSPet directory (``joints.mat`` + ``images/im00001.jpg`` ...).
  ``joints`` is 14 x 3 x 10000 with flag 1 = visible. All images are training images. The
  crop box is the extent of the visible joints (invisible ones are not reliably placed), or of
  all joints when fewer than two are visible.
* ``coco``: SRC is a ``person_keypoints_*.json``. Crowd annotations and those without labelled
  keypoints are skipped; the 17 keypoints go to J24 through ``COCO_TO_J24`` with flag
  ``v > 0`` (labelled, visible or not); the crop box is the annotated ``bbox``. ``imgname`` is
  ``--image-prefix`` + ``file_name`` (e.g. ``--image-prefix train2014/``).

Crop convention for all: ``center`` = box centre, ``scale = 1.2 * max(w, h) / 200``.
Keypoint coordinates are copied as they are in the source files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hmr_fast.body.constants import COCO_TO_J24
from hmr_fast.data.formats import NUM_KP, save_annotations

SCALE_FACTOR = 1.2  # crop = 1.2 x the box, in units of 200 px


def box_to_center_scale(x0, y0, x1, y1, factor: float = SCALE_FACTOR):
    """Box corners (arrays (N,)) -> center (N,2), scale (N,) = factor * max(w, h) / 200."""
    x0, y0, x1, y1 = (np.asarray(a, np.float64) for a in (x0, y0, x1, y1))
    center = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    scale = factor * np.maximum(x1 - x0, y1 - y0) / 200.0
    return center.astype(np.float32), scale.astype(np.float32)


def _load_joints(src: Path) -> np.ndarray:
    import scipy.io

    mat_path = src / "joints.mat" if src.is_dir() else src
    if not mat_path.is_file():
        raise FileNotFoundError(f"LSP joints file not found: {mat_path}")
    mat = scipy.io.loadmat(str(mat_path))
    if "joints" not in mat:
        raise ValueError(f"{mat_path}: no 'joints' variable (has {sorted(mat)})")
    return np.asarray(mat["joints"], np.float64)


def import_lsp(src: str | Path, split: str = "train", extended: bool = False) -> dict:
    """LSP / LSP-extended ``joints.mat`` -> annotation dict (see module docstring)."""
    src = Path(src)
    joints = _load_joints(src)
    if extended:
        if joints.ndim != 3 or joints.shape[:2] != (14, 3):
            raise ValueError(f"LSP-extended joints must be 14x3xN, got {joints.shape}")
        kp = joints.transpose(2, 0, 1).copy()  # N,14,3 ; flag 1 = visible
        offset, digits = 0, 5
    else:
        if joints.ndim != 3 or joints.shape[:2] != (3, 14):
            raise ValueError(f"LSP joints must be 3x14xN, got {joints.shape}")
        kp = joints.transpose(2, 1, 0).copy()  # N,14,3 ; flag 0 = visible
        kp[..., 2] = 1.0 - kp[..., 2]
        n_all = kp.shape[0]
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        half = n_all // 2  # 1000 of the 2000 images
        offset = 0 if split == "train" else half
        kp = kp[offset : offset + half]
        digits = 4
    n = kp.shape[0]
    vis = kp[..., 2] > 0
    if extended:
        use = np.where((vis.sum(1) >= 2)[:, None], vis, True)
    else:
        use = np.ones_like(vis)
    xs = np.where(use, kp[..., 0], np.nan)
    ys = np.where(use, kp[..., 1], np.nan)
    center, scale = box_to_center_scale(
        np.nanmin(xs, 1), np.nanmin(ys, 1), np.nanmax(xs, 1), np.nanmax(ys, 1)
    )
    part = np.zeros((n, NUM_KP, 3), np.float32)
    part[:, :14, :2] = kp[..., :2]
    part[:, :14, 2] = vis
    imgname = np.array([f"images/im{offset + i + 1:0{digits}d}.jpg" for i in range(n)])
    return {"imgname": imgname, "center": center, "scale": scale, "part": part}


def import_coco(json_path: str | Path, image_prefix: str = "") -> dict:
    """COCO person-keypoints json -> annotation dict (see module docstring)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {json_path}")
    with open(json_path, encoding="utf-8") as f:
        coco = json.load(f)
    for key in ("images", "annotations"):
        if key not in coco:
            raise ValueError(f"{json_path}: not a COCO keypoints file (no {key!r} list)")
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    names, boxes, parts = [], [], []
    for ann in coco["annotations"]:
        kps = ann.get("keypoints")
        if ann.get("iscrowd", 0) or not kps or ann.get("num_keypoints", 1) == 0:
            continue
        kps = np.asarray(kps, np.float64).reshape(17, 3)
        if not (kps[:, 2] > 0).any():
            continue
        part = np.zeros((NUM_KP, 3), np.float32)
        part[list(COCO_TO_J24), :2] = kps[:, :2]
        part[list(COCO_TO_J24), 2] = kps[:, 2] > 0
        names.append(image_prefix + files[ann["image_id"]])
        boxes.append(ann["bbox"])
        parts.append(part)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    center, scale = box_to_center_scale(
        boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    )
    return {
        "imgname": np.asarray(names, dtype=str),
        "center": center,
        "scale": scale,
        "part": np.asarray(parts, np.float32).reshape(-1, NUM_KP, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast import-data", description=__doc__.split("\n")[0])
    p.add_argument("--format", required=True, choices=["lsp", "lsp-extended", "coco"])
    p.add_argument("--src", required=True, help="LSP directory / joints.mat, or COCO json")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--split", default="train", choices=["train", "test"], help="LSP only")
    p.add_argument("--image-prefix", default="", help="COCO only: prefix for file_name")
    args = p.parse_args(argv)
    try:
        if args.format == "coco":
            ann = import_coco(args.src, args.image_prefix)
        else:
            ann = import_lsp(args.src, args.split, extended=args.format == "lsp-extended")
    except (FileNotFoundError, ValueError) as exc:
        print(f"hmr-fast import-data: {exc}", file=sys.stderr)
        return 2
    path = save_annotations(args.out, **ann)
    print(f"wrote {len(ann['imgname'])} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
