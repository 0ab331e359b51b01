"""Crop / augmentation: keypoints follow the pixels; flips match an independent mirror."""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmr_fast.body.constants import J24_NAMES, JOINT_NAMES
from hmr_fast.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugConfig,
    AugParams,
    augment_sample,
    denormalize_image,
    normalize_image,
    sample_aug_params,
)


def _mirror_name(name):
    for a, b in (("left", "right"), ("right", "left")):
        if a + "_" in name:
            return name.replace(a + "_", b + "_")
    return name


def _name_perm(names):
    return [names.index(_mirror_name(n)) for n in names]


def _sample(rng, h=300, w=400):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    center = rng.uniform([120, 100], [280, 200])
    scale = rng.uniform(0.8, 1.3)
    part = np.concatenate([rng.uniform(0, [w, h], (24, 2)), rng.integers(0, 2, (24, 1))], 1)
    s3 = np.concatenate([rng.normal(size=(24, 3)), rng.integers(0, 2, (24, 1))], 1)
    pose = rng.normal(scale=0.5, size=72)
    return image, center, scale, part, s3, pose


def _u_expected(p, center, scale, size, prm):
    """Independent forward map of the (unrotated) crop to normalised coordinates."""
    b = 200 * scale
    u = 2 * prm.zoom * (np.asarray(p) - center) / b + 2 * np.asarray(prm.trans) / size
    if prm.flip:
        u[..., 0] = -u[..., 0]
    return u


def test_flip_matches_independent_mirror():
    rng = np.random.default_rng()
    image, center, scale, part, s3, pose = _sample(rng)
    size = 64
    prm = AugParams(zoom=rng.uniform(0.8, 1.2), trans=tuple(rng.uniform(-5, 5, 2)))
    a = augment_sample(image, center, scale, part, s3, pose, prm, size)
    prm_f = AugParams(zoom=prm.zoom, trans=prm.trans, flip=True)
    b = augment_sample(image, center, scale, part, s3, pose, prm_f, size)
    perm = _name_perm(list(J24_NAMES))
    # 2D: mirrored (u_x -> -u_x) and left/right swapped by name
    exp = a["part"][perm].copy()
    exp[:, 0] *= -1
    np.testing.assert_allclose(b["part"], exp, atol=1e-5)
    # 3D: x negated, swapped
    exp3 = a["S"][perm].copy()
    exp3[:, 0] *= -1
    np.testing.assert_allclose(b["S"], exp3, atol=1e-6)
    # pose: each joint's rotation conjugated by the mirror diag(-1,1,1), swapped by name
    mirror = np.diag([-1.0, 1.0, 1.0])
    rots = Rotation.from_rotvec(a["pose"].reshape(24, 3).astype(np.float64)).as_matrix()
    exp_rots = mirror @ rots[_name_perm(list(JOINT_NAMES))] @ mirror
    got = Rotation.from_rotvec(b["pose"].reshape(24, 3).astype(np.float64)).as_matrix()
    np.testing.assert_allclose(got, exp_rots, atol=1e-5)
    # image: the mirror of the unflipped crop
    ia, ib = denormalize_image(a["img"]), denormalize_image(b["img"])
    assert np.abs(ib.astype(int) - cv2.flip(ia, 1).astype(int)).max() <= 1


@pytest.mark.parametrize("flip", [False, True])
def test_dot_lands_where_keypoint_says(flip):
    rng = np.random.default_rng()
    h, w, size = 240, 320, 224
    image = np.zeros((h, w, 3), np.uint8)
    center = np.array([160.0, 120.0]) + rng.uniform(-10, 10, 2)
    scale = 1.0
    p = center + rng.uniform(-50, 50, 2)
    # an anti-aliased disc of radius 2 px at a sub-pixel position
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(xx - p[0], yy - p[1])
    image[..., 1] = (255 * np.clip(2.5 - d, 0, 1)).astype(np.uint8)
    part = np.zeros((24, 3))
    part[7] = [p[0], p[1], 1.0]
    prm = AugParams(zoom=1.2, trans=(float(rng.uniform(-20, 20)), float(rng.uniform(-20, 20))),
                    flip=flip)  # fmt: skip
    out = augment_sample(image, center, scale, part, np.zeros((24, 4)), np.zeros(72), prm, size)
    perm = _name_perm(list(J24_NAMES))
    j = perm[7] if flip else 7
    u = out["part"][j, :2]
    np.testing.assert_allclose(u, _u_expected(p, center, scale, size, prm), atol=1e-5)
    g = denormalize_image(out["img"])[..., 1].astype(np.float64)
    g[g < 20] = 0
    yy, xx = np.mgrid[0:size, 0:size]
    found = np.array([(g * xx).sum(), (g * yy).sum()]) / g.sum()
    q = ((u + 1) * size - 1) / 2  # normalised -> crop pixels
    assert np.linalg.norm(found - q) < 1.5, (found, q)


def test_rotation_moves_2d_3d_and_orientation_together():
    rng = np.random.default_rng()
    center, scale, size = np.array([200.0, 150.0]), 1.0, 128
    s3 = np.concatenate([rng.normal(size=(24, 3)), np.ones((24, 1))], 1)
    part = np.concatenate([center + 40 * s3[:, :2], np.ones((24, 1))], 1)  # orthographic
    pose = rng.normal(scale=0.7, size=72)
    rot = float(rng.uniform(-60, 60))
    zoom = float(rng.uniform(0.8, 1.2))
    prm = AugParams(zoom=zoom, rot=rot)
    img = np.zeros((300, 400, 3), np.uint8)
    out = augment_sample(img, center, scale, part, s3, pose, prm, size)
    # the projected rotated 3D joints give the rotated 2D keypoints
    np.testing.assert_allclose(out["part"][:, :2], 2 * zoom * 40 * out["S"][:, :2] / 200, atol=1e-4)
    # a body-frame direction, seen through the new global orientation, turns the same way
    v = rng.normal(size=3)
    x_old = Rotation.from_rotvec(pose[:3]).apply(v)
    x_new = Rotation.from_rotvec(out["pose"][:3].astype(np.float64)).apply(v)
    p = np.concatenate([center + 40 * x_old[None, :2], [[1.0]]], 1)
    tmp = np.zeros((24, 3))
    tmp[0] = p[0]
    u = augment_sample(img, center, scale, tmp, s3, pose, prm, size)["part"][0, :2]
    np.testing.assert_allclose(u, 2 * zoom * 40 * x_new[:2] / 200, atol=1e-4)
    np.testing.assert_allclose(x_new[2], x_old[2], atol=1e-5)
    # positive angles turn counter-clockwise on screen (y down): +x goes up
    tmp[0] = [center[0] + 50, center[1], 1]
    u = augment_sample(img, center, scale, tmp, s3, pose, AugParams(rot=90.0), size)["part"][0]
    np.testing.assert_allclose(u[:2], [0, -0.5], atol=1e-6)
    np.testing.assert_allclose(out["pose"][3:], pose[3:], atol=1e-6)  # body pose untouched


def test_sample_params_ranges():
    rng = np.random.default_rng()
    cfg = AugConfig()
    ps = [sample_aug_params(rng, 224, cfg) for _ in range(2000)]
    z = np.array([p.zoom for p in ps])
    t = np.array([p.trans for p in ps])
    f = np.array([p.flip for p in ps])
    assert z.min() >= 0.8 and z.max() <= 1.23 and z.max() - z.min() > 0.35
    assert np.abs(t).max() <= 20 and np.abs(t).max() > 18
    assert 0.44 < f.mean() < 0.56
    assert all(p.rot == 0 and p.color == (1.0, 1.0, 1.0) for p in ps)
    cfg = AugConfig(rot_std=30, rot_prob=1.0, color_jitter=0.4)
    ps = [sample_aug_params(rng, 112, cfg) for _ in range(500)]
    r = np.array([p.rot for p in ps])
    c = np.array([p.color for p in ps])
    assert np.abs(r).max() <= 60 and r.std() > 15
    assert c.min() >= 0.6 and c.max() <= 1.4
    assert np.abs([p.trans for p in ps]).max() <= 10  # scaled with the crop size


def test_normalize_image():
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = normalize_image(rgb)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    r, c, ch = 2, 3, 1
    exp = (rgb[r, c, ch] / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
    assert abs(x[ch, r, c] - exp) < 1e-5
    np.testing.assert_array_equal(denormalize_image(x), rgb)
