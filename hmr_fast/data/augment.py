"""Crop + augmentation for HMR training, with OpenCV (one ``cv2.warpAffine`` per sample).

Coordinates
-----------
Image and crop pixels use OpenCV's convention: pixel centres at integer coordinates.
A crop is the square box of side ``b = 200 * scale`` centred at ``center``; it is resampled to
``image_size`` (S) pixels. Keypoints are returned in normalised crop coordinates

    u = (2 * q + 1) / S - 1          (q = crop pixel coordinate)

so that [-1, 1] spans the crop's outer pixel edges, ``u = 2 * (p - center) / b`` without
augmentation, and a horizontal flip is exactly ``u_x -> -u_x``: the convention of HMR's
weak-perspective camera ``x = s * (X + t)``.

Augmentation (``AugConfig``; train only)
----------------------------------------
* zoom ``z ~ U[0.8, 1.23]``: the person appears ``z`` times larger (the box shrinks by ``z``);
* translation ``t ~ U[-20, 20]^2`` crop pixels at S = 224 (scaled by S / 224), the original
  HMR jitter; the person moves by ``t`` in the crop;
* rotation ``r ~ N(0, rot_std)`` degrees clipped to ``2 * rot_std``, with probability
  ``rot_prob`` (off by default); image, 2D and 3D keypoints and the global orientation rotate
  together (counter-clockwise on screen for r > 0);
* flip with p = 0.5: the image is mirrored, 2D keypoints mirrored and permuted (J24_FLIP_PERM;
  HMR19_FLIP_PERM for the 19), 3D keypoints get x negated and the same permutation, the SMPL
  pose is permuted with SMPL_FLIP_PERM and its axis-angle y, z negated;
* colour: per-channel gain ``U[1 - c, 1 + c]`` (``color_jitter = c``, 0 = off by default).

Keypoints that leave the crop keep their coordinates (|u| > 1) *and* their flag: the losses
see where they are, which is still a correct label for the projected body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hmr_fast.body.constants import J24_FLIP_PERM, SMPL_FLIP_PERM

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class AugConfig:
    """Ranges of the training augmentation (defaults: original HMR)."""

    zoom_min: float = 0.8
    zoom_max: float = 1.23
    trans_max: float = 20.0  # crop pixels at image_size 224
    flip_prob: float = 0.5
    rot_std: float = 0.0  # degrees; SPIN uses 30 with rot_prob 0.4
    rot_prob: float = 0.0
    color_jitter: float = 0.0  # SPIN uses 0.4


@dataclass
class AugParams:
    """One sample's augmentation draw. The identity (defaults) is the test-time crop."""

    zoom: float = 1.0
    trans: tuple = (0.0, 0.0)  # crop pixels
    rot: float = 0.0  # degrees, counter-clockwise on screen
    flip: bool = False
    color: tuple = (1.0, 1.0, 1.0)  # RGB gains


def sample_aug_params(rng: np.random.Generator, image_size: int, cfg: AugConfig) -> AugParams:
    """Draw one AugParams from ``cfg`` with ``rng`` (a fixed number of draws, so that equal
    RNG states give equal params whatever the config)."""
    u = rng.random(9)
    zoom = cfg.zoom_min + (cfg.zoom_max - cfg.zoom_min) * u[0]
    tmax = cfg.trans_max * image_size / 224.0
    trans = (float((2 * u[1] - 1) * tmax), float((2 * u[2] - 1) * tmax))
    rot = 0.0
    if u[3] < cfg.rot_prob:
        rot = float(np.clip(rng.standard_normal() * cfg.rot_std, -2 * cfg.rot_std, 2 * cfg.rot_std))
    flip = bool(u[4] < cfg.flip_prob)
    c = cfg.color_jitter
    color = tuple(float(1 - c + 2 * c * v) for v in u[5:8])
    return AugParams(zoom=float(zoom), trans=trans, rot=rot, flip=flip, color=color)


def crop_matrix(center, scale: float, image_size: int, params: AugParams | None = None):
    """(2, 3) float64 affine taking image pixels to crop pixels (flip included).

    q = k * R(rot) (p - center) + (S - 1) / 2 + trans, with k = S * zoom / (200 * scale);
    then x -> S - 1 - x when flipping.
    """
    p = params or AugParams()
    s = float(image_size)
    k = s * p.zoom / (200.0 * float(scale))
    a = math.radians(p.rot)
    # counter-clockwise on screen in a y-down frame
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    lin = k * rot
    off = np.array([(s - 1) / 2 + p.trans[0], (s - 1) / 2 + p.trans[1]]) - lin @ np.asarray(
        center, np.float64
    )
    m = np.concatenate([lin, off[:, None]], 1)
    if p.flip:
        m = np.array([[-1.0, 0.0, s - 1], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def rotation_3d(rot_deg: float) -> np.ndarray:
    """(3, 3): the in-plane rotation of ``crop_matrix`` acting on camera-frame 3D points."""
    a = math.radians(rot_deg)
    return np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1]])


def transform_keypoints_2d(kp: np.ndarray, m: np.ndarray, image_size: int, flip: bool, perm=None):
    """(K, 3) image keypoints + flag -> (K, 3) normalised crop coords + flag.

    ``m`` from ``crop_matrix``; when ``flip`` the rows are permuted with ``perm``
    (default J24_FLIP_PERM; pass HMR19_FLIP_PERM for the 19).
    """
    kp = np.asarray(kp, np.float64)
    q = kp[:, :2] @ m[:, :2].T + m[:, 2]
    out = np.concatenate([(2 * q + 1) / image_size - 1, kp[:, 2:3]], 1)
    if flip:
        out = out[list(J24_FLIP_PERM if perm is None else perm)]
    return out.astype(np.float32)


def transform_keypoints_3d(s3: np.ndarray, rot_deg: float, flip: bool, perm=None) -> np.ndarray:
    """(K, 4) camera-frame 3D keypoints + flag: in-plane rotation, then mirror x + permute."""
    s3 = np.asarray(s3, np.float64).copy()
    if rot_deg:
        s3[:, :3] = s3[:, :3] @ rotation_3d(rot_deg).T
    if flip:
        s3[:, 0] = -s3[:, 0]
        s3 = s3[list(J24_FLIP_PERM if perm is None else perm)]
    return s3.astype(np.float32)


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """(..., 72) SMPL axis-angle pose of the mirrored body: joint permutation + negate y, z."""
    pose = np.asarray(pose)
    p = pose.reshape(*pose.shape[:-1], 24, 3)[..., list(SMPL_FLIP_PERM), :].copy()
    p[..., 1:] *= -1
    return p.reshape(pose.shape)


def rotate_global_orient(pose: np.ndarray, rot_deg: float) -> np.ndarray:
    """(72,) pose with the global orientation pre-multiplied by the in-plane rotation."""
    if not rot_deg:
        return np.asarray(pose)
    pose = np.asarray(pose, np.float64).copy()
    r, _ = cv2.Rodrigues(pose[:3].reshape(3, 1))
    aa, _ = cv2.Rodrigues(rotation_3d(rot_deg) @ r)
    pose[:3] = aa.ravel()
    return pose


def augment_pose(pose: np.ndarray, params: AugParams) -> np.ndarray:
    """(72,) SMPL pose in the augmented crop's camera frame (rotation, then flip)."""
    pose = rotate_global_orient(pose, params.rot)
    if params.flip:
        pose = flip_pose(pose)
    return np.asarray(pose, np.float32)


PADDINGS = {"zero": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE}


def warp_image(
    image: np.ndarray, m: np.ndarray, image_size: int, interp=cv2.INTER_LINEAR, padding="zero"
):
    """``cv2.warpAffine`` of ``image`` with ``m`` to (S, S); outside the image ``padding``:
    "zero" (black, as SPIN's crops) or "edge" (the border pixels replicated, as the original
    HMR's training crops).

    A mirrored ``m`` (a flip, negative determinant) is warped unmirrored and then mirrored:
    OpenCV 4 rounds source coordinates to 1/32 pixel, so warping with the mirrored matrix
    would differ from the exact mirror by a few grey levels at edges.
    """
    m = np.asarray(m, np.float64)
    mirrored = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0] < 0
    if mirrored:
        m = np.array([[-1.0, 0.0, image_size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    crop = cv2.warpAffine(
        image,
        m,
        (image_size, image_size),
        flags=interp,
        borderMode=PADDINGS[padding],
        borderValue=0,
    )
    return np.ascontiguousarray(crop[:, ::-1]) if mirrored else crop


def normalize_image(rgb: np.ndarray, color=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, colour gains applied, ImageNet-normalised."""
    x = rgb.astype(np.float32) * (np.asarray(color, np.float32) / 255.0)
    if any(c != 1.0 for c in color):
        np.clip(x, 0.0, 1.0, out=x)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize_image(chw: np.ndarray) -> np.ndarray:
    """Inverse of ``normalize_image`` (without colour gains): -> (H, W, 3) uint8 RGB."""
    x = np.asarray(chw, np.float32).transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def crop_to_image(u: np.ndarray, center, scale: float) -> np.ndarray:
    """(..., 2) normalised crop coords of the un-augmented crop -> image pixels."""
    return np.asarray(u, np.float64) * (100.0 * float(scale)) + np.asarray(center, np.float64)


def augment_sample(
    image: np.ndarray,
    center,
    scale: float,
    part: np.ndarray,
    s3: np.ndarray,
    pose: np.ndarray,
    params: AugParams,
    image_size: int = 224,
    padding: str = "zero",
    bgr: bool = False,
) -> dict:
    """Crop and augment one sample (the training dataset's item is made by this).

    image (H, W, 3) uint8 RGB (BGR with ``bgr``: only the crop is converted); part (24, 3)
    image pixels + flag; s3 (24, 4); pose (72,); ``padding`` as ``warp_image``.
    Returns numpy arrays: ``img`` (3, S, S) float32 normalised, ``part`` (24, 3) normalised
    crop coords, ``S`` (24, 4), ``pose`` (72,), and ``matrix`` (2, 3) image -> crop pixels.
    """
    m = crop_matrix(center, scale, image_size, params)
    crop = warp_image(image, m, image_size, padding=padding)
    if bgr:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    return {
        "img": normalize_image(crop, params.color),
        "part": transform_keypoints_2d(part, m, image_size, params.flip),
        "S": transform_keypoints_3d(s3, params.rot, params.flip),
        "pose": augment_pose(pose, params),
        "matrix": m,
    }
