"""Annotation npz format: validation, filling of optional keys, invalid-row detection."""

import numpy as np
import pytest

from hmr_fast.data.formats import invalid_rows, load_annotations, save_annotations


def _rows(n, rng):
    return {
        "imgname": np.array([f"images/{i:03d}.jpg" for i in range(n)]),
        "center": rng.uniform(50, 200, (n, 2)),
        "scale": rng.uniform(0.5, 2.0, n),
        "part": np.concatenate(
            [rng.uniform(0, 300, (n, 24, 2)), rng.integers(0, 2, (n, 24, 1))], -1
        ),
    }


def test_roundtrip_fills_optional_keys(tmp_path):
    rng = np.random.default_rng()
    n = int(rng.integers(3, 9))
    rows = _rows(n, rng)
    path = save_annotations(tmp_path / "a.npz", **rows)
    ann = load_annotations(path)
    assert list(ann["imgname"]) == list(rows["imgname"])
    np.testing.assert_allclose(ann["center"], rows["center"], rtol=1e-6)
    np.testing.assert_allclose(ann["scale"], rows["scale"], rtol=1e-6)
    np.testing.assert_allclose(ann["part"], rows["part"], rtol=1e-6)
    assert ann["center"].dtype == np.float32
    assert ann["S"].shape == (n, 24, 4) and not ann["S"].any()
    assert ann["pose"].shape == (n, 72) and ann["shape"].shape == (n, 10)
    assert not ann["has_smpl"].any()
    assert bool(ann["has_part"]) and not bool(ann["has_S"])
    assert list(ann["maskname"]) == [""] * n
    # loads without pickle
    with np.load(path, allow_pickle=False) as d:
        assert d["imgname"].dtype.kind == "U"


def test_pose_without_has_smpl_counts_as_labelled(tmp_path):
    rng = np.random.default_rng()
    rows = _rows(4, rng)
    rows["pose"] = rng.normal(size=(4, 72))
    rows["shape"] = rng.normal(size=(4, 10))
    ann = load_annotations(save_annotations(tmp_path / "a.npz", **rows))
    assert (ann["has_smpl"] == 1).all()
    np.testing.assert_allclose(ann["pose"], rows["pose"], rtol=1e-6)


@pytest.mark.parametrize("drop", ["imgname", "center", "scale", "part"])
def test_missing_required_key_names_it(tmp_path, drop):
    rows = _rows(3, np.random.default_rng())
    del rows[drop]
    path = tmp_path / "bad.npz"
    np.savez(path, **rows)
    expected = "part or S" if drop == "part" else drop
    with pytest.raises(ValueError, match=expected) as info:
        load_annotations(path)
    assert str(path) in str(info.value)


def test_wrong_shape_rejected(tmp_path):
    rows = _rows(3, np.random.default_rng())
    rows["part"] = rows["part"][:, :14]
    with pytest.raises(ValueError, match="part"):
        save_annotations(tmp_path / "x.npz", **rows)


def test_object_arrays_refused_with_clear_message(tmp_path):
    rows = _rows(2, np.random.default_rng())
    rows["imgname"] = np.array(["a.jpg", "b.jpg"], dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **rows)
    with pytest.raises(ValueError, match="pickle"):
        load_annotations(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_annotations("/nonexistent/ann.npz")


def test_invalid_rows():
    rng = np.random.default_rng()
    rows = _rows(6, rng)
    rows["S"] = np.concatenate([rng.normal(size=(6, 24, 3)), np.ones((6, 24, 1))], -1)
    rows["part"][1, 5, 0] = np.nan  # labelled?
    rows["part"][1, 5, 2] = 1
    rows["part"][2, 7, :2] = np.nan  # unlabelled NaN: harmless
    rows["part"][2, 7, 2] = 0
    rows["scale"][3] = 0.0
    rows["S"][4, 2, 1] = np.inf
    rows["center"][5, 0] = np.nan
    from hmr_fast.data.formats import _normalise

    ann = _normalise(rows, 6)
    np.testing.assert_array_equal(invalid_rows(ann), [False, True, False, True, True, True])


# --- datasets over the format ----------------------------------------------------------------
import warnings  # noqa: E402

import cv2  # noqa: E402
import torch  # noqa: E402

from hmr_fast.body.constants import HMR19_FROM_J24  # noqa: E402
from hmr_fast.data.augment import AugParams, denormalize_image  # noqa: E402
from hmr_fast.data.cache import build_cache  # noqa: E402
from hmr_fast.data.datasets import KeypointDataset, MixedDataset  # noqa: E402


def _smooth_image(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.25 * np.sin(6 * (a * xx + b * yy) + f)
    return (img * 255).astype(np.uint8)


def _make_dataset(root, rng, n=6, with_3d=True, ext="png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        h, w = rng.integers(120, 200, 2)
        name = f"images/{i:03d}.{ext}"
        cv2.imwrite(str(root / name), _smooth_image(rng, h, w))
        names.append(name)
    rows = {
        "imgname": np.array(names),
        "center": rng.uniform(50, 100, (n, 2)),
        "scale": rng.uniform(0.4, 0.6, n),
        "part": np.concatenate(
            [rng.uniform(20, 120, (n, 24, 2)), rng.integers(0, 2, (n, 24, 1))], -1
        ),
    }
    if with_3d:
        rows["S"] = np.concatenate([rng.normal(size=(n, 24, 3)), np.ones((n, 24, 1))], -1)
        rows["pose"] = rng.normal(scale=0.3, size=(n, 72))
        rows["shape"] = rng.normal(size=(n, 10))
        rows["has_smpl"] = np.ones(n)
    path = save_annotations(root / "ann.npz", **rows)
    return path, rows


def test_keypoint_dataset_items(tmp_path):
    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng)
    ds = KeypointDataset(path, tmp_path, image_size=32, train=False)
    assert len(ds) == 6
    for i in range(6):
        item = ds[i]
        assert item["img"].shape == (3, 32, 32) and item["img"].dtype == torch.float32
        assert item["keypoints_2d"].shape == (19, 3) and item["keypoints_3d"].shape == (14, 4)
        assert item["pose"].shape == (72,) and item["betas"].shape == (10,)
        assert item["index"] == i and item["skipped"] == 0 and item["has_3d"] == 1
        b = 200 * rows["scale"][i]
        exp = 2 * (rows["part"][i, list(HMR19_FROM_J24), :2] - rows["center"][i]) / b
        np.testing.assert_allclose(item["keypoints_2d"][:, :2], exp, atol=1e-4)
        np.testing.assert_array_equal(
            item["keypoints_2d"][:, 2], rows["part"][i, list(HMR19_FROM_J24), 2]
        )  # noqa: E501
        np.testing.assert_allclose(item["keypoints_3d"], rows["S"][i, :14], atol=1e-6)
        np.testing.assert_allclose(item["pose"], rows["pose"][i], atol=1e-6)
        # the crop is the image resampled: its centre pixel equals the source at `center`
        src = cv2.cvtColor(cv2.imread(str(tmp_path / rows["imgname"][i])), cv2.COLOR_BGR2RGB)
        img = denormalize_image(item["img"].numpy()).astype(float)
        cx, cy = rows["center"][i]
        crop_c = img[15:17, 15:17].mean((0, 1))  # pixels around the crop centre (15.5, 15.5)
        ref = src[int(round(cy)), int(round(cx))].astype(float)
        assert np.abs(crop_c - ref).max() < 12
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["img"].shape == (2, 3, 32, 32)


def test_augmentation_is_keyed_by_seed_epoch_index(tmp_path):
    rng = np.random.default_rng()
    path, _ = _make_dataset(tmp_path, rng)
    ds = KeypointDataset(path, tmp_path, image_size=32, train=True, seed=5)
    a, b = ds[2], ds[2]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    c = ds[2]
    assert not torch.equal(a["keypoints_2d"], c["keypoints_2d"])
    ds2 = KeypointDataset(path, tmp_path, image_size=32, train=True, seed=5)
    ds2.set_epoch(1)
    assert torch.equal(ds2[2]["img"], c["img"])


def test_bad_data_is_skipped_and_counted(tmp_path):
    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng, n=8, with_3d=False)
    (tmp_path / rows["imgname"][1]).unlink()  # missing
    (tmp_path / rows["imgname"][4]).write_bytes(b"\x89PNG garbage")  # corrupt
    rows["part"][6, 3, 0] = np.nan  # NaN row
    rows["part"][6, 3, 2] = 1
    path = save_annotations(tmp_path / "ann2.npz", **rows)
    ds = KeypointDataset(path, tmp_path, image_size=24, train=True)
    assert len(ds) == 7 and ds.num_invalid_rows == 1
    items = [ds[i] for i in range(len(ds))]
    idx = [int(it["index"]) for it in items]
    assert 1 not in idx and 4 not in idx and 6 not in idx
    assert sum(int(it["skipped"]) for it in items) == 2 == ds.image_failures
    assert all(torch.isfinite(it["keypoints_2d"]).all() for it in items)
    with pytest.warns(UserWarning, match="dropped 1 rows.*2 unreadable"):
        counts = ds.report_skipped()
    assert counts == {"invalid_rows": 1, "image_failures": 2}
    # with worker processes the per-sample counts still add up
    ds = KeypointDataset(path, tmp_path, image_size=24, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    total = sum(int(b["skipped"].sum()) for b in loader)
    assert total == 2
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds.report_skipped(total)
    assert len(rec) == 1
    # an image root with nothing in it fails loudly, naming a path
    with pytest.raises(RuntimeError, match="image_root"):
        KeypointDataset(path, tmp_path / "nowhere", image_size=24, max_retries=3)[0]


def test_mixed_dataset_ratio_and_determinism(tmp_path):
    rng = np.random.default_rng()
    p2, _ = _make_dataset(tmp_path / "a", rng, n=5, with_3d=False)
    p3, _ = _make_dataset(tmp_path / "b", rng, n=4, with_3d=True)
    d2 = KeypointDataset(p2, tmp_path / "a", image_size=16)
    d3 = KeypointDataset(p3, tmp_path / "b", image_size=16)
    mix = MixedDataset([d2], [d3], ratio_3d=0.5, length=40, seed=3)
    groups = [mix.locate(i)[0] for i in range(40)]
    for s in range(0, 40, 8):  # every batch of 8 consecutive indices is half 3D
        assert sum(groups[s : s + 8]) == 4
    items = [mix[i] for i in range(12)]
    assert [int(it["has_3d"]) for it in items] == groups[:12]
    # resume: reading index 9 alone (fresh objects) gives the same sample
    mix2 = MixedDataset([KeypointDataset(p2, tmp_path / "a", image_size=16)],
                        [KeypointDataset(p3, tmp_path / "b", image_size=16)],
                        ratio_3d=0.5, length=40, seed=3)  # fmt: skip
    it = mix2[9]
    assert all(torch.equal(it[k], items[9][k]) for k in it)
    # other ratios: exact fraction over any window of 10; all-2D without 3D datasets
    mix = MixedDataset([d2], [d3], ratio_3d=0.3, length=100)
    assert sum(mix.locate(i)[0] for i in range(10, 20)) == 3
    assert sum(MixedDataset([d2], [], length=20).locate(i)[0] for i in range(20)) == 0
    rows = [MixedDataset([d2], [d3], length=2000, seed=1).locate(i)[2] for i in range(0, 2000, 2)]
    assert set(rows) == set(range(5))
    with pytest.raises(ValueError, match="ratio_3d"):
        MixedDataset([d2], [d3], ratio_3d=1.5)


def test_cached_sample_matches_uncached(tmp_path):
    from hmr_fast.data.augment import AugConfig

    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng, n=4, ext="png")
    # crops well inside the images, so that only resampling + JPEG differ
    rows["center"] = np.full((4, 2), 60.0) + rng.uniform(-3, 3, (4, 2))
    rows["scale"] = rng.uniform(0.35, 0.4, 4)
    path = save_annotations(path, **rows)
    build_cache(path, tmp_path, tmp_path / "cache", image_size=64, progress=False)
    # augmentations that stay inside the cached 1.25x margin
    aug = AugConfig(zoom_min=0.9, trans_max=10.0)
    plain = KeypointDataset(path, tmp_path, image_size=64, train=True, seed=2, aug=aug)
    cached = KeypointDataset(path, tmp_path, image_size=64, train=True, seed=2, aug=aug,
                             cache_dir=tmp_path / "cache")  # fmt: skip
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(4):
            a, b = plain[i], cached[i]
            assert bool(a["flip"]) == bool(b["flip"])
            np.testing.assert_allclose(a["keypoints_2d"], b["keypoints_2d"], atol=1e-4)
            ia = denormalize_image(a["img"].numpy()).astype(float)
            ib = denormalize_image(b["img"].numpy()).astype(float)
            diff = np.abs(ia - ib)[1:-1, 1:-1]
            assert diff.mean() < 1.5 and diff.max() < 10, (diff.mean(), diff.max())
    # a cache from other annotations is refused
    rows2 = dict(np.load(path))
    rows2["center"] = rows2["center"] + 5
    other = save_annotations(tmp_path / "other.npz", **rows2)
    with pytest.raises(ValueError, match="different annotations"):
        KeypointDataset(other, tmp_path, cache_dir=tmp_path / "cache")


def test_aug_params_identity_for_eval(tmp_path):
    rng = np.random.default_rng()
    path, _ = _make_dataset(tmp_path, rng, n=2)
    ds = KeypointDataset(path, tmp_path, image_size=16, train=False)
    assert ds[0]["flip"] == 0
    assert AugParams().zoom == 1.0


def test_cache_cli(tmp_path):
    from hmr_fast.data.cache import load_cache_index, main

    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng, n=3, ext="jpg")
    (tmp_path / rows["imgname"][2]).unlink()
    argv = ["--npz", str(path), "--image-root", str(tmp_path), "--out", str(tmp_path / "c"),
            "--image-size", "40", "--workers", "2"]  # fmt: skip
    assert main(argv) == 0
    index = load_cache_index(tmp_path / "c", load_annotations(path))
    assert list(index["cropname"]) == ["crops/0000000.jpg", "crops/0000001.jpg", ""]
    assert int(index["resolution"]) == 50
    crop = cv2.imread(str(tmp_path / "c" / index["cropname"][1]))
    assert crop.shape == (50, 50, 3)
    # the missing image is counted once through the cached dataset too
    ds = KeypointDataset(path, tmp_path, image_size=40, cache_dir=tmp_path / "c")
    assert sum(int(ds[i]["skipped"]) for i in range(3)) == 1


def test_cache_found_automatically(tmp_path):
    from hmr_fast.data.cache import main

    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng, n=3, ext="jpg")
    assert main(["--npz", str(path), "--image-root", str(tmp_path), "--workers", "1"]) == 0
    assert (tmp_path / "ann_cache" / "index.npz").is_file()
    for name in rows["imgname"]:  # only the cache is left to read
        (tmp_path / name).unlink()
    ds = KeypointDataset(path, tmp_path, image_size=32)
    assert sum(int(ds[i]["skipped"]) for i in range(3)) == 0
    assert KeypointDataset(path, tmp_path, cache_dir=None, max_retries=2).cache is None
    # a stale cache is ignored with a warning
    rows["scale"] = rows["scale"] * 1.1
    save_annotations(path, **rows)
    with pytest.warns(UserWarning, match="ignoring the pre-cropped cache"):
        ds = KeypointDataset(path, tmp_path, image_size=32)
    assert ds.cache is None


def test_reduced_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng()
    (tmp_path / "images").mkdir()
    n = 3
    names = []
    for i in range(n):
        cv2.imwrite(str(tmp_path / f"images/{i}.jpg"), _smooth_image(rng, 480, 640),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
        names.append(f"images/{i}.jpg")
    part = np.concatenate([rng.uniform(150, 400, (n, 24, 2)), np.ones((n, 24, 1))], -1)
    center = rng.uniform([260, 200], [380, 280], (n, 2))  # crops inside the image
    path = save_annotations(tmp_path / "big.npz", imgname=np.array(names), center=center,
                            scale=np.full(n, 1.5), part=part)  # fmt: skip
    full = KeypointDataset(path, tmp_path, image_size=32, reduced_decode=False)
    red = KeypointDataset(path, tmp_path, image_size=32)
    assert red._reduction(1.5) == 4 and full._reduction(1.5) == 1  # 300 px box -> 32 px
    for i in range(n):
        a, b = full[i], red[i]
        np.testing.assert_allclose(a["keypoints_2d"], b["keypoints_2d"], atol=1e-4)
        ia = denormalize_image(a["img"].numpy()).astype(float)
        ib = denormalize_image(b["img"].numpy()).astype(float)
        diff = np.abs(ia - ib)
        assert diff.mean() < 2.5 and diff.max() < 16, (diff.mean(), diff.max())


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("r", [2, 4, 8])
def test_reduced_decode_coordinates(tmp_path, ext, r):
    """A blob at source pixel p appears at (p + 0.5) / r - 0.5 in the reduced decode."""
    from hmr_fast.data.datasets import read_image_bgr, reduced_coords

    rng = np.random.default_rng()
    h, w = 256, 320
    p = rng.uniform([80, 80], [w - 80, h - 80])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 255 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * (2.0 * r) ** 2))
    img = np.repeat(blob[..., None], 3, 2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / f"b.{ext}"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    red = read_image_bgr(tmp_path / f"b.{ext}", r)[..., 1].astype(float)
    ry, rx = np.mgrid[0 : red.shape[0], 0 : red.shape[1]]
    found = np.array([(red * rx).sum(), (red * ry).sum()]) / red.sum()
    np.testing.assert_allclose(found, reduced_coords(p, r), atol=0.1)
