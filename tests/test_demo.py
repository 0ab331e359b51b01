"""`hmr-fast demo` (PNG + OBJ) and the tiny `hmr-fast demo-job`."""

import json

import cv2
import numpy as np
import pytest

from hmr_fast.demo import crop_params, parse_bbox, write_obj
from tests import seeding


def _read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(x) - 1 for x in line.split()[1:]])
    return np.array(v), np.array(f)


def test_write_obj_roundtrip(tmp_path):
    rng = seeding.rng()
    v = rng.normal(size=(11, 3))
    f = rng.integers(0, 11, size=(7, 3))
    v2, f2 = _read_obj(write_obj(tmp_path / "m.obj", v, f))
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_array_equal(f2, f)
    with pytest.raises(ValueError, match="vertices"):
        write_obj(tmp_path / "x.obj", v[:, :2], f)


def test_crop_params():
    c, s = crop_params((100, 300, 3))
    np.testing.assert_allclose(c, [149.5, 49.5])
    assert s == pytest.approx(300 / 200)
    c, s = crop_params((100, 300, 3), (10, 20, 40, 80))
    np.testing.assert_allclose(c, [29.5, 59.5])
    assert s == pytest.approx(1.2 * 80 / 200)
    assert parse_bbox("1,2,3,4") == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="bbox"):
        parse_bbox("1,2,3")
    with pytest.raises(ValueError, match="bbox"):
        parse_bbox("1,2,0,4")


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    from hmr_fast.demo_job import main

    out = tmp_path_factory.mktemp("job")
    assert main(["--tiny", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_job_tiny(tiny_job, capsys):
    """The job's numbers are those `hmr-fast eval` computes from its checkpoint and held-out
    set, and its headline is the reduction of PA-MPJPE against that baseline."""
    from hmr_fast.eval.run import run_eval

    res = json.loads((tiny_job / "demo_results.json").read_text())
    ev = run_eval(tiny_job / "run", tiny_job / "synth_test", "synth", progress=False)
    for k in ("mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "mean_pose_pa_mpjpe"):
        assert np.isfinite(res[k]) and res[k] > 0
        assert res[k] == pytest.approx(ev[k], rel=1e-5), k
    assert res["pa_mpjpe_reduction"] == pytest.approx(
        1 - res["pa_mpjpe"] / res["mean_pose_pa_mpjpe"])
    assert res["steps"] == 3 and res["num_samples"] == 8
    assert res["target_reduction"] == 0.40 and res["train_minutes"] > 0
    assert len(res["pngs"]) == 4
    for p in res["pngs"]:
        img = cv2.imread(p)
        assert img is not None and img.shape[1] == 2 * img.shape[0]


def test_demo_writes_png_and_obj(tiny_job, tmp_path):
    from hmr_fast.demo import main

    image = sorted((tiny_job / "synth_test" / "images").iterdir())[0]
    src = cv2.imread(str(image))
    out = tmp_path / "demo"
    assert main(["--image", str(image), "--checkpoint", str(tiny_job / "run"),
                 "--out", str(out)]) == 0  # fmt: skip
    png = cv2.imread(str(out / f"{image.stem}_mesh.png"))
    assert png.shape == src.shape
    v, f = _read_obj(out / f"{image.stem}.obj")
    assert v.shape == (6890, 3) and f.shape == (13776, 3) and np.isfinite(v).all()
    assert main(["--image", str(image), "--bbox", "5,5,30,50", "--checkpoint",
                 str(tiny_job / "run"), "--out", str(tmp_path / "d2")]) == 0  # fmt: skip
    assert (tmp_path / "d2" / f"{image.stem}_crop_mesh.png").is_file()


def test_full_image_render_matches_crop_render(tiny_job):
    """The mesh mapped back onto the image lands where the crop render put it."""
    from hmr_fast.data.augment import warp_image
    from hmr_fast.demo import model_faces, predict, read_image, render_on_image
    from hmr_fast.render import face_index_map, weak_perspective_pixels
    from hmr_fast.train.build import load_trained_model

    model, cfg = load_trained_model(tiny_job / "run")
    image = sorted((tiny_job / "synth_test" / "images").iterdir())[1]
    rgb = read_image(image)
    pred = predict(model, rgb, cfg.image_size, (8, 4, 40, 52))
    # Force a visible, well-placed mesh whatever the barely-trained model predicts.
    pred["cam"] = np.array([0.8, 0.0, 0.0])
    faces = model_faces(model)
    blank = np.zeros_like(rgb)
    full = render_on_image(blank, pred, faces, cfg.image_size).any(-1)
    crop_px = weak_perspective_pixels(pred["vertices"], pred["cam"], cfg.image_size)
    crop_mask = face_index_map(crop_px, faces, (cfg.image_size,) * 2) >= 0
    back = warp_image(full.astype(np.uint8) * 255, pred["matrix"], cfg.image_size) > 127
    inter = (back & crop_mask).sum()
    union = (back | crop_mask).sum()
    assert crop_mask.sum() > 50 and inter / union > 0.8


def test_demo_missing_files(tmp_path, capsys):
    from hmr_fast.demo import main

    assert main(["--image", str(tmp_path / "no.jpg"), "--checkpoint", str(tmp_path)]) == 2
    assert "no.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["nan,1,20,30", "1,2,inf,30", "1,2,-5,30", "1,2,30,0"])
def test_bbox_must_be_finite_and_positive(text):
    with pytest.raises(ValueError, match="--bbox"):
        parse_bbox(text)


def test_bbox_must_overlap_the_image():
    from hmr_fast.demo import check_bbox

    assert check_bbox((10, 10, 5, 5), (100, 200)) == (10, 10, 5, 5)
    for box in [(200, 10, 5, 5), (10, 100, 5, 5), (-6, 10, 5, 5), (10, -5, 5, 5)]:
        with pytest.raises(ValueError, match="outside the 200x100 image"):
            check_bbox(box, (100, 200))
    with pytest.raises(ValueError, match="finite"):
        crop_params((100, 200, 3), (float("nan"), 1.0, 2.0, 3.0))


def test_decode_reduction_keeps_large_photos_small(tmp_path):
    from hmr_fast.demo import MAX_DECODE_PIXELS, decode_reduction, image_hw

    assert decode_reduction((3000, 4000)) == 1  # 12 MP: as it is
    assert decode_reduction((6000, 8000)) == 2  # 48 MP -> 12 MP
    assert decode_reduction((12000, 16000)) == 4
    assert decode_reduction(None) == 8
    for hw in [(6000, 8000), (9000, 9000), (30000, 30000)]:
        r = decode_reduction(hw)
        assert hw[0] * hw[1] / r**2 <= MAX_DECODE_PIXELS or r == 8
    cv2.imwrite(str(tmp_path / "p.jpg"), np.zeros((37, 53, 3), np.uint8))
    assert image_hw(tmp_path / "p.jpg") == (37, 53)
    assert image_hw(tmp_path / "missing.jpg") is None


def test_reduced_decode_gives_the_same_crop(tmp_path):
    """A box in original pixels crops the same region from the 1/4 decode."""
    from hmr_fast.data.augment import crop_matrix, warp_image
    from hmr_fast.data.images import reduced_coords
    from hmr_fast.demo import read_image

    rng = np.random.default_rng(0)
    h, w = 600, 800
    yy, xx = np.mgrid[0:h, 0:w] / 800.0
    img = np.stack([127 + 100 * np.sin(6 * (a * xx + b * yy)) for a, b in
                    rng.uniform(-1, 1, (3, 2))], -1).astype(np.uint8)  # fmt: skip
    cv2.imwrite(str(tmp_path / "p.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
    bbox = (300.0, 150.0, 240.0, 320.0)
    full = read_image(tmp_path / "p.jpg")
    small = read_image(tmp_path / "p.jpg", 4)
    assert small.shape == (150, 200, 3)
    c, s = crop_params(full.shape, bbox)
    a = warp_image(full, crop_matrix(c, s, 64), 64).astype(float)
    b = warp_image(small, crop_matrix(reduced_coords(c, 4), s / 4, 64), 64).astype(float)
    assert np.abs(a - b).mean() < 3.0


def test_demo_rejects_a_nan_box_and_a_truncated_photo(tiny_job, tmp_path, capsys):
    from hmr_fast.demo import main

    image = sorted((tiny_job / "synth_test" / "images").iterdir())[0]
    out = tmp_path / "o"
    assert main(["--image", str(image), "--bbox", "nan,5,30,50", "--checkpoint",
                 str(tiny_job / "run"), "--out", str(out)]) == 2  # fmt: skip
    assert "--bbox" in capsys.readouterr().err and not out.exists()
    cut = tmp_path / "cut.jpg"
    data = image.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert main(["--image", str(cut), "--checkpoint", str(tiny_job / "run"),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "truncated" in capsys.readouterr().err and not out.exists()


def test_demo_on_a_large_photo_decodes_it_reduced(tiny_job, tmp_path, monkeypatch):
    import hmr_fast.demo as demo

    monkeypatch.setattr(demo, "MAX_DECODE_PIXELS", 20_000)  # stands in for 12 MP
    src = cv2.imread(str(sorted((tiny_job / "synth_test" / "images").iterdir())[0]))
    big = cv2.resize(src, (src.shape[1] * 3, src.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    r = demo.decode_reduction(big.shape[:2])
    assert r > 1
    out = tmp_path / "o"
    assert demo.main(["--image", str(tmp_path / "big.jpg"), "--checkpoint",
                      str(tiny_job / "run"), "--out", str(out)]) == 0  # fmt: skip
    png = cv2.imread(str(out / "big_mesh.png"))
    assert png.shape[:2] == (-(-big.shape[0] // r), -(-big.shape[1] // r))
    v, f = _read_obj(out / "big.obj")
    assert np.isfinite(v).all() and v.shape == (6890, 3)
    assert not list(out.glob(".*.tmp"))
