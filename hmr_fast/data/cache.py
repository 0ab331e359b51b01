"""Pre-cropped image cache: decode small crops instead of full photographs while training.

``hmr-fast cache-data --npz X.npz --image-root R [--out DIR] [--image-size 224] [--factor 1.25]``
(``DIR`` defaults to ``X_cache/`` next to ``X.npz``, where ``KeypointDataset`` finds it.)

For every row of the annotation npz the square box of side ``factor * 200 * scale`` around
``center`` (no jitter, no flip) is resampled to ``resolution = round(factor * image_size)``
pixels with one ``cv2.warpAffine`` and written as ``DIR/crops/<row>.jpg``. ``DIR/index.npz``
holds ``cropname`` (N,) (``""`` where the source image could not be read), copies of the
rows' ``center`` / ``scale`` (to detect a cache built from another npz), and the scalars
``factor`` and ``resolution``.

``KeypointDataset(..., cache_dir=DIR)`` (or the default ``"auto"``) then reads the crop and
re-expresses the row in the crop's pixels (``cached_row``): the person's box becomes the
centred square of side ``resolution / factor``, keypoints are mapped with the same affine,
and the augmentation runs unchanged, so a cached sample equals the uncached one up to JPEG
loss and the second resampling. Augmentations that look beyond the cached margin (zoom below
``1 / factor``, large translations or rotations) see black instead of image content at the
borders.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from hmr_fast.data.augment import crop_matrix, warp_image
from hmr_fast.data.formats import load_annotations

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


def load_cache_index(cache_dir: str | os.PathLike, ann: dict | None = None) -> dict:
    """Read ``DIR/index.npz``; with ``ann`` check that it was built from the same rows."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no cache index at {path} (build it with hmr-fast cache-data)")
    with np.load(path, allow_pickle=False) as d:
        index = {k: d[k] for k in d.files}
    if ann is not None:
        same = len(index["cropname"]) == len(ann["imgname"]) and np.allclose(
            index["center"], ann["center"], atol=1e-3
        )
        same = same and np.allclose(index["scale"], ann["scale"], atol=1e-5)
        if not same:
            raise ValueError(
                f"cache {cache_dir} was built from different annotations "
                f"({len(index['cropname'])} rows vs {len(ann['imgname'])}); rebuild it"
            )
    index["dir"] = Path(cache_dir)
    return index


def _crop_one(job):
    row, src, dst, center, scale, factor, resolution, quality = job
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return row, False
    crop = warp_image(img, cache_matrix(center, scale, factor, resolution), resolution)
    return row, bool(cv2.imwrite(dst, crop, [cv2.IMWRITE_JPEG_QUALITY, quality]))


def build_cache(
    npz_path,
    image_root,
    out_dir,
    image_size: int = 224,
    factor: float = 1.25,
    quality: int = 95,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write the crops and the index (see module docstring). Returns the index dict."""
    ann = load_annotations(npz_path)
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    resolution = int(round(factor * image_size))
    n = len(ann["imgname"])
    finite = np.isfinite(ann["center"]).all(1) & np.isfinite(ann["scale"]) & (ann["scale"] > 0)
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
        )
        for i in range(n)
        if finite[i]
    ]
    names = np.full(n, "", dtype=object)
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="cache", unit="img", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap_unordered(_crop_one, jobs, chunksize=16)
            for row, ok in results:
                names[row] = f"crops/{row:07d}.jpg" if ok else ""
                bar.update()
    else:
        for job in jobs:
            row, ok = _crop_one(job)
            names[row] = f"crops/{row:07d}.jpg" if ok else ""
            bar.update()
    bar.close()
    index = {
        "cropname": names.astype(str),
        "center": ann["center"],
        "scale": ann["scale"],
        "factor": np.float64(factor),
        "resolution": np.int64(resolution),
    }
    np.savez(out / INDEX_NAME, **index)
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast cache-data", description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True, help="annotation npz")
    p.add_argument("--image-root", required=True)
    p.add_argument("--out", default=None, help="cache directory (default: X_cache/ next to X.npz)")
    p.add_argument("--image-size", type=int, default=224, help="training crop size")
    p.add_argument("--factor", type=float, default=1.25, help="cached margin around the crop")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    try:
        out = args.out if args.out is not None else default_cache_dir(args.npz)
        index = build_cache(
            args.npz, args.image_root, out, args.image_size, args.factor, args.quality,
            args.workers,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        print(f"hmr-fast cache-data: {exc}", file=sys.stderr)
        return 2
    failed = int((index["cropname"] == "").sum())
    print(f"cached {len(index['cropname']) - failed} crops in {out} ({failed} unreadable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
