"""Convert public 2D keypoint datasets to the annotation npz (``hmr_fast.data.formats``).

``hmr-fast import-data --format lsp|lsp-extended|coco|mpii --src SRC --out X.npz [options]``

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
  train2014/``). Skipped, and counted per reason: crowd annotations, people with no labelled
  keypoint, with fewer than ``--min-keypoints`` labelled *body* keypoints (the 12 from the
  shoulders down; SPIN's preprocessing keeps only people with all 12; default 0, off),
  annotations whose ``image_id`` is not in ``images``, whose ``bbox`` is not 4 finite numbers,
  or that are malformed (no ``keypoints`` list of 51 numbers, ...), each with an example
  annotation id. An *instances* json (no keypoints at all) is an error.
* ``mpii``: SRC is MPII's ``mpii_human_pose_v1_u12_1.mat`` (or its folder) or a
  ``train.h5`` / ``valid.h5``; see ``hmr_fast.data.mpii``.

The paper's filters (:class:`PersonFilter`), applied to every format after the checks above,
each with its own skip reason: fewer than ``--min-visible`` visible keypoints
(``too_few_visible``), a person no larger than ``--min-size`` pixels (``too_small``; measured
as ``--size-measure``), and for COCO people with only the face and shoulders labelled
(``face_shoulders_only``). Defaults are the paper's / the original code's values for training
data; ``--split test`` turns them off (an evaluation set is scored whole) unless given.
Every row whose crop box is not finite with a positive width and height is ``bad_bbox``.

Crop convention for all: ``center`` = box centre, ``scale = 1.2 * max(w, h) / 200``.
Keypoint coordinates are copied as they are in the source files. The tool prints what it
wrote and what it skipped (per reason, with an example); it exits 1 when it wrote no row (or
could not write the file), 2 for unusable input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmr_fast.body.constants import COCO_TO_J24
from hmr_fast.data.formats import NUM_KP

FORMATS = ("lsp", "lsp-extended", "coco", "mpii")
SCALE_FACTOR = 1.2  # crop = 1.2 x the box, in units of 200 px
COCO_BODY = slice(5, 17)  # shoulders, elbows, wrists, hips, knees, ankles
COCO_VISIBLE = 2  # COCO's v: 0 not labelled, 1 labelled but not visible, 2 visible

# ---- the paper's filters --------------------------------------------------------------------
# Paper, Sec. 4 "Datasets": in-the-wild images are filtered when "too small or [with] less than
# 6 visible keypoints". akanazawa/hmr src/datasets/coco_to_tfrecords.py:
#   L211-212  get_anns_details(anns, coco, min_vis=6, min_max_height=60)
#   L124      sum(v == 2) >= min_vis and max(bbox[2:]) > min_max_height
#             - counts *visible* keypoints (v == 2) among all 17, face included;
#             - bbox (L112) is the 3-item list [min_pt, w, h] of the person's mask extent, so
#               bbox[2:] is [h]: the person's *height* must exceed 60 px (the docstring, L74,
#               says "max bbox length"; the code tests the height). COCO's ``bbox`` is the
#               box of the same segmentation, so its height is used here.
#   L76-87, L126  skipped when none of ankles, knees, hips, elbows, wrists is labelled
#             (v > 0): "only face & shoulder visible".
# mpii_to_tfrecords.py and lsp_to_tfrecords.py apply none of the three (MPII's only skips a
# person with a single point, L81-83, or with no ankle and no torso length, L163-165); the
# paper states the filters for the in-the-wild sets in general, so the first two are defaults
# for every format here, the third for COCO only.
MIN_VISIBLE = 6  # paper Sec. 4; coco_to_tfrecords.py L212 (min_vis=6), L124 (v == 2)
MIN_SIZE_PX = 60.0  # coco_to_tfrecords.py L212 (min_max_height=60), strictly greater, L124
SIZE_MEASURES = ("height", "max-side")  # "height": what coco_to_tfrecords.py L124 tests
# J24 ankles, knees, hips, wrists, elbows: the joints coco_to_tfrecords.py L76-87 requires one
# of (its points_other_than_faceshoulder, in COCO order 16 14 12 11 13 15 10 8 7 9).
LIMB_J24 = (0, 1, 2, 3, 4, 5, 6, 7, 10, 11)


@dataclass(frozen=True)
class PersonFilter:
    """The paper's person filters (see the comments above for their sources).

    min_visible: keep people with at least this many *visible* keypoints (0: off).
    min_size: keep people larger than this many pixels (0: off), measured as
        ``size_measure``: "height" (the original's test) or "max-side" (max of width, height).
    drop_face_shoulders_only: drop people none of whose ankles, knees, hips, elbows and
        wrists is labelled.
    """

    min_visible: int = MIN_VISIBLE
    min_size: float = MIN_SIZE_PX
    size_measure: str = "height"
    drop_face_shoulders_only: bool = True

    def __post_init__(self):
        if not 0 <= int(self.min_visible) <= NUM_KP:
            raise ValueError(f"--min-visible must be in 0..{NUM_KP}, got {self.min_visible}")
        if not np.isfinite(self.min_size) or self.min_size < 0:
            raise ValueError(f"--min-size must be a number of pixels >= 0, got {self.min_size}")
        if self.size_measure not in SIZE_MEASURES:
            raise ValueError(
                f"--size-measure must be one of {', '.join(SIZE_MEASURES)}, "
                f"got {self.size_measure!r}"
            )

    @classmethod
    def defaults(cls, fmt: str, split: str = "train") -> PersonFilter:
        """The paper's filters for a format's training data; none for a test split."""
        if split == "test":
            return cls(0, 0.0, "height", False)
        return cls(drop_face_shoulders_only=fmt == "coco")

    def describe(self) -> str:
        parts = [
            f"min visible keypoints {self.min_visible}" if self.min_visible else "",
            f"size > {self.min_size:g} px ({self.size_measure})" if self.min_size else "",
            "face-and-shoulders-only people dropped" if self.drop_face_shoulders_only else "",
        ]
        return ", ".join(p for p in parts if p) or "none"

    def reason(self, person: Person) -> tuple[str, str] | None:
        """(reason, example) when ``person`` is filtered out, else None."""
        n = int(np.count_nonzero(person.visible))
        if n < self.min_visible:
            return "too_few_visible", f"{person.example}: {n} visible keypoints"
        w, h = person.size_wh
        size = h if self.size_measure == "height" else max(w, h)
        if self.min_size > 0 and not size > self.min_size:
            return "too_small", f"{person.example}: {self.size_measure} {size:.1f} px"
        if self.drop_face_shoulders_only and not (person.part[list(LIMB_J24), 2] > 0).any():
            return "face_shoulders_only", person.example
        return None


@dataclass
class Person:
    """One well-formed annotation before the filters.

    box: (4,) crop box x0, y0, x1, y1 (pixels); size_wh: the (width, height) the size filter
    measures (the box's, or MPII's annotated person scale); part: (24, 3) J24 keypoints +
    label flag; visible: (24,) bool, what counts as visible for ``min_visible``; example: how
    the skip report names the record.
    """

    imgname: str
    box: np.ndarray
    size_wh: tuple
    part: np.ndarray
    visible: np.ndarray
    example: str


class Skips:
    """Skipped records counted per reason, with the first example of each."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str, count: int = 1) -> None:
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + int(count)
        self.examples.setdefault(reason, example)

    def report(self) -> str:
        if not self.counts:
            return "nothing"
        return ", ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in self.counts.items())


def box_to_center_scale(x0, y0, x1, y1, factor: float = SCALE_FACTOR):
    """Box corners (arrays (N,)) -> center (N,2), scale (N,) = factor * max(w, h) / 200."""
    x0, y0, x1, y1 = (np.asarray(a, np.float64) for a in (x0, y0, x1, y1))
    center = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    scale = factor * np.maximum(x1 - x0, y1 - y0) / 200.0
    return center.astype(np.float32), scale.astype(np.float32)


def collect(people: Iterable[Person | tuple[str, str]], flt: PersonFilter, skips: Skips) -> dict:
    """The annotation dict of the people that pass the checks and ``flt``.

    ``people`` yields :class:`Person` records or (reason, example) pairs for records the
    reader already rejected; every rejection is counted in ``skips``.
    """
    kept: list[Person] = []
    for person in people:
        if not isinstance(person, Person):
            skips.add(*person)
            continue
        box = np.asarray(person.box, np.float64)
        if box.shape != (4,) or not np.isfinite(box).all() or (box[2:] <= box[:2]).any():
            skips.add("bad_bbox", f"{person.example}: box {np.round(box, 1).tolist()}")
            continue
        why = flt.reason(person)
        if why is not None:
            skips.add(*why)
            continue
        kept.append(person)
    boxes = np.asarray([p.box for p in kept], np.float64).reshape(-1, 4)
    center, scale = box_to_center_scale(*boxes.T)
    return {
        "imgname": np.asarray([p.imgname for p in kept], dtype=str),
        "center": center,
        "scale": scale,
        "part": np.asarray([p.part for p in kept], np.float32).reshape(-1, NUM_KP, 3),
    }


def extent_box(xy: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(4,) x0, y0, x1, y1 of the points ``xy`` (J, 2) where ``use`` (J,); NaN when none."""
    pts = np.asarray(xy, np.float64)[np.asarray(use, bool)]
    if len(pts) == 0:
        return np.full(4, np.nan)
    return np.concatenate([pts.min(0), pts.max(0)])


# ---- LSP ------------------------------------------------------------------------------------


def _load_joints(src: Path) -> np.ndarray:
    import scipy.io

    mat_path = src / "joints.mat" if src.is_dir() else src
    if not mat_path.is_file():
        raise FileNotFoundError(f"LSP joints file not found: {mat_path}")
    mat = scipy.io.loadmat(str(mat_path))
    if "joints" not in mat:
        raise ValueError(f"{mat_path}: no 'joints' variable (has {sorted(mat)})")
    return np.asarray(mat["joints"], np.float64)


def _lsp_people(src: Path, split: str, extended: bool):
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
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        half = kp.shape[0] // 2  # 1000 of the 2000 images
        offset = 0 if split == "train" else half
        kp = kp[offset : offset + half]
        digits = 4
    for i, row in enumerate(kp):
        vis = row[:, 2] > 0
        use = vis if (extended and vis.sum() >= 2) else np.ones(14, bool)
        box = extent_box(row[:, :2], use)
        part = np.zeros((NUM_KP, 3), np.float32)
        part[:14, :2] = row[:, :2]
        part[:14, 2] = vis
        visible = np.zeros(NUM_KP, bool)
        visible[:14] = vis
        name = f"images/im{offset + i + 1:0{digits}d}.jpg"
        yield Person(name, box, (box[2] - box[0], box[3] - box[1]), part, visible, name)


def import_lsp(
    src: str | Path, split: str = "train", extended: bool = False, flt: PersonFilter | None = None
) -> tuple[dict, Skips]:
    """LSP / LSP-extended ``joints.mat`` -> (annotation dict, skips) (module docstring).

    ``flt``: default the paper's filters (none for the test split)."""
    fmt = "lsp-extended" if extended else "lsp"
    flt = PersonFilter.defaults(fmt, split) if flt is None else flt
    skips = Skips()
    return collect(_lsp_people(Path(src), split, extended), flt, skips), skips


# ---- COCO -----------------------------------------------------------------------------------


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


def _coco_record(ann, files: dict, min_keypoints: int, image_prefix: str):
    """One annotation -> a :class:`Person`, or (reason, example)."""
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
    if not (kps[:, 2] > 0).any():  # coco_to_tfrecords.py L96: num_keypoints == 0
        return "no_keypoints", f"annotation id {aid}"
    if body < min_keypoints:
        return "too_few_keypoints", f"annotation id {aid}: {body} of 12 body keypoints labelled"
    if ann.get("image_id") not in files:
        return "unknown_image", f"annotation id {aid}: image_id {ann.get('image_id')!r}"
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        return "bad_bbox", f"annotation id {aid}: bbox {ann.get('bbox')!r}"
    part = np.zeros((NUM_KP, 3), np.float32)
    part[list(COCO_TO_J24), :2] = kps[:, :2]
    part[list(COCO_TO_J24), 2] = kps[:, 2] > 0
    visible = np.zeros(NUM_KP, bool)
    visible[list(COCO_TO_J24)] = kps[:, 2] == COCO_VISIBLE
    name = image_prefix + files[ann["image_id"]]
    return Person(name, np.array([x, y, x + w, y + h]), (w, h), part, visible,
                  f"annotation id {aid}")  # fmt: skip


def import_coco(
    json_path: str | Path,
    image_prefix: str = "",
    min_keypoints: int = 0,
    flt: PersonFilter | None = None,
) -> tuple[dict, Skips]:
    """COCO person-keypoints json -> (annotation dict, what was skipped) (module docstring).

    ``min_keypoints``: SPIN's rule (labelled body keypoints, 0..12; 0 = off). ``flt``: default
    the paper's filters."""
    json_path = Path(json_path)
    if not 0 <= int(min_keypoints) <= 12:
        raise ValueError(f"--min-keypoints must be in 0..12 (body keypoints), got {min_keypoints}")
    flt = PersonFilter.defaults("coco") if flt is None else flt
    coco = _read_coco(json_path)
    files = {}
    for img in coco["images"]:
        if isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str):
            files[img["id"]] = img["file_name"]
    skips = Skips()
    records = (
        _coco_record(a, files, int(min_keypoints), image_prefix) for a in coco["annotations"]
    )
    return collect(records, flt, skips), skips


# ---- command line ---------------------------------------------------------------------------
