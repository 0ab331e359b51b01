"""`hmr-fast demo` (PNG + OBJ) and the tiny `hmr-fast demo-job`."""

import json

import cv2
import numpy as np
import pytest

from hmr_fast.demo import crop_params, parse_bbox, write_obj


def _read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(x) - 1 for x in line.split()[1:]])
    return np.array(v), np.array(f)


def test_write_obj_roundtrip(tmp_path):
    rng = np.random.default_rng()
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
    res = json.loads((tiny_job / "demo_results.json").read_text())
    for k in ("mpjpe", "pa_mpjpe", "mean_pose_mpjpe", "mean_pose_pa_mpjpe"):
        assert np.isfinite(res[k]) and res[k] > 0
    assert res["steps"] == 3 and res["num_samples"] == 8
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
    from hmr_fast.train.trainer import load_trained_model

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
