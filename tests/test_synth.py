"""Synthetic dataset: annotations agree with an independent forward of the body model,
masks agree with the keypoints, visibility follows occlusion, output is deterministic."""

import colorsys
import math

import cv2
import numpy as np
import pytest
import torch

from hmr_fast.body.constants import J24_NAMES
from hmr_fast.data.datasets import KeypointDataset
from hmr_fast.data.formats import load_annotations
from hmr_fast.data.synth import (
    keypoint_visibility,
    load_model,
    main,
    make_background,
    render_sample,
    sample_scene,
    synthesize,
)
from hmr_fast.render import PART_NAMES, Raster

N, SIZE = 6, 64


@pytest.fixture(scope="module")
def synth_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    a = synthesize(root / "a", N, seed=3, image_size=SIZE, workers=1, progress=False)
    b = synthesize(root / "b", N, seed=3, image_size=SIZE, workers=2, progress=False)
    return a.parent, b.parent


def test_files_and_format(synth_dirs):
    d = synth_dirs[0]
    ann = load_annotations(d / "annotations.npz")
    assert len(ann["imgname"]) == N and (ann["has_smpl"] == 1).all()
    for i in range(N):
        img = cv2.imread(str(d / ann["imgname"][i]))
        assert img.shape == (SIZE, SIZE, 3)
        sil = cv2.imread(str(d / ann["maskname"][i]), cv2.IMREAD_GRAYSCALE)
        parts = cv2.imread(str(d / ann["partname"][i]), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(sil)) <= {0, 255} and set(np.unique(parts)) <= set(range(7))
        np.testing.assert_array_equal(sil > 0, parts > 0)
        assert (parts > 0).sum() > 50
    assert np.isfinite(ann["part"]).all() and np.isfinite(ann["S"]).all()
    invalid = [J24_NAMES.index(n) for n in ("spine_h36m", "jaw_h36m", "head_h36m")]
    assert not ann["part"][:, invalid, 2].any() and not ann["S"][:, invalid, 3].any()
    assert (ann["S"][:, :16, 3] == 1).all()


def test_annotations_match_independent_forward(synth_dirs):
    d = synth_dirs[0]
    ann = load_annotations(d / "annotations.npz")
    with np.load(d / "annotations.npz") as raw:
        focal, cam_t = raw["focal"].astype(np.float64), raw["cam_t"].astype(np.float64)
    model = load_model()
    reg = model.hmr_keypoint_regressor().double()
    pose = torch.tensor(ann["pose"], dtype=torch.float32)
    with torch.no_grad():
        out = model(betas=torch.tensor(ann["shape"]), global_orient=pose[:, :3],
                    body_pose=pose[:, 3:])  # fmt: skip
    verts = out.vertices.double() + torch.tensor(cam_t)[:, None]
    kp = torch.einsum("kv,bvc->bkc", reg, verts).numpy()  # (N, 19, 3) camera frame
    lsp = kp[:, :14]
    np.testing.assert_allclose(ann["S"][:, :14, :3], lsp, atol=2e-5)
    np.testing.assert_allclose(ann["S"][:, 19:, :3], kp[:, 14:], atol=2e-5)
    hips = (lsp[:, 2] + lsp[:, 3]) / 2
    np.testing.assert_allclose(ann["S"][:, 14, :3], hips, atol=2e-5)
    c = (SIZE - 1) / 2
    px = focal[:, None, None] * kp[..., :2] / kp[..., 2:3] + c
    np.testing.assert_allclose(ann["part"][:, :14, :2], px[:, :14], atol=1e-3)
    # the box is 1.2x the projected mesh
    vp = focal[:, None, None] * verts[..., :2].numpy() / verts[..., 2:3].numpy() + c
    lo, hi = vp.min(1), vp.max(1)
    np.testing.assert_allclose(ann["center"], (lo + hi) / 2, atol=1e-3)
    np.testing.assert_allclose(ann["scale"], 1.2 * (hi - lo).max(1) / 200, rtol=1e-5)
    # upright-ish: the head top is above the pelvis in every image (y down)
    assert (ann["part"][:, 13, 1] < ann["part"][:, 14, 1]).all()
    # keypoints labelled visible sit on their own body part (or just off the silhouette)
    own = {"right_wrist": "right_arm", "left_wrist": "left_arm", "right_ankle": "right_leg",
           "left_ankle": "left_leg", "head_top": "head", "nose": "head"}  # fmt: skip
    checked = 0
    for i in range(N):
        parts = cv2.imread(str(d / ann["partname"][i]), cv2.IMREAD_GRAYSCALE)
        for name, part in own.items():
            x, y, v = ann["part"][i, J24_NAMES.index(name)]
            xi, yi = int(round(x)), int(round(y))
            if v > 0 and parts[yi, xi] > 0:
                assert PART_NAMES[parts[yi, xi]] == part, (i, name)
                checked += 1
    assert checked >= N


def test_deterministic_across_workers_and_runs(synth_dirs):
    a, b = synth_dirs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * N + 1
    for f in files:
        if f.suffix == ".npz":
            with np.load(a / f) as x, np.load(b / f) as y:
                assert x.files == y.files
                for k in x.files:
                    np.testing.assert_array_equal(x[k], y[k])
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f


def _scene(yaw, pose=None):
    scene = sample_scene(0, 0, 96)
    r, _ = cv2.Rodrigues(
        np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        @ np.diag([1.0, -1.0, -1.0])
    )
    scene["pose"] = np.zeros(72) if pose is None else pose.copy()
    scene["pose"][:3] = r.ravel()
    scene["betas"] = np.zeros(10)
    scene["offset"] = np.zeros(2)
    return scene


def test_visibility_follows_occlusion(tmp_path):
    import hmr_fast.data.synth as synth

    model = load_model()
    synth._STATE.update(image_size=96, out=tmp_path, jpeg=[cv2.IMWRITE_JPEG_QUALITY, 90])
    for sub in ("images", "masks", "parts"):
        (tmp_path / sub).mkdir()
    from hmr_fast.render import face_labels, vertex_part_labels

    faces = np.asarray(model.faces, np.int64)
    synth._STATE.update(faces=faces, face_part=face_labels(
        vertex_part_labels(model.lbs_weights.numpy()), faces))  # fmt: skip
    jobs = list(synth._forward_jobs(model, [_scene(0.0), _scene(math.pi), _scene(math.pi / 2)], 96))
    front, back, side = (render_sample(j)["part"] for j in jobs)
    face = [J24_NAMES.index(n) for n in ("nose", "left_eye", "right_eye")]
    assert front[face, 2].all() and not back[face, 2].any()
    lsp = list(range(14))
    assert front[lsp, 2].all()  # T-pose facing the camera: nothing hidden
    # side view (yaw +90: the body's left faces the camera... or its right): the far arm's
    # wrist and elbow hide behind the torso / near arm, the near ones stay visible
    lw, rw = J24_NAMES.index("left_wrist"), J24_NAMES.index("right_wrist")
    assert side[lw, 2] + side[rw, 2] == 1


def test_keypoint_visibility_rule():
    # a 4x4 raster: face 0 (torso) on the left half, face 1 (left arm) on the right half
    fi = np.array([[0, 0, 1, 1]] * 4)
    raster = Raster(np.full((4, 4), 2.0, np.float32), fi, np.zeros((4, 4, 3), np.float32))
    face_part = np.array([2, 3], np.uint8)
    kp = np.full((24, 3), [-5.0, -5.0, 3.0])  # outside: invisible
    kp[J24_NAMES.index("left_wrist")] = [3, 1, 3.0]  # on its own arm
    kp[J24_NAMES.index("right_wrist")] = [3, 2, 3.0]  # behind the left arm
    kp[J24_NAMES.index("left_shoulder")] = [0, 0, 3.0]  # on the torso: allowed
    kp[J24_NAMES.index("nose")] = [1, 1, 2.01]  # surface point within 2 cm
    kp[J24_NAMES.index("left_eye")] = [1, 2, 2.5]  # behind the surface
    vis = keypoint_visibility(kp, raster, face_part, 4)
    expect = {"left_wrist": 1, "right_wrist": 0, "left_shoulder": 1, "nose": 1, "left_eye": 0}
    for name, v in expect.items():
        assert vis[J24_NAMES.index(name)] == v, name
    assert vis.sum() == 3


def test_dataset_reads_synth(synth_dirs):
    d = synth_dirs[0]
    ds = KeypointDataset(d / "annotations.npz", d, image_size=32, train=False, return_masks=True)
    item = ds[1]
    assert item["has_smpl"] == 1 and item["has_3d"] == 1 and item["has_mask"] == 1
    assert item["part_mask"].shape == (32, 32) and item["part_mask"].max() <= 6
    assert item["silhouette"].sum() > 10
    # the visible keypoints lie inside the crop
    kp = item["keypoints_2d"]
    assert (kp[kp[:, 2] > 0, :2].abs() <= 1).all()


def test_cli(tmp_path):
    assert main(["--out", str(tmp_path / "s"), "--n", "2", "--image-size", "48",
                 "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "s" / "annotations.npz").is_file()
    assert main(["--out", str(tmp_path / "t"), "--n", "0", "--no-progress"]) == 2
    assert main(["--out", str(tmp_path / "u"), "--n", "2", "--pose-spread", "-1",
                 "--no-progress"]) == 2  # fmt: skip


def test_fixed_palette_keeps_part_colours_and_plain_background_is_a_gradient(tmp_path):
    scenes = [sample_scene(5, i, SIZE, palette="fixed") for i in range(8)]
    random_ = [sample_scene(5, i, SIZE) for i in range(8)]
    hue = lambda c: np.array([colorsys.rgb_to_hsv(*rgb)[0] for rgb in c])  # noqa: E731
    fixed_hues = np.stack([hue(s["colors"]) for s in scenes])
    # every part within the jitter of its own hue (head 0, torso 1/6, ...), on every image
    target = np.arange(6) / 6
    dist = np.abs((fixed_hues - target + 0.5) % 1.0 - 0.5)
    assert dist.max() <= 0.031
    random_hues = np.stack([hue(s["colors"]) for s in random_])
    assert np.abs((random_hues - target + 0.5) % 1.0 - 0.5).max() > 0.1
    # the other random choices do not depend on the palette
    for a, b in zip(scenes, random_):
        np.testing.assert_array_equal(a["pose"], b["pose"])
        assert a["bg_seed"] == b["bg_seed"]

    rng = lambda: np.random.default_rng(11)  # noqa: E731
    plain = make_background(rng(), 96, "plain").astype(float)
    # a linear two-colour gradient (plus mild noise): a plane fits every channel closely
    yy, xx = np.mgrid[0:96, 0:96]
    design = np.stack([np.ones(96 * 96), xx.ravel(), yy.ravel()], 1)
    for ch in range(3):
        coef, *_ = np.linalg.lstsq(design, plain[..., ch].ravel(), rcond=None)
        residual = plain[..., ch].ravel() - design @ coef
        assert residual.std() < 13.0
    with pytest.raises(ValueError, match="background"):
        synthesize(tmp_path / "x", 1, background="noisy", progress=False)
    with pytest.raises(ValueError, match="palette"):
        synthesize(tmp_path / "x", 1, palette="pastel", progress=False)


def test_segments_palette_colours_every_limb_segment(tmp_path):
    from hmr_fast.body.constants import JOINT_NAMES
    from hmr_fast.data.synth import SEGMENT_OF_JOINT, SEGMENTS

    # every joint belongs to exactly one segment; left and right limbs never share one
    assert sorted(n for names in SEGMENTS for n in names) == sorted(JOINT_NAMES)
    for name in JOINT_NAMES:
        if name.startswith("left_") and name != "left_collar":  # collars: upper torso
            assert SEGMENT_OF_JOINT[JOINT_NAMES.index(name)] != SEGMENT_OF_JOINT[
                JOINT_NAMES.index("right_" + name[5:])]

    def limb_hue_purity(palette):
        """Fraction of each limb's pixels within 0.03 of the limb's median hue (averaged)."""
        d = tmp_path / palette
        synthesize(d, 4, seed=2, image_size=128, workers=1, palette=palette,
                   background="plain", quality=100, progress=False)  # fmt: skip
        purity = []
        for i in range(4):
            img = cv2.imread(str(d / "images" / f"{i:06d}.jpg"))[:, :, ::-1] / 255.0
            parts = cv2.imread(str(d / "parts" / f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
            for limb in (3, 4, 5, 6):  # left/right arm, left/right leg
                inner = cv2.erode((parts == limb).astype(np.uint8), np.ones((3, 3))) > 0
                if inner.sum() < 30:
                    continue
                hue = np.array([colorsys.rgb_to_hsv(*p)[0] for p in img[inner]])
                med = np.median(hue)
                purity.append(np.mean(np.abs((hue - med + 0.5) % 1.0 - 0.5) < 0.03))
        return float(np.mean(purity))

    # one hue per limb with "fixed"; upper and lower segments in different hues with "segments"
    fixed, segments = limb_hue_purity("fixed"), limb_hue_purity("segments")
    print(f"limb hue purity: fixed {fixed:.2f}, segments {segments:.2f}")
    assert fixed > 0.85 and segments < 0.75


def test_frontal_views_face_the_camera():
    def facing_angles(views):
        angles = []
        for i in range(200):
            scene = sample_scene(9, i, SIZE, views=views)
            rot, _ = cv2.Rodrigues(scene["pose"][:3])
            forward = rot @ np.array([0.0, 0.0, 1.0])  # the body's front in camera space
            angles.append(math.acos(np.clip(-forward[2], -1, 1)))  # 0 = facing the camera
        return np.array(angles)

    frontal, wide = facing_angles("frontal"), facing_angles("all")
    assert frontal.max() < 0.7 + 0.45  # yaw clip plus the pitch / roll tilt
    assert (wide > 1.5).mean() > 0.1
    # the body pose follows the pose spread; nothing else does
    narrow = sample_scene(9, 3, SIZE, pose_spread=0.05)
    assert not np.array_equal(narrow["pose"][3:], sample_scene(9, 3, SIZE)["pose"][3:])
    np.testing.assert_array_equal(narrow["betas"], sample_scene(9, 3, SIZE)["betas"])
    # the body pose and shape do not depend on the view setting
    a, b = sample_scene(9, 3, SIZE, views="frontal"), sample_scene(9, 3, SIZE)
    np.testing.assert_array_equal(a["pose"][3:], b["pose"][3:])
    np.testing.assert_array_equal(a["betas"], b["betas"])
