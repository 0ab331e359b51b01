"""MPII Human Pose -> the annotation npz (``hmr-fast import-data --format mpii``).

Two sources, the same output (``imgname``, ``center``, ``scale``, ``part`` in J24):

* The official release's ``mpii_human_pose_v1_u12_1.mat`` (SRC is the file, or a folder
  holding it directly or in ``annotations/``), read with ``scipy.io.loadmat``. Its ``RELEASE``
  struct: ``annolist`` (one entry per image: ``image.name``, ``annorect``), ``img_train``
  (1 = training image; test images have no keypoints and are counted as ``test_image``) and
  ``single_person`` (per image, the 1-based ``annorect`` indices of its separated people).
  Each ``annorect`` has ``annopoints.point`` (``id`` 0..15, ``x``, ``y``, ``is_visible``),
  ``objpos`` (``x``, ``y``) and ``scale`` (the person's height / 200 px). MATLAB's nesting
  comes through loadmat unevenly, and all of it is accepted: an image with one person has an
  ``annorect`` struct, not an array; ``annopoints`` may be missing or empty (counted as
  ``no_annopoints``); one point is a struct, not an array; ``is_visible`` is a number, a
  string ('1' / '0') or empty. ``--mpii-people single`` (default) keeps the
  ``single_person`` people only, as the original HMR's ``mpii_to_tfrecords.py`` (L182, L127);
  ``all`` keeps every annotated person; the others are counted as ``not_single_person``.
* The ``train.h5`` / ``valid.h5`` files that PyTorch projects use (read with h5py, the
  ``mpii`` extra): datasets ``imgname`` (byte strings, or rows of character codes),
  ``center`` (N, 2), ``scale`` (N,), ``part`` (N, 16, 2) and, often, ``visible`` (N, 16).
  A joint is labelled when its coordinates are finite and not both <= 0 (the files store
  unlabelled joints as (0, 0)). Every row is a person (the files hold no single-person flag).

Joints: MPII's 16 (0 R ankle, 1 R knee, 2 R hip, 3 L hip, 4 L knee, 5 L ankle, 6 pelvis,
7 thorax, 8 upper neck, 9 head top, 10 R wrist, 11 R elbow, 12 R shoulder, 13 L shoulder,
14 L elbow, 15 L wrist) go to J24 ``MPII_TO_J24``. Every annotated joint gets label flag 1,
occluded or not (the original does the same, ``mpii_to_tfrecords.py`` L96-98). For the
``--min-visible`` filter a joint counts as visible unless it is marked not visible
(``is_visible`` 0, ``visible`` 0); an unknown visibility counts as visible, as the original
treats every annotated joint.

Crop box: the extent of the labelled joints (the original centres its crop on it,
``mpii_to_tfrecords.py`` L205-208; the LSP importer uses the same), or, with fewer than two
labelled joints, the square of side 200 x ``scale`` around ``objpos`` / ``center``. The
``--min-size`` filter measures MPII's annotated person height, 200 x ``scale`` (the joint
extent when the scale is missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hmr_fast.data.formats import NUM_KP
from hmr_fast.data.importers import Person, PersonFilter, Skips, collect, extent_box

# MPII joint i -> J24 slot MPII_TO_J24[i] (SPIN's preprocess/mpii.py uses the same order).
MPII_TO_J24 = (0, 1, 2, 3, 4, 5, 14, 15, 12, 13, 6, 7, 8, 9, 10, 11)
NUM_MPII_JOINTS = 16
MAT_NAME = "mpii_human_pose_v1_u12_1.mat"
H5_SUFFIXES = (".h5", ".hdf5")
H5_KEYS = ("imgname", "center", "scale", "part")
DEFAULT_IMAGE_PREFIX = "images/"  # the release's images/ folder (SPIN's npz names too)
PEOPLE = ("single", "all")


def import_mpii(
    src: str | Path,
    flt: PersonFilter | None = None,
    image_prefix: str = DEFAULT_IMAGE_PREFIX,
    people: str | None = None,
) -> tuple[dict, Skips]:
    """MPII .mat / .h5 -> (annotation dict, what was skipped) (module docstring).

    ``flt``: default the paper's filters. ``people``: "single" (default for the .mat) or
    "all"; the .h5 files have every row, so only "all" (or None) applies to them.
    """
    path = _resolve(Path(src))
    flt = PersonFilter.defaults("mpii") if flt is None else flt
    if people is not None and people not in PEOPLE:
        raise ValueError(f"--mpii-people must be one of {', '.join(PEOPLE)}, got {people!r}")
    skips = Skips()
    if path.suffix.lower() in H5_SUFFIXES:
        if people == "single":
            raise ValueError(
                f"--mpii-people single: {path} has no single-person flag (the .h5 files list "
                f"people, not images); use the official {MAT_NAME} for that selection"
            )
        return collect(_h5_people(path, image_prefix), flt, skips), skips
    return collect(_mat_people(path, image_prefix, people or "single"), flt, skips), skips


def _resolve(src: Path) -> Path:
    if src.is_dir():
        for cand in (src / MAT_NAME, src / "annotations" / MAT_NAME):
            if cand.is_file():
                return cand
        raise FileNotFoundError(
            f"MPII annotations not found in {src}: expected {MAT_NAME} there or in "
            "annotations/, or pass the .mat / train.h5 / valid.h5 file itself"
        )
    if not src.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {src}")
    return src


def _mpii_person(imgname, joints, labelled, visible, center, scale, example):
    """A :class:`Person` from MPII's 16 joints (16, 2), labelled / visible (16,) bool, the
    annotated centre (2,) and scale (NaN when missing)."""
    joints = np.asarray(joints, np.float64)
    part = np.zeros((NUM_KP, 3), np.float32)
    part[list(MPII_TO_J24), :2] = np.where(labelled[:, None], joints, 0.0)
    part[list(MPII_TO_J24), 2] = labelled
    vis24 = np.zeros(NUM_KP, bool)
    vis24[list(MPII_TO_J24)] = labelled & visible
    extent = extent_box(joints, labelled)
    has_scale = np.isfinite(scale) and scale > 0
    if labelled.sum() >= 2:
        box = extent
    elif has_scale:
        half = 100.0 * scale
        box = np.concatenate([np.asarray(center) - half, np.asarray(center) + half])
    else:
        box = np.full(4, np.nan)
    side = 200.0 * scale if has_scale else None
    size = (side, side) if side is not None else (extent[2] - extent[0], extent[3] - extent[1])
    return Person(imgname, box, size, part, vis24, example)


# ---- the official .mat ----------------------------------------------------------------------


def _as_list(x) -> list:
    """loadmat(squeeze_me=True) gives a struct for one element, an array for several, an
    empty array for none: always a list."""
    if x is None:
        return []
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    return [x]


def _is_empty(x) -> bool:
    return x is None or (isinstance(x, np.ndarray) and x.size == 0)


def _number(x) -> float:
    """A float from a loadmat value (number, 1-element array, numeric string); NaN if none."""
    if isinstance(x, np.ndarray):
        if x.size != 1:
            return float("nan")
        x = x.item()
    if isinstance(x, bytes):
        x = x.decode("ascii", "replace")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _visibility(v) -> bool | None:
    """``is_visible``: 1 / '1' -> True, 0 / '0' -> False, empty / missing / other -> None."""
    if _is_empty(v):
        return None
    n = _number(v)
    return None if not np.isfinite(n) else bool(n)


def _load_release(path: Path):
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except NotImplementedError as exc:  # a v7.3 (HDF5) MAT file
        raise ValueError(
            f"{path}: a MATLAB v7.3 file ({exc}); the official {MAT_NAME} is a v5 file: "
            "download it again"
        ) from None
    except (ValueError, OSError, TypeError) as exc:
        raise ValueError(
            f"{path}: not a readable MATLAB file ({exc}); expected MPII's {MAT_NAME}"
        ) from None
    if "RELEASE" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(
            f"{path}: no 'RELEASE' struct (has {keys}); expected MPII's {MAT_NAME}, or pass a "
            "train.h5 / valid.h5"
        )
    rel = mat["RELEASE"]
    missing = [f for f in ("annolist", "img_train") if not hasattr(rel, f)]
    if missing:
        raise ValueError(f"{path}: RELEASE lacks {missing}; expected MPII's {MAT_NAME}")
    return rel


def _image_name(anno) -> str | None:
    name = getattr(getattr(anno, "image", None), "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name if isinstance(name, str) and name else None


def _rect_person(rect, imgname: str, example: str):
    """One ``annorect`` -> a :class:`Person`, or (reason, example)."""
    ap = getattr(rect, "annopoints", None)
    points = None if _is_empty(ap) else getattr(ap, "point", None)
    if _is_empty(points):
        return "no_annopoints", example
    joints = np.zeros((NUM_MPII_JOINTS, 2))
    labelled = np.zeros(NUM_MPII_JOINTS, bool)
    visible = np.ones(NUM_MPII_JOINTS, bool)
    for pt in _as_list(points):
        jid, x, y = (_number(getattr(pt, k, None)) for k in ("id", "x", "y"))
        if not np.isfinite(jid) or jid != int(jid) or not 0 <= jid < NUM_MPII_JOINTS:
            return "malformed", f"{example}: joint id {getattr(pt, 'id', None)!r} is not 0..15"
        if not (np.isfinite(x) and np.isfinite(y)):
            return "malformed", f"{example}: joint {int(jid)} has no finite x, y"
        j = int(jid)
        joints[j] = x, y
        labelled[j] = True
        vis = _visibility(getattr(pt, "is_visible", None))
        visible[j] = True if vis is None else vis
    objpos = getattr(rect, "objpos", None)
    center = np.array([_number(getattr(objpos, "x", None)), _number(getattr(objpos, "y", None))])
    scale = _number(getattr(rect, "scale", None))
    return _mpii_person(imgname, joints, labelled, visible, center, scale, example)


def _mat_people(path: Path, image_prefix: str, people: str):
    rel = _load_release(path)
    annolist = _as_list(rel.annolist)
    img_train = np.atleast_1d(np.asarray(rel.img_train, np.float64)).ravel()
    if len(img_train) != len(annolist):
        raise ValueError(
            f"{path}: RELEASE.img_train has {len(img_train)} entries for {len(annolist)} "
            "images in annolist"
        )
    single = None
    if people == "single":
        if not hasattr(rel, "single_person"):
            raise ValueError(f"{path}: RELEASE has no 'single_person' field; use --mpii-people all")
        single = _as_list(rel.single_person)
        if len(single) != len(annolist):
            raise ValueError(
                f"{path}: RELEASE.single_person has {len(single)} entries for "
                f"{len(annolist)} images"
            )
    for i, anno in enumerate(annolist):
        rects = _as_list(getattr(anno, "annorect", None))
        name = _image_name(anno)
        where = f"image {i + 1} ({name or 'no name'})"
        if img_train[i] != 1:
            for _ in rects:  # test images carry no keypoints
                yield "test_image", where
            continue
        chosen = None
        if single is not None:
            chosen = {int(v) for v in map(_number, _as_list(single[i])) if np.isfinite(v)}
        for r, rect in enumerate(rects, start=1):
            example = f"{where} person {r}"
            if chosen is not None and r not in chosen:
                yield "not_single_person", example
            elif name is None:
                yield "malformed", f"{example}: the image has no name"
            else:
                yield _rect_person(rect, image_prefix + name, example)


# ---- train.h5 / valid.h5 --------------------------------------------------------------------


def _h5_names(values: np.ndarray, n: int, path: Path) -> list[str]:
    """``imgname``: byte / unicode strings, or (N, L) character codes (NUL-padded)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SOU" and arr.shape == (n,):
        return [
            (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip("\x00 ")
            for v in arr
        ]
    if arr.dtype.kind in "iuf" and arr.ndim == 2 and arr.shape[0] == n:
        return ["".join(chr(int(c)) for c in row if c > 0).strip() for row in arr]
    raise ValueError(
        f"{path}: 'imgname' must hold {n} strings (or {n} rows of character codes), got "
        f"dtype {arr.dtype} shape {arr.shape}"
    )


def _read_h5(path: Path) -> dict:
    try:
        import h5py
    except ImportError:
        raise ModuleNotFoundError(
            f"reading {path} needs the h5py package, which is not installed: "
            "pip install 'hmr-fast[mpii]' (or pip install h5py)",
            name="h5py",
        ) from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(
            f"{path}: not a readable HDF5 file ({exc}); expected MPII's train.h5 / valid.h5"
        ) from None
    with f:
        missing = [k for k in H5_KEYS if k not in f]
        if missing:
            raise ValueError(
                f"{path}: lacks dataset(s) {missing} (has {sorted(f.keys())}); expected MPII's "
                f"train.h5 / valid.h5 with {', '.join(H5_KEYS)}"
            )
        out = {k: f[k][()] for k in H5_KEYS}
        if "visible" in f:
            out["visible"] = f["visible"][()]
    return out


def _h5_people(path: Path, image_prefix: str):
    data = _read_h5(path)
    part = np.asarray(data["part"], np.float64)
    if part.ndim != 3 or part.shape[1:] != (NUM_MPII_JOINTS, 2):
        raise ValueError(f"{path}: 'part' must have shape (N, 16, 2), got {part.shape}")
    n = len(part)
    expect = {"center": (n, 2), "scale": (n,), "visible": (n, NUM_MPII_JOINTS)}
    arrays = {}
    for key, shape in expect.items():
        if key not in data:
            continue
        arr = np.asarray(data[key], np.float64)
        if key == "scale":
            arr = arr.reshape(-1) if arr.size == n else arr
        if arr.shape != shape:
            raise ValueError(f"{path}: {key!r} must have shape {shape}, got {arr.shape}")
        arrays[key] = arr
    names = _h5_names(data["imgname"], n, path)
    labelled = np.isfinite(part).all(-1) & (part > 0).any(-1)
    visible = arrays["visible"] > 0 if "visible" in arrays else np.ones_like(labelled)
    for i in range(n):
        if not names[i]:
            yield "malformed", f"row {i}: empty imgname"
            continue
        yield _mpii_person(
            image_prefix + names[i], part[i], labelled[i], visible[i], arrays["center"][i],
            arrays["scale"][i], f"row {i} ({names[i]})",
        )  # fmt: skip
