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
* ``coco``: SRC is a ``person_keypoints_*.json``. The 17 keypoints go to J24 through
  ``COCO_TO_J24`` with flag ``v > 0`` (labelled, visible or not); the crop box is the annotated
  ``bbox``. ``imgname`` is ``--image-prefix`` + ``file_name`` (e.g. ``--image-prefix
  train2014/``). Skipped, and counted per reason: crowd annotations, people with fewer than
  ``--min-keypoints`` labelled *body* keypoints (the 12 from the shoulders down; SPIN's
  preprocessing keeps only people with all 12, the default), annotations whose ``bbox`` is
  not 4 finite numbers with positive width and height, whose ``image_id`` is not in
  ``images``, or that are malformed (no ``keypoints`` list of 51 numbers, ...), each with an
  example annotation id. An *instances* json (no keypoints at all) is an error.

Crop convention for all: ``center`` = box centre, ``scale = 1.2 * max(w, h) / 200``.
Keypoint coordinates are copied as they are in the source files. The tool exits 1 when it
wrote no row (or could not write the file), 2 for unusable input.
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
COCO_BODY = slice(5, 17)  # shoulders, elbows, wrists, hips, knees, ankles
COCO_MIN_BODY_KEYPOINTS = 12  # SPIN's preprocess/coco.py keeps people with all 12 labelled


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


class Skips:
    """Skipped records counted per reason, with the first example of each."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, example)

    def report(self) -> str:
        if not self.counts:
            return "nothing"
        return ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in self.counts.items())


def _read_coco(json_path: Path) -> dict:
    """The parsed json, checked to be a COCO *keypoints* file. ValueError names the file."""
    if not json_path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{json_path}: not valid JSON ({exc}); download or copy it again"
        ) from None
    if not isinstance(coco, dict):
        raise ValueError(f"{json_path}: not a COCO annotation file (top level is not an object)")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{json_path}: not a COCO keypoints file (no {key!r} list)")
    anns = coco["annotations"]
    if anns and not any(isinstance(a, dict) and "keypoints" in a for a in anns):
        raise ValueError(
            f"{json_path}: an instances file (no annotation has 'keypoints'); use the "
            "person_keypoints_*.json of the same split"
        )
    return coco


def _coco_record(ann, files: dict, min_keypoints: int):
    """One annotation -> (file name, bbox (4,), keypoints (17, 3)) or (reason, message)."""
    if not isinstance(ann, dict):
        return "malformed", f"annotation {ann!r:.40}: not an object"
    aid = ann.get("id", "?")
    if ann.get("iscrowd", 0):
        return "crowd", f"annotation id {aid}"
    try:
        kps = np.asarray(ann["keypoints"], np.float64)
    except KeyError:
        return "malformed", f"annotation id {aid}: no 'keypoints'"
    except (TypeError, ValueError):
        return "malformed", f"annotation id {aid}: 'keypoints' is not a list of numbers"
    if kps.shape != (51,) or not np.isfinite(kps).all():
        return "malformed", f"annotation id {aid}: 'keypoints' must be 51 finite numbers"
    kps = kps.reshape(17, 3)
    body = int((kps[COCO_BODY, 2] > 0).sum())
    if not (kps[:, 2] > 0).any():
        return "no_keypoints", f"annotation id {aid}"
    if body < min_keypoints:
        return "too_few_keypoints", f"annotation id {aid}: {body} of 12 body keypoints labelled"
    if ann.get("image_id") not in files:
        return "unknown_image", f"annotation id {aid}: image_id {ann.get('image_id')!r}"
    try:
        box = np.asarray(ann["bbox"], np.float64)
    except (KeyError, TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all() or (box[2:] <= 0).any():
        return "bad_bbox", f"annotation id {aid}: bbox {ann.get('bbox')!r}"
    return files[ann["image_id"]], box, kps


def import_coco(
    json_path: str | Path, image_prefix: str = "", min_keypoints: int = COCO_MIN_BODY_KEYPOINTS
) -> tuple[dict, Skips]:
    """COCO person-keypoints json -> (annotation dict, what was skipped) (module docstring)."""
    json_path = Path(json_path)
    if not 0 <= int(min_keypoints) <= 12:
        raise ValueError(f"--min-keypoints must be in 0..12 (body keypoints), got {min_keypoints}")
    coco = _read_coco(json_path)
    files = {}
    for img in coco["images"]:
        if isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str):
            files[img["id"]] = img["file_name"]
    skips = Skips()
    names, boxes, parts = [], [], []
    for ann in coco["annotations"]:
        rec = _coco_record(ann, files, int(min_keypoints))
        if len(rec) == 2:
            skips.add(*rec)
            continue
        name, box, kps = rec
        part = np.zeros((NUM_KP, 3), np.float32)
        part[list(COCO_TO_J24), :2] = kps[:, :2]
        part[list(COCO_TO_J24), 2] = kps[:, 2] > 0
        names.append(image_prefix + name)
        boxes.append(box)
        parts.append(part)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    center, scale = box_to_center_scale(
        boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    )
    ann = {
        "imgname": np.asarray(names, dtype=str),
        "center": center,
        "scale": scale,
        "part": np.asarray(parts, np.float32).reshape(-1, NUM_KP, 3),
    }
    return ann, skips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast import-data", description=__doc__.split("\n")[0])
    p.add_argument("--format", required=True, choices=["lsp", "lsp-extended", "coco"])
    p.add_argument("--src", required=True, help="LSP directory / joints.mat, or COCO json")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--split", default="train", choices=["train", "test"], help="LSP only")
    p.add_argument("--image-prefix", default="", help="COCO only: prefix for file_name")
    p.add_argument(
        "--min-keypoints",
        type=int,
        default=COCO_MIN_BODY_KEYPOINTS,
        help="COCO only: keep people with at least this many of the 12 body keypoints "
        "labelled (default 12, SPIN's rule)",
    )
    args = p.parse_args(argv)
    skips = Skips()
    try:
        if args.format == "coco":
            ann, skips = import_coco(args.src, args.image_prefix, args.min_keypoints)
        else:
            ann = import_lsp(args.src, args.split, extended=args.format == "lsp-extended")
    except (FileNotFoundError, ValueError) as exc:
        print(f"hmr-fast import-data: error: {exc}", file=sys.stderr)
        return 2
    n = len(ann["imgname"])
    if n == 0:
        print(
            f"hmr-fast import-data: error: no row to write from {args.src}; skipped: "
            f"{skips.report()}",
            file=sys.stderr,
        )
        return 1
    try:
        path = save_annotations(args.out, **ann)
    except OSError as exc:
        print(f"hmr-fast import-data: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} rows to {path}; skipped: {skips.report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
