"""Data-loading throughput: KeypointDataset images/s in one process (= per DataLoader worker),
on 1280x960 JPEGs with ~700 px person boxes: full-size decode, reduced (DCT-scaled) decode,
and the pre-cropped cache; plus the CPU rasterizer on a 13.7k-face mesh.
Run with `pytest --benchmark benchmarks/bench_data.py`.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hmr_fast.data.cache import build_cache
from hmr_fast.data.datasets import KeypointDataset
from hmr_fast.data.formats import save_annotations
from hmr_fast.render import rasterize

N_IMAGES = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """16 photo-sized (1280x960) JPEGs with a person-sized crop each, and their cache."""
    root = tmp_path_factory.mktemp("bench_data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(N_IMAGES):
        low = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
        img = cv2.resize(low, (1280, 960), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"images/{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        names.append(f"images/{i:03d}.jpg")
    part = np.concatenate(
        [rng.uniform(300, 900, (N_IMAGES, 24, 2)), np.ones((N_IMAGES, 24, 1))], -1
    )
    save_annotations(root / "ann.npz", imgname=np.array(names),
                     center=rng.uniform(500, 700, (N_IMAGES, 2)),
                     scale=rng.uniform(3.0, 4.0, N_IMAGES), part=part)  # fmt: skip
    build_cache(root / "ann.npz", root, root / "cache", progress=False)
    return root


@pytest.mark.parametrize("mode", ["full-decode", "reduced-decode", "cache"])
def test_keypoint_dataset(benchmark, data_dir, mode):
    ds = KeypointDataset(data_dir / "ann.npz", data_dir, image_size=224, train=True,
                         cache_dir=data_dir / "cache" if mode == "cache" else None,
                         reduced_decode=mode != "full-decode")  # fmt: skip
    benchmark.group = "KeypointDataset per worker"
    benchmark.extra_info.update(batch=len(ds), group=benchmark.group,
                                baseline=mode == "full-decode", images=len(ds))  # fmt: skip

    def epoch():
        for i in range(len(ds)):
            ds[i]

    benchmark(epoch)
    assert ds.image_failures == 0


def _sphere(n_u=120, n_v=58):
    th = np.linspace(0, np.pi, n_v + 2)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_u, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_v - 1), np.arange(n_u), indexing="ij")
    a, b = i * n_u + j, i * n_u + (j + 1) % n_u
    c, d = a + n_u, b + n_u
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([b, d, c], -1)]).reshape(-1, 3)
    return v, faces


@pytest.mark.parametrize("size", [224, 512])
def test_rasterize(benchmark, size):
    v, faces = _sphere()
    px = np.c_[v[:, :2] * size * 0.3 + size / 2, v[:, 2] * size * 0.3 + size]
    benchmark.group = f"rasterize {len(faces)} faces"
    benchmark.extra_info.update(batch=1, group=benchmark.group, faces=len(faces), size=size)
    r = benchmark(rasterize, px, faces, (size, size))
    assert (r.face_index >= 0).any()
