"""Annotation npz format: validation, filling of optional keys, invalid-row detection."""

import numpy as np
import pytest

from hmr_fast.data.formats import clean_labels, invalid_rows, load_annotations, save_annotations


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


def test_invalid_rows_and_clean_labels():
    """Only an unusable crop drops a row; a NaN joint unlabels that joint alone."""
    rng = np.random.default_rng(11)
    rows = _rows(6, rng)
    rows["S"] = np.concatenate([rng.normal(size=(6, 24, 3)), np.ones((6, 24, 1))], -1)
    rows["pose"] = rng.normal(size=(6, 72))
    rows["shape"] = rng.normal(size=(6, 10))
    rows["part"][1, 5, 0] = np.nan  # labelled NaN joint
    rows["part"][1, 5, 2] = 1
    rows["part"][2, 7, :2] = np.nan  # unlabelled NaN: harmless
    rows["part"][2, 7, 2] = 0
    rows["part"][0, 9, 2] = np.nan  # a NaN flag
    rows["scale"][3] = 0.0
    rows["S"][4, 2, 1] = np.inf
    rows["center"][5, 0] = np.nan
    rows["pose"][2, 40] = np.nan  # labelled SMPL row with a NaN
    from hmr_fast.data.formats import _normalise

    ann = _normalise(rows, 6)
    np.testing.assert_array_equal(invalid_rows(ann), [False, False, False, True, False, True])
    clean, counts = clean_labels(ann)
    assert counts == {"invalid_joints_2d": 2, "invalid_joints_3d": 1, "invalid_smpl_rows": 1}
    # Reference: every other label is untouched; the bad ones are zeroed (flag 0).
    part_ref = np.nan_to_num(np.asarray(rows["part"], np.float32), nan=0.0)
    part_ref[1, 5] = 0.0
    part_ref[0, 9] = 0.0
    np.testing.assert_array_equal(clean["part"], part_ref)
    s_ref = np.asarray(rows["S"], np.float32).copy()
    s_ref[4, 2] = 0.0
    np.testing.assert_array_equal(clean["S"], s_ref)
    assert clean["has_smpl"].tolist() == [1, 1, 0, 1, 1, 1]
    assert not clean["pose"][2].any() and np.isfinite(clean["pose"]).all()
    np.testing.assert_array_equal(clean["pose"][3], np.float32(rows["pose"][3]))


def test_has_smpl_without_pose_is_an_error(tmp_path):
    rows = _rows(3, np.random.default_rng(0))
    path = tmp_path / "smpl.npz"
    np.savez(path, has_smpl=np.array([1.0, 0.0, 1.0]), **rows)
    with pytest.raises(ValueError, match="has_smpl.*'pose'") as info:
        load_annotations(path)
    assert str(path) in str(info.value)
    rows["pose"] = np.zeros((3, 72))
    np.savez(path, **rows)  # pose without shape
    with pytest.raises(ValueError, match="shape"):
        load_annotations(path)
    # has_smpl all zero without pose is fine (nothing claims an SMPL label)
    del rows["pose"]
    np.savez(path, has_smpl=np.zeros(3), **rows)
    assert not load_annotations(path)["has_smpl"].any()


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_npz_names_the_file(tmp_path, cut):
    from hmr_fast.data.mocap import load_mocap

    rows = _rows(40, np.random.default_rng(1))
    path = save_annotations(tmp_path / "ann.npz", **rows)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match="damaged") as info:
        load_annotations(path)
    assert str(path) in str(info.value) and "import" in str(info.value)
    mocap = tmp_path / "mocap.npz"
    np.savez(mocap, pose=np.zeros((50, 72)), shape=np.zeros((50, 10)))
    mocap.write_bytes(mocap.read_bytes()[:300])
    with pytest.raises(ValueError, match="damaged") as info:
        load_mocap(mocap)
    assert str(mocap) in str(info.value)


def test_saved_files_honour_the_umask_and_leave_no_temp(tmp_path):
    rows = _rows(3, np.random.default_rng(2))
    old = os.umask(0o022)
    try:
        a = save_annotations(tmp_path / "a.npz", **rows)
        os.umask(0o077)
        b = save_annotations(tmp_path / "b.npz", **rows)
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    assert stat.S_IMODE(b.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]


def test_failed_save_leaves_nothing_and_stale_temps_are_ignored(tmp_path):
    from hmr_fast.data.formats import find_annotation_file

    rows = _rows(3, np.random.default_rng(3))
    path = save_annotations(tmp_path / "ann.npz", **rows)
    before = path.read_bytes()
    rows["bad"] = np.array([Unpicklable()], dtype=object)  # np.savez fails midway
    with pytest.raises(ValueError):
        save_annotations(path, **rows)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.npz"]
    # what a killed writer leaves (ours, and the previous mkstemp naming) is not loaded
    (tmp_path / ".ann.npz.k3j2h1.tmp").write_bytes(b"half")
    (tmp_path / "tmpab12cd34.npz").write_bytes(b"half")
    assert find_annotation_file(tmp_path) == path
    del rows["bad"]
    save_annotations(path, **rows)  # a fresh temp may be another writer's: kept
    assert (tmp_path / ".ann.npz.k3j2h1.tmp").exists()
    hour_ago = time.time() - 3600
    os.utime(tmp_path / ".ann.npz.k3j2h1.tmp", (hour_ago, hour_ago))
    save_annotations(path, **rows)  # the next write of the file clears its stale temp
    assert not (tmp_path / ".ann.npz.k3j2h1.tmp").exists()


class Unpicklable:
    def __reduce__(self):
        raise ValueError("cannot be saved")


# --- datasets over the format ----------------------------------------------------------------
import os  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
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
    rows["part"][6, 3, 0] = np.nan  # NaN joint: that joint loses its label, the row stays
    rows["part"][6, 3, 2] = 1
    rows["center"][2, 1] = np.nan  # no crop possible: the row is dropped
    path = save_annotations(tmp_path / "ann2.npz", **rows)
    ds = KeypointDataset(path, tmp_path, image_size=24, train=True)
    assert len(ds) == 7 and ds.num_invalid_rows == 1
    items = [ds[i] for i in range(len(ds))]
    idx = [int(it["index"]) for it in items]
    assert 1 not in idx and 4 not in idx and 2 not in idx
    # reference: the documented substitution walk (stride 7919 over the usable rows)
    usable, unreadable = [0, 1, 3, 4, 5, 6, 7], {1, 4}
    expected_skips = sum(expected_skips_of(i, usable, unreadable) for i in range(7))
    assert sum(int(it["skipped"]) for it in items) == expected_skips == ds.image_failures
    assert all(torch.isfinite(it["keypoints_2d"]).all() for it in items)
    row6 = ds.get(list(ds.rows).index(6), (0, 0, 0))  # the row with the NaN joint
    assert int(row6["index"]) == 6 or int(row6["skipped"]) > 0
    if int(row6["index"]) == 6:
        flags = row6["keypoints_2d"][:, 2].numpy()
        expected = rows["part"][6, list(HMR19_FROM_J24), 2].copy()
        expected[3] = 0  # J24 3 is HMR19 3
        np.testing.assert_array_equal(flags, expected)
    with pytest.warns(UserWarning, match=f"dropped 1 rows.*{expected_skips} unreadable.*"
                      "unlabelled 1 2D"):  # fmt: skip
        counts = ds.report_skipped()
    assert counts == {"invalid_rows": 1, "image_failures": expected_skips, "invalid_joints_2d": 1,
                      "invalid_joints_3d": 0, "invalid_smpl_rows": 0}  # fmt: skip
    # with worker processes the per-sample counts still add up
    ds = KeypointDataset(path, tmp_path, image_size=24, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    total = sum(int(b["skipped"].sum()) for b in loader)
    assert total == expected_skips
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds.report_skipped(total)
    assert len(rec) == 1
    # an image root with nothing in it fails loudly, naming a path
    with pytest.raises(RuntimeError, match="image_root"):
        KeypointDataset(path, tmp_path / "nowhere", image_size=24, max_retries=3)[0]


def expected_skips_of(i, usable, unreadable, stride=7919):
    """Unreadable rows met from position i along the substitution walk."""
    k = 0
    while usable[(i + k * stride) % len(usable)] in unreadable:
        k += 1
    return k


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
    plain = KeypointDataset(path, tmp_path, image_size=64, train=True, seed=2, aug=aug,
                            padding="edge")
    cached = KeypointDataset(path, tmp_path, image_size=64, train=True, seed=2, aug=aug,
                             cache_dir=tmp_path / "cache", padding="edge")  # fmt: skip
    with pytest.raises(ValueError, match=r"padded with 'edge'.*'zero'.*--padding zero"):
        KeypointDataset(path, tmp_path, image_size=64, cache_dir=tmp_path / "cache",
                        padding="zero")
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


def test_cache_is_used_only_when_asked(tmp_path):
    from hmr_fast.data.cache import main

    rng = np.random.default_rng()
    path, rows = _make_dataset(tmp_path, rng, n=3, ext="jpg")
    assert main(["--npz", str(path), "--image-root", str(tmp_path), "--workers", "1"]) == 0
    assert (tmp_path / "ann_cache" / "index.npz").is_file()
    # not used unless named: results never change because a folder happens to exist
    assert KeypointDataset(path, tmp_path, image_size=32).cache is None
    for name in rows["imgname"]:  # only the cache is left to read
        (tmp_path / name).unlink()
    ds = KeypointDataset(path, tmp_path, image_size=32, cache_dir="auto")
    assert sum(int(ds[i]["skipped"]) for i in range(3)) == 0
    assert KeypointDataset(path, tmp_path, cache_dir=None, max_retries=2).cache is None
    # a stale cache named explicitly is an error, not a silent fallback
    rows["scale"] = rows["scale"] * 1.1
    save_annotations(path, **rows)
    with pytest.raises(ValueError, match="different annotations"):
        KeypointDataset(path, tmp_path, image_size=32, cache_dir="auto")


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


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_images_are_unreadable(tmp_path, ext):
    """A file cut short is refused (cv2 alone decodes a JPEG cut halfway with a grey half)."""
    from hmr_fast.data.datasets import ImageReadError, read_image_bgr

    rng = np.random.default_rng(4)
    path, rows = _make_dataset(tmp_path, rng, n=4, with_3d=False, ext=ext)
    img = tmp_path / rows["imgname"][1]
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image_bgr(img)
    assert str(img) in str(info.value)
    read_image_bgr(tmp_path / rows["imgname"][0])  # complete files still decode
    # evaluation mode: the row is flagged, never replaced
    ds = KeypointDataset(path, tmp_path, image_size=16, train=False, on_unreadable="skip")
    flags = [bool(ds[i]["image_ok"]) for i in range(4)]
    assert flags == [True, False, True, True] and int(ds[1]["index"]) == 1
    # training mode: replaced by another row and counted
    ds = KeypointDataset(path, tmp_path, image_size=16, train=True)
    item = ds[1]
    assert bool(item["image_ok"]) and int(item["index"]) != 1 and int(item["skipped"]) == 1


def test_cache_tool_faults_are_clear_and_nonzero(tmp_path, capsys, monkeypatch):
    import hmr_fast.data.cache as cache

    rng = np.random.default_rng(5)
    path, rows = _make_dataset(tmp_path, rng, n=3, ext="jpg")
    base = ["--npz", str(path), "--out", str(tmp_path / "c"), "--workers", "1"]
    assert cache.main(base + ["--image-root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    for factor in ("0", "nan", "-1"):
        assert cache.main(base + ["--image-root", str(tmp_path), "--factor", factor]) == 2
        assert "--factor" in capsys.readouterr().err
    assert not (tmp_path / "c" / "index.npz").exists()

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "atomic_write_bytes", full_disk)
    assert cache.main(base + ["--image-root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "3 write_failed" in captured.out and "No space left" in captured.out
    assert "could not be written" in captured.err


def test_cache_with_a_nan_centre_is_not_stale_and_honours_the_umask(tmp_path, capsys):
    from hmr_fast.data.cache import load_cache_index, main

    rng = np.random.default_rng(6)
    path, rows = _make_dataset(tmp_path, rng, n=3, ext="jpg")
    rows["center"][1, 0] = np.nan
    path = save_annotations(path, **rows)
    old = os.umask(0o027)
    try:
        assert main(["--npz", str(path), "--image-root", str(tmp_path), "--workers", "1"]) == 0
    finally:
        os.umask(old)
    assert "1 invalid_rows" in capsys.readouterr().out
    index = load_cache_index(tmp_path / "ann_cache", load_annotations(path))  # not "stale"
    assert list(index["cropname"]) == ["crops/0000000.jpg", "", "crops/0000002.jpg"]
    for p in (tmp_path / "ann_cache" / "index.npz", tmp_path / "ann_cache" / "crops" /
              "0000002.jpg"):  # fmt: skip
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert not [p for p in (tmp_path / "ann_cache").rglob("*.tmp")]
    # a damaged index names the file and the fix
    idx = tmp_path / "ann_cache" / "index.npz"
    idx.write_bytes(idx.read_bytes()[:100])
    with pytest.raises(ValueError, match="cache-data") as info:
        KeypointDataset(path, tmp_path, cache_dir="auto")
    assert str(idx) in str(info.value)


def test_spin_3dpw_layout_loads(tmp_path):
    """SPIN's 3dpw_test.npz has no part / S: pose, shape and gender are its labels."""
    rng = np.random.default_rng(7)
    n = 4
    np.savez(tmp_path / "3dpw_test.npz", imgname=[f"imageFiles/s/image_{i:05d}.jpg" for i in
             range(n)], center=rng.uniform(100, 200, (n, 2)).tolist(), scale=[1.5] * n,
             pose=rng.normal(size=(n, 72)).tolist(), shape=rng.normal(size=(n, 10)).tolist(),
             gender=["m", "f", "f", "m"])  # fmt: skip
    ann = load_annotations(tmp_path / "3dpw_test.npz")
    assert list(ann["gender"]) == ["m", "f", "f", "m"]
    assert (ann["has_smpl"] == 1).all() and not bool(ann["has_part"]) and not bool(ann["has_S"])
