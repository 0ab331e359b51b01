"""hmr-fast predict: box sources, outputs in image pixels, folders with bad files, videos."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch

from hmr_fast import SMPL
from hmr_fast.data.augment import crop_matrix
from hmr_fast.predict import BOX_RESCALE, detect_people, main
from hmr_fast.render import render_mesh
from tests.test_pretrained import save_spin_checkpoint

H, W = 480, 640
PERSON_CENTER, PERSON_HEIGHT = (300.0, 240.0), 200.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_spin_checkpoint(tmp_path_factory.mktemp("ckpt") / "model_checkpoint.pt", seed=50)


@pytest.fixture(scope="module")
def person_image(tmp_path_factory):
    """A standing mannequin, arms down, 200 px tall, on a plain background (RGB, and its
    silhouette box)."""
    body = SMPL()
    pose = torch.zeros(1, 69)
    pose[0, 15 * 3 + 2], pose[0, 16 * 3 + 2] = -1.2, 1.2  # shoulders: arms down
    with torch.no_grad():
        verts = body(global_orient=torch.tensor([[np.pi, 0.0, 0.0]]), body_pose=pose)
    v = verts.vertices[0].numpy()
    k = PERSON_HEIGHT / np.ptp(v[:, 1])
    c = v.mean(0)
    px = np.stack([(v[:, 0] - c[0]) * k + PERSON_CENTER[0],
                   (v[:, 1] - c[1]) * k + PERSON_CENTER[1], v[:, 2] * k], 1)
    img = render_mesh(px, body.faces_tensor.numpy(), image=np.full((H, W, 3), 210, np.uint8),
                      colors=(0.25, 0.2, 0.2))
    path = tmp_path_factory.mktemp("img") / "person.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    lo, hi = px[:, :2].min(0), px[:, :2].max(0)
    return path, np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def run(inputs, checkpoint, out, *extra):
    return main([*map(str, inputs), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--no-progress", *extra])


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0, min(ax2, bx2) - max(a[0], b[0])) * max(0, min(ay2, by2) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def box_sources(tmp_path, silhouette):
    x, y, w, h = (float(v) for v in silhouette)
    (tmp_path / "box.json").write_text(json.dumps({"bbox": [x, y, w, h]}))
    # OpenPose: two confident keypoints at the box corners, one low-confidence outlier.
    keypoints = [x, y, 0.9, x + w, y + h, 0.8, 5.0, 5.0, 0.1]
    (tmp_path / "pose.json").write_text(json.dumps({"people": [
        {"pose_keypoints_2d": keypoints + [0.0] * (75 - len(keypoints))}]}))
    return {"bbox": (["--bbox", ",".join(f"{v:.3f}" for v in silhouette)], silhouette),
            "bbox-json": (["--bbox-json", str(tmp_path / "box.json")], silhouette),
            "openpose": (["--openpose", str(tmp_path / "pose.json")], silhouette),
            "whole image": ([], np.array([0.0, 0.0, W, H]))}


@pytest.mark.parametrize("source", ["bbox", "bbox-json", "openpose", "whole image", "detect"])
def test_each_box_source_writes_results_in_image_pixels(tmp_path, checkpoint, person_image,
                                                         source):
    image, silhouette = person_image
    if source == "detect":
        args, expected_box = ["--detect"], None
    else:
        args, expected_box = box_sources(tmp_path, silhouette)[source]
    out = tmp_path / "out"
    assert run([image], checkpoint, out, "--save-mesh", *args) == 0
    res = np.load(out / "person.npz")
    assert res["rotmats"].shape == (1, 24, 3, 3) and res["pose"].shape == (1, 72)
    assert res["betas"].shape == (1, 10) and res["cam"].shape == (1, 3)
    box = res["box"][0]
    if expected_box is None:
        assert iou(box, silhouette) > 0.3, f"detected {box}, person at {silhouette}"
    else:
        np.testing.assert_allclose(box, expected_box, atol=1e-3)
    x, y, w, h = box
    np.testing.assert_allclose(res["center"][0], [x + w / 2, y + h / 2], atol=1e-3)
    rescale = 1.0 if source == "whole image" else BOX_RESCALE
    np.testing.assert_allclose(res["scale"][0], rescale * max(w, h) / 200, rtol=1e-6)
    # The vertex joints (24..44) in image pixels = their vertices projected into the crop and
    # mapped back through the inverse crop matrix (the overlay's path).
    s, tx, ty = res["cam"][0]
    ids = SMPL().vertex_joint_ids.numpy()
    verts = res["vertices"][0, ids]
    crop_px = (s * (verts[:, :2] + [tx, ty]) + 1) * 224 / 2 - 0.5
    m = crop_matrix(res["center"][0], float(res["scale"][0]), 224)
    image_px = (crop_px - m[:, 2]) @ np.linalg.inv(m[:, :2]).T
    np.testing.assert_allclose(res["joints_2d"][0, 24:], image_px, atol=2e-2)
    overlay = cv2.imread(str(out / "person_overlay.jpg"))
    assert overlay.shape == (H, W, 3), "the overlay is at the input's full resolution"
    assert cv2.imread(str(out / "person_side.jpg")) is not None
    assert (out / "person_0.obj").is_file()


def test_folder_with_a_corrupt_file_is_reported_not_fatal(tmp_path, checkpoint, person_image,
                                                          capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    image = cv2.imread(str(person_image[0]))
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "c.jpg"), image[::2, ::2])
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    assert run([folder, tmp_path / "missing.jpg"], checkpoint, out, "--no-render") == 0
    printed = capsys.readouterr().out
    assert "2 input(s) written" in printed and "2 skipped" in printed
    assert "b.jpg" in printed and "missing.jpg" in printed
    assert sorted(os.listdir(out)) == ["a.npz", "c.npz"], "no temporary files left behind"


def test_nothing_produced_exits_nonzero(tmp_path, checkpoint):
    (tmp_path / "bad.png").write_bytes(b"nope")
    blank = np.full((240, 320, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    assert run([tmp_path / "bad.png"], checkpoint, tmp_path / "out1") == 1
    # The detector finds nobody on a blank image: skipped as "no person found".
    assert run([tmp_path / "blank.png"], checkpoint, tmp_path / "out2", "--detect") == 1


def test_video_keeps_frame_count_and_rate(tmp_path, checkpoint):
    rng = np.random.default_rng(7)
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for _ in range(5):
        writer.write((rng.random((120, 160, 3)) * 255).astype(np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert run([path], checkpoint, out, "--bbox", "40,10,60,100", "--batch-size", "2") == 0
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) \
        == (160, 120)
    capture.release()
    res = np.load(out / "clip.npz")
    assert res["valid"].tolist() == [True] * 5
    assert res["rotmats"].shape == (5, 24, 3, 3) and res["joints_2d"].shape == (5, 45, 2)
    assert float(res["fps"]) == pytest.approx(10.0)
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_bad_box_options(tmp_path, checkpoint, person_image, capsys):
    image = person_image[0]
    with pytest.raises(SystemExit):
        run([image], checkpoint, tmp_path, "--bbox", "1,2,3,4", "--detect")
    assert run([image], checkpoint, tmp_path, "--bbox", "1,2,0,4") == 2
    assert "bbox" in capsys.readouterr().err
    assert run([image], checkpoint, tmp_path, "--openpose", str(tmp_path / "no.json")) == 2


def test_detector_on_the_synthetic_person(person_image):
    image, silhouette = person_image
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    people = detect_people(rgb)
    assert people and iou(people[0].box, silhouette) > 0.3


def test_predict_with_an_hmr_fast_checkpoint(tmp_path, person_image):
    """hmr-fast's own checkpoints (any backbone, their own crop size) through predict."""
    from hmr_fast.train.build import build_model
    from hmr_fast.train.config import TrainConfig

    cfg = TrainConfig(backbone="resnet18", image_size=64)
    torch.manual_seed(1)
    model = build_model(cfg, torch.device("cpu"))
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "ckpt.pt")
    out = tmp_path / "out"
    assert run([person_image[0]], tmp_path / "ckpt.pt", out, "--bbox", "200,100,150,300") == 0
    res = np.load(out / "person.npz")
    assert res["rotmats"].shape == (1, 24, 3, 3) and np.isfinite(res["joints_2d"]).all()
    assert cv2.imread(str(out / "person_overlay.jpg")).shape == (H, W, 3)


@pytest.mark.parametrize("padding", ["edge", "zero"])
def test_prediction_crops_are_padded_as_the_model_was_trained(tmp_path, padding):
    """A crop over the photo's border is filled as the checkpoint's training crops were (its
    crop_padding); SPIN's weights (black padding) keep zero."""
    import hmr_fast
    from hmr_fast.data.augment import crop_matrix, normalize_image, warp_image
    from hmr_fast.predict import Person, Predictor
    from hmr_fast.train.build import build_model
    from hmr_fast.train.config import TrainConfig

    cfg = TrainConfig(backbone="resnet18", image_size=64, crop_padding=padding)
    torch.manual_seed(2)
    model = build_model(cfg, torch.device("cpu"))
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "ckpt.pt")
    loaded = hmr_fast.load_pretrained(tmp_path / "ckpt.pt")
    assert loaded.crop_padding == padding
    image = np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    person = Person(box=np.array([0.0, 0.0, 10.0, 12.0]), center=np.array([5.0, 6.0]),
                    scale=0.3)  # hangs over the top-left corner
    crop, m = Predictor(loaded).crop(image, person)
    np.testing.assert_array_equal(m, crop_matrix(person.center, person.scale, 64))
    expected = warp_image(image, m, 64, padding=padding)
    np.testing.assert_allclose(crop, normalize_image(expected))
    other = warp_image(image, m, 64, padding="zero" if padding == "edge" else "edge")
    assert not np.allclose(crop, normalize_image(other))
