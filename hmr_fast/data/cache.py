"""Pre-cropped image cache: decode small crops instead of full photographs while training.

``hmr-fast cache-data --npz X.npz --image-root R [--out DIR] [--image-size 224] [--factor 1.25]``
(``DIR`` defaults to ``X_cache/`` next to ``X.npz``: ``KeypointDataset(cache_dir="auto")``,
``hmr-fast train --set image_cache=auto`` and ``hmr-fast eval --image-cache auto`` use it.)

For every row of the annotation npz the square box of side ``factor * 200 * scale`` around
``center`` (no jitter, no flip) is resampled to ``resolution = round(factor * image_size)``
pixels with one ``cv2.warpAffine`` and written as ``DIR/crops/<row>.jpg``. ``DIR/index.npz``
holds ``cropname`` (N,) (``""`` where the source image could not be read), copies of the
rows' ``center`` / ``scale`` (to detect a cache built from another npz), and the scalars
``factor``, ``resolution`` and ``padding`` (what fills the crop beyond the image: ``edge``,
the training default, or ``zero``; a dataset refuses a cache padded otherwise than itself).

``KeypointDataset(..., cache_dir=DIR)`` (or ``"auto"``; never implicitly) then reads the crop and
re-expresses the row in the crop's pixels (``cached_row``): the person's box becomes the
centred square of side ``resolution / factor``, keypoints are mapped with the same affine,
and the augmentation runs unchanged, so a cached sample equals the uncached one up to JPEG
loss and the second resampling. Augmentations that look beyond the cached margin (zoom below
``1 / factor``, large translations or rotations) see the padding of the cached crop instead of
image content at the borders.

Every crop and the index are written atomically (``hmr_fast.data.fileio``). The tool reports
what it skipped per reason (unreadable or truncated source image, unusable centre/scale,
failed write) and exits non-zero when it cached nothing or could not write a crop (a full
disk, a read-only folder): a partial cache is lost output, not success.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from hmr_fast.data.augment import PADDINGS, crop_matrix, warp_image
from hmr_fast.data.fileio import atomic_savez, atomic_write_bytes, read_npz
from hmr_fast.data.formats import invalid_rows, load_annotations
from hmr_fast.data.images import ImageReadError, read_image_bgr

INDEX_NAME = "index.npz"


def default_cache_dir(npz_path) -> Path:
    """Where ``cache-data`` writes and ``KeypointDataset`` looks by default: ``X_cache/``
    next to ``X.npz``."""
    npz_path = Path(npz_path)
    return npz_path.parent / f"{npz_path.stem}_cache"


def cache_matrix(center, scale: float, factor: float, resolution: int) -> np.ndarray:
    """(2, 3) affine: source image pixels -> cached crop pixels."""
    return crop_matrix(center, float(scale) * factor, resolution)


def cached_row(center, scale: float, part: np.ndarray, factor: float, resolution: int):
    """Express a row in cached-crop pixels: -> (center (2,), scale, part (24, 3))."""
    m = cache_matrix(center, scale, factor, resolution)
    part = np.asarray(part, np.float64).copy()
    part[:, :2] = part[:, :2] @ m[:, :2].T + m[:, 2]
    c = (resolution - 1) / 2.0
    return np.array([c, c]), resolution / (factor * 200.0), part


def load_cache_index(
    cache_dir: str | os.PathLike, ann: dict | None = None, padding: str | None = None
) -> dict:
    """Read ``DIR/index.npz``; with ``ann`` check that it was built from the same rows, with
    ``padding`` that it was padded that way (caches from before padding was recorded: zero)."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no cache index at {path} (build it with hmr-fast cache-data)")
    index = read_npz(path, "cache index", "rebuild the cache with hmr-fast cache-data")
    missing = [k for k in ("cropname", "center", "scale", "factor", "resolution") if k not in index]
    if missing:
        raise ValueError(
            f"{path}: not a cache index (lacks {missing}); rebuild it with hmr-fast cache-data"
        )
    if ann is not None:
        # equal_nan: a row with a NaN centre is the same row (never cached) in both files.
        same = len(index["cropname"]) == len(ann["imgname"]) and np.allclose(
            index["center"], ann["center"], atol=1e-3, equal_nan=True
        )
        same = same and np.allclose(index["scale"], ann["scale"], atol=1e-5, equal_nan=True)
        if not same:
            raise ValueError(
                f"cache {cache_dir} was built from different annotations "
                f"({len(index['cropname'])} rows vs {len(ann['imgname'])}); rebuild it"
            )
    built = str(index["padding"]) if "padding" in index else "zero"
    if padding is not None and built != padding:
        raise ValueError(
            f"cache {cache_dir} was padded with {built!r} but the dataset crops with "
            f"{padding!r}; rebuild it with hmr-fast cache-data --padding {padding}"
        )
    index["dir"] = Path(cache_dir)
    return index


def _crop_one(job):
    """-> (row, None) when written, else (row, (reason, message))."""
    row, src, dst, center, scale, factor, resolution, quality, padding = job
    try:
        img = read_image_bgr(src)
    except ImageReadError as exc:
        return row, ("unreadable_images", str(exc))
    m = cache_matrix(center, scale, factor, resolution)
    crop = warp_image(img, m, resolution, padding=padding)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - the JPEG encoder does not fail on a uint8 crop
        return row, ("write_failed", f"{dst}: JPEG encoding failed")
    try:
        atomic_write_bytes(dst, buf.tobytes())
    except OSError as exc:
        return row, ("write_failed", f"{dst}: {exc.strerror or exc}")
    return row, None


def check_cache_args(image_root, image_size, factor, quality) -> None:
    """ValueError / FileNotFoundError naming the argument, before any work."""
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--image-root {root} is not a directory")
    if int(image_size) <= 0:
        raise ValueError(f"--image-size must be a positive number of pixels, got {image_size}")
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ValueError(
            f"--factor must be a finite number >= 1 (the margin kept around the crop), "
            f"got {factor}"
        )
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"--quality must be a JPEG quality in 0..100, got {quality}")


def build_cache(
    npz_path,
    image_root,
    out_dir,
    image_size: int = 224,
    factor: float = 1.25,
    quality: int = 95,
    workers: int = 1,
    progress: bool = True,
    padding: str = "edge",
) -> dict:
    """Write the crops and the index (see module docstring).

    Returns the index dict plus ``skipped``: {reason: count} (``unreadable_images``,
    ``invalid_rows``, ``write_failed``) and ``examples``: {reason: first message}.
    """
    check_cache_args(image_root, image_size, factor, quality)
    ann = load_annotations(npz_path)
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    resolution = int(round(factor * image_size))
    n = len(ann["imgname"])
    usable = ~invalid_rows(ann)
    jobs = [
        (
            i,
            str(Path(image_root) / ann["imgname"][i]),
            str(out / "crops" / f"{i:07d}.jpg"),
            ann["center"][i],
            float(ann["scale"][i]),
            factor,
            resolution,
            quality,
            padding,
        )
        for i in range(n)
        if usable[i]
    ]
    names = np.full(n, "", dtype=object)
    skipped = {"invalid_rows": int((~usable).sum()), "unreadable_images": 0, "write_failed": 0}
    examples = {}
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="cache", unit="img", disable=not progress)

    def record(row, failure):
        if failure is None:
            names[row] = f"crops/{row:07d}.jpg"
        else:
            skipped[failure[0]] += 1
            examples.setdefault(failure[0], failure[1])
        bar.update()

    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for row, failure in pool.imap_unordered(_crop_one, jobs, chunksize=16):
                record(row, failure)
    else:
        for job in jobs:
            record(*_crop_one(job))
    bar.close()
    index = {
        "cropname": names.astype(str),
        "center": ann["center"],
        "scale": ann["scale"],
        "factor": np.float64(factor),
        "resolution": np.int64(resolution),
        "padding": np.str_(padding),
    }
    atomic_savez(out / INDEX_NAME, **index)
    return {**index, "skipped": skipped, "examples": examples}


def skip_report(skipped: dict, examples: dict) -> str:
    """'2 unreadable_images (e.g. ...), 1 write_failed (e.g. ...)' for the non-zero counts."""
    parts = []
    for reason, count in skipped.items():
        if count:
            ex = examples.get(reason)
            parts.append(f"{count} {reason}" + (f" (e.g. {ex})" if ex else ""))
    return ", ".join(parts) if parts else "nothing"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast cache-data", description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True, help="annotation npz")
    p.add_argument("--image-root", required=True)
    p.add_argument("--out", default=None, help="cache directory (default: X_cache/ next to X.npz)")
    p.add_argument("--image-size", type=int, default=224, help="training crop size")
    p.add_argument("--factor", type=float, default=1.25, help="cached margin around the crop")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--padding", choices=tuple(PADDINGS), default="edge",
                   help="what fills a crop beyond the image (the training config's crop_padding)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    try:
        out = args.out if args.out is not None else default_cache_dir(args.npz)
        index = build_cache(
            args.npz, args.image_root, out, args.image_size, args.factor, args.quality,
            args.workers, padding=args.padding,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        print(f"hmr-fast cache-data: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the index or the crops folder could not be written
        print(f"hmr-fast cache-data: error: cannot write the cache: {exc}", file=sys.stderr)
        return 1
    cached = int((index["cropname"] != "").sum())
    skipped = index["skipped"]
    print(
        f"cached {cached} of {len(index['cropname'])} crops in {out}; skipped: "
        f"{skip_report(skipped, index['examples'])}"
    )
    if skipped["write_failed"] or cached == 0:
        why = "crops could not be written" if skipped["write_failed"] else "nothing was cached"
        print(f"hmr-fast cache-data: error: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
