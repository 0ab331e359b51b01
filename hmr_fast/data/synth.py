"""A synthetic HMR dataset rendered from the body model (no real images needed).

``hmr-fast synth --out DIR --n N [--seed S] [--image-size 224] [--model-path P] [--workers W]``

Each image shows one body: the procedural body of ``SMPL()`` or the user's SMPL file
(``--model-path``), posed by ``synth_mocap.sample_poses`` (or rows of a ``--mocap`` npz) with
N(0, 1) shapes, a global orientation that is upright-ish (pitch / roll within about 15 degrees)
and turned by a yaw that is mostly within +-100 degrees of facing the camera (one image in five
any yaw), seen by a perspective camera (field of view 25..60 degrees) from the distance at
which the body is 45..85 % of the image high, shifted off-centre by up to 10 %. Surfaces are
coloured per body part (six distinct hues per image; ``--palette fixed`` keeps each part's
hue) with Lambert shading from a random light, over a random background (smooth colour noise,
gradients, random shapes, or mixtures).

Output (the annotation format of ``hmr_fast.data.formats``; image root = DIR):

* ``DIR/images/NNNNNN.jpg``; ``DIR/masks/NNNNNN.png`` silhouettes (0 / 255);
  ``DIR/parts/NNNNNN.png`` part labels (0 background, 1 head, 2 torso, 3 left arm,
  4 right arm, 5 left leg, 6 right leg; ``hmr_fast.render.PART_NAMES``);
* ``DIR/annotations.npz`` with ``imgname``, ``maskname``, ``partname``, ``center`` / ``scale``
  (the projected mesh's box, x 1.2), ``part`` (J24 pixels + visibility), ``S`` (J24 camera-frame
  metres + validity), ``pose`` (72; ``pose[:3]`` the global orientation in the camera frame:
  x right, y down, z forward), ``shape`` (10), ``has_smpl`` = 1, and the camera: ``focal``
  (N,) pixels, ``cam_t`` (N, 3) the body translation (SMPL ``transl``) in the camera frame.

Keypoints: HMR's 19 from ``SMPL.hmr_keypoint_regressor()`` fill J24 slots 0..13 and 19..23;
slot 14 (pelvis) is the midpoint of the hips and 15 (thorax) the midpoint of the shoulders;
16..18 (H3.6M spine, jaw, head) have no equivalent and are marked invalid (flag 0 in ``part``
and ``S``). A keypoint is visible when it projects into the image and the z-buffer's nearest
surface at its pixel belongs to one of the keypoint's own body parts (e.g. a knee behind the
other leg or an arm is occluded, a knee under its own trouser surface is not); the face
keypoints (mesh surface points) use a plain depth test (2 cm tolerance) instead.

Every image depends only on (seed, index), so on one machine the files are byte-identical for
any ``--workers`` (the body model runs single-threaded for that reason).
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from hmr_fast.body.constants import HMR19_FROM_J24, J24_NAMES, JOINT_NAMES
from hmr_fast.data.formats import NUM_KP, save_annotations
from hmr_fast.data.synth_mocap import POSE_SPREAD, check_spread, sample_poses, sample_shapes
from hmr_fast.render import (
    face_labels,
    face_normals,
    label_map,
    perspective_pixels,
    rasterize,
    vertex_part_labels,
)

CHUNK = 32  # SMPL forward batch; fixed so that outputs do not depend on --workers
FACE_KEYPOINTS = (19, 20, 21, 22, 23)  # nose, eyes, ears: mesh surface points
INVALID_J24 = (16, 17, 18)  # H3.6M spine / jaw / head: no counterpart on the model
_HEAD, _TORSO, _LARM, _RARM, _LLEG, _RLEG = 1, 2, 3, 4, 5, 6
# Body parts whose surface may cover each J24 keypoint without hiding it.
OWN_PARTS = {
    "right_ankle": (_RLEG,), "right_knee": (_RLEG,), "right_hip": (_RLEG, _TORSO),
    "left_hip": (_LLEG, _TORSO), "left_knee": (_LLEG,), "left_ankle": (_LLEG,),
    "right_wrist": (_RARM,), "right_elbow": (_RARM,), "right_shoulder": (_RARM, _TORSO),
    "left_shoulder": (_LARM, _TORSO), "left_elbow": (_LARM,), "left_wrist": (_LARM,),
    "neck": (_TORSO, _HEAD), "head_top": (_HEAD,), "pelvis_mpii": (_TORSO, _LLEG, _RLEG),
    "thorax_mpii": (_TORSO, _HEAD, _LARM, _RARM),
}  # fmt: skip
SURFACE_TOL = 0.02  # metres, depth test of the face keypoints

# set in the parent before forking; read by the render workers
_STATE: dict = {}


# ---------------------------------------------------------------------------- scene sampling
def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


VIEWS = ("all", "frontal")


def sample_orientation(rng: np.random.Generator, views: str = "all") -> np.ndarray:
    """(3,) axis-angle global orientation in the camera frame (x right, y down, z forward).

    Upright and facing the camera is a rotation of pi about x (HMR's mean orientation);
    the body is then turned about the vertical by the yaw, and tilted a little. ``"all"``:
    yaw ~ N(0, 0.9 rad), or uniform one time in five; ``"frontal"``: yaw ~ N(0, 0.35 rad)
    within +-0.7 rad, facing the camera.
    """
    if views == "frontal":
        rng.random()  # the same draws as "all": the other choices stay the same
        yaw = float(np.clip(rng.normal(0, 0.35), -0.7, 0.7))
    elif rng.random() < 0.2:
        yaw = rng.uniform(-math.pi, math.pi)
    else:
        yaw = rng.normal(0, 0.9)
    yaw = float(np.clip(yaw, -math.pi, math.pi))
    pitch, roll = rng.normal(0, 0.12, 2).clip(-0.3, 0.3)
    r = _rot_z(roll) @ _rot_x(pitch) @ _rot_y(yaw) @ _rot_x(math.pi)
    aa, _ = cv2.Rodrigues(r)
    return aa.ravel()


PALETTES = ("random", "fixed", "segments")
# "segments": one colour per limb segment, so that elbows and knees show as colour edges.
SEGMENTS = (
    ("head", "neck"), ("spine2", "spine3", "left_collar", "right_collar"),
    ("pelvis", "spine1"), ("left_shoulder",), ("left_elbow", "left_wrist", "left_hand"),
    ("right_shoulder",), ("right_elbow", "right_wrist", "right_hand"), ("left_hip",),
    ("left_knee", "left_ankle", "left_foot"), ("right_hip",),
    ("right_knee", "right_ankle", "right_foot"),
)  # fmt: skip
SEGMENT_OF_JOINT = tuple(
    next(i for i, names in enumerate(SEGMENTS) if name in names) for name in JOINT_NAMES
)


def sample_scene(
    seed: int,
    index: int,
    image_size: int,
    mocap_pose=None,
    palette: str = "random",
    background: str = "clutter",
    views: str = "all",
    pose_spread: float = POSE_SPREAD,
) -> dict:
    """All random choices for image ``index`` (an RNG keyed by (seed, index)).

    ``palette="random"`` rotates the six part hues by a random offset per image, so colour
    says nothing about which part is which; ``"fixed"`` keeps each part's hue (head red,
    torso yellow, left arm green, ... up to a small jitter), like a uniform of known colours:
    left from right and front from back are then visible, as faces and clothing make them in
    real photographs. ``"segments"`` gives each of the 11 ``SEGMENTS`` (upper arm, forearm,
    thigh, shin, ...) its own fixed hue, which also marks elbows and knees.
    """
    rng = np.random.default_rng([seed, index])
    pose = sample_poses(1, rng, pose_spread)[0].astype(np.float64)
    if mocap_pose is not None:
        pose[3:] = mocap_pose[index % len(mocap_pose), 3:]
    pose[:3] = sample_orientation(rng, views)
    fov = math.radians(rng.uniform(25, 60))
    hue0 = rng.random()  # drawn for every palette: the pose above does not depend on it
    if palette == "fixed":
        hue0 = 0.0
    if palette == "segments":
        n = len(SEGMENTS)
        hues = (np.arange(n) * 5 % n / n + rng.uniform(-0.015, 0.015, n)) % 1.0
    else:
        hues = (hue0 + np.arange(6) / 6 + rng.uniform(-0.03, 0.03, 6)) % 1.0
    colors = np.array(
        [colorsys.hsv_to_rgb(h, rng.uniform(0.35, 0.8), rng.uniform(0.6, 0.95)) for h in hues]
    )
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.5), -1.0])
    return {
        "index": index,
        "pose": pose,
        "betas": sample_shapes(1, rng)[0].astype(np.float64),
        "focal": image_size / (2 * math.tan(fov / 2)),
        "height_frac": rng.uniform(0.45, 0.85),
        "offset": rng.uniform(-0.1, 0.1, 2) * image_size,
        "colors": colors,
        "light": light / np.linalg.norm(light),
        "ambient": rng.uniform(0.3, 0.5),
        "bg_seed": int(rng.integers(1 << 62)),
        "background": background,
        "palette": palette,
        "blur": bool(rng.random() < 0.5),
    }


def place_body(vertices: np.ndarray, scene: dict, image_size: int) -> np.ndarray:
    """Camera-frame translation putting the body at the scene's distance and offset."""
    lo, hi = vertices.min(0), vertices.max(0)
    mid = (lo + hi) / 2
    f = scene["focal"]
    dist = f * (hi[1] - lo[1]) / (scene["height_frac"] * image_size) + (hi[2] - lo[2]) / 2
    t = np.empty(3)
    t[:2] = -mid[:2] + scene["offset"] * dist / f
    t[2] = dist - mid[2]
    return t


# ------------------------------------------------------------------------------- backgrounds
def _random_color(rng):
    return rng.integers(0, 256, 3).tolist()


BACKGROUNDS = ("clutter", "plain")


def make_background(rng: np.random.Generator, size: int, style: str = "clutter") -> np.ndarray:
    """(S, S, 3) uint8 RGB background.

    ``"clutter"``: smooth colour noise, a gradient, random shapes, or a mix, so that the body
    has to be found among distractors. ``"plain"``: a two-colour gradient only, an easy
    figure-ground for short from-scratch runs.
    """
    kind = rng.integers(4)
    if style == "plain":
        kind = 1
    if kind in (0, 3):
        k = int(rng.integers(3, 12))
        low = rng.integers(0, 256, (k, k, 3)).astype(np.uint8)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = (math.cos(a) * xx + math.sin(a) * yy) - min(0, math.cos(a)) - min(0, math.sin(a))
        t = t / (abs(math.cos(a)) + abs(math.sin(a)))
        c0, c1 = rng.integers(0, 256, (2, 3))
        img = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    if kind >= 2:
        for _ in range(int(rng.integers(4, 16))):
            shape = rng.integers(4)
            c = _random_color(rng)
            p = rng.integers(-size // 4, size + size // 4, 4).tolist()
            if shape == 0:
                cv2.rectangle(img, p[:2], p[2:], c, -1)
            elif shape == 1:
                cv2.circle(img, p[:2], int(rng.integers(4, size // 3)), c, -1, cv2.LINE_AA)
            elif shape == 2:
                cv2.line(img, p[:2], p[2:], c, int(rng.integers(1, 8)), cv2.LINE_AA)
            else:
                pts = rng.integers(0, size, (int(rng.integers(3, 6)), 2)).astype(np.int32)
                cv2.fillPoly(img, [pts], c, cv2.LINE_AA)
    noise = rng.normal(0, rng.uniform(0, 12), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------- rendering
def j24_from_keypoints(kp19: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(19, D) HMR keypoints -> ((24, D) J24 positions, (24,) validity)."""
    out = np.zeros((NUM_KP, kp19.shape[1]))
    out[list(HMR19_FROM_J24)] = kp19
    out[14] = (kp19[2] + kp19[3]) / 2  # pelvis: mid-hips
    out[15] = (kp19[8] + kp19[9]) / 2  # thorax: mid-shoulders
    valid = np.ones(NUM_KP)
    valid[list(INVALID_J24)] = 0
    return out, valid


def keypoint_visibility(kp_px: np.ndarray, raster, face_part: np.ndarray, size: int):
    """(24, 3) projected J24 (x, y, depth) -> (24,) visibility (see the module docstring)."""
    vis = np.zeros(NUM_KP)
    for j, name in enumerate(J24_NAMES):
        if j in INVALID_J24:
            continue
        x, y, z = kp_px[j]
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < size and 0 <= yi < size and np.isfinite(z)):
            continue
        fi = raster.face_index[yi, xi]
        if fi < 0:
            vis[j] = 1.0  # just outside the silhouette: nothing covers it
        elif j in FACE_KEYPOINTS:
            vis[j] = float(z <= raster.depth[yi, xi] + SURFACE_TOL)
        else:
            vis[j] = float(face_part[fi] in OWN_PARTS[name])
    return vis


def render_sample(job: dict) -> dict:
    """Render one image + masks to disk; returns its annotation row."""
    st = _STATE
    size, out = st["image_size"], st["out"]
    scene, verts, kp19, transl = job["scene"], job["vertices"], job["keypoints"], job["transl"]
    faces, face_part = st["faces"], st["face_part"]
    principal = ((size - 1) / 2, (size - 1) / 2)
    px = perspective_pixels(verts, scene["focal"], principal)
    raster = rasterize(px, faces, (size, size))
    img = make_background(np.random.default_rng(scene["bg_seed"]), size, scene["background"])
    mask = raster.face_index >= 0
    if mask.any():
        fid = raster.face_index[mask]
        n = face_normals(verts, faces)[fid]
        shade = scene["ambient"] + (1 - scene["ambient"]) * np.abs(n @ scene["light"])
        segments = scene["palette"] == "segments"
        colour_of_face = st["face_segment"] if segments else face_part - 1
        rgb = scene["colors"][colour_of_face[fid]] * shade[:, None]
        img[mask] = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    if scene["blur"]:
        img = cv2.GaussianBlur(img, (3, 3), 0.6)
    parts = label_map(raster.face_index, face_part)
    name = f"{scene['index']:06d}"
    cv2.imwrite(str(out / "images" / f"{name}.jpg"), img[:, :, ::-1], st["jpeg"])
    cv2.imwrite(str(out / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(out / "parts" / f"{name}.png"), parts)
    kp3, valid = j24_from_keypoints(kp19)
    kp_px = perspective_pixels(kp3, scene["focal"], principal)
    vis = keypoint_visibility(kp_px, raster, face_part, size) * valid
    kp_px[valid == 0] = 0.0  # unlabelled slots: zeros, not the NaN of projecting the origin
    lo, hi = px[:, :2].min(0), px[:, :2].max(0)
    return {
        "imgname": f"images/{name}.jpg",
        "maskname": f"masks/{name}.png",
        "partname": f"parts/{name}.png",
        "center": (lo + hi) / 2,
        "scale": 1.2 * max(hi - lo) / 200,
        "part": np.concatenate([kp_px[:, :2], vis[:, None]], 1),
        "S": np.concatenate([kp3, valid[:, None]], 1),
        "pose": scene["pose"],
        "shape": scene["betas"],
        "focal": scene["focal"],
        "cam_t": transl,
    }


def _forward_jobs(model, scenes, image_size):
    """Yield render jobs, running the body model CHUNK scenes at a time."""
    import torch

    for s in range(0, len(scenes), CHUNK):
        chunk = scenes[s : s + CHUNK]
        pose = torch.tensor(np.stack([c["pose"] for c in chunk]), dtype=torch.float32)
        betas = torch.tensor(np.stack([c["betas"] for c in chunk]), dtype=torch.float32)
        with torch.no_grad():
            out = model(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
        verts = out.vertices.double().numpy()
        kps = out.keypoints.double().numpy()
        for c, v, k in zip(chunk, verts, kps):
            t = place_body(v, c, image_size)
            yield {"scene": c, "vertices": v + t, "keypoints": k + t, "transl": t}


@functools.lru_cache(maxsize=2)
def load_model(model_path=None, keypoint_regressor=None):
    """The body model with HMR's 19-keypoint regressor attached (cached per process)."""
    from hmr_fast import SMPL

    model = SMPL(model_path=model_path)
    model.set_keypoint_regressor(model.hmr_keypoint_regressor(keypoint_regressor))
    return model


def synthesize(
    out_dir,
    n: int,
    seed: int = 0,
    image_size: int = 224,
    model_path=None,
    workers: int = 1,
    keypoint_regressor=None,
    mocap=None,
    quality: int = 92,
    progress: bool = True,
    palette: str = "random",
    background: str = "clutter",
    views: str = "all",
    pose_spread: float = POSE_SPREAD,
) -> Path:
    """Render the dataset (see the module docstring); returns the annotation npz path."""
    import torch
    from tqdm import tqdm

    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}, got {palette!r}")
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    check_spread(pose_spread, "pose_spread")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    out = Path(out_dir)
    for sub in ("images", "masks", "parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    model = load_model(model_path, keypoint_regressor)
    mocap_pose = None
    if mocap is not None:
        from hmr_fast.data.mocap import MocapDataset

        mocap_pose = MocapDataset(mocap).pose.double().numpy()
    weights = model.lbs_weights.detach().cpu().numpy()
    faces = np.asarray(model.faces, np.int64)
    face_part = face_labels(vertex_part_labels(weights), faces)
    _STATE.update(
        image_size=image_size,
        out=out,
        faces=faces,
        face_part=face_part,
        face_segment=face_labels(np.asarray(SEGMENT_OF_JOINT)[weights.argmax(1)], faces),
        jpeg=[cv2.IMWRITE_JPEG_QUALITY, quality],
    )
    scenes = [
        sample_scene(seed, i, image_size, mocap_pose, palette, background, views, pose_spread)
        for i in range(n)
    ]
    jobs = _forward_jobs(model, scenes, image_size)
    rows = []
    bar = tqdm(total=n, desc="synth", unit="img", disable=not progress)
    # One torch thread whatever --workers is: the GEMM reduction order (hence the last bits
    # of every vertex) then does not depend on it, and the render workers own the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                for row in pool.imap(render_sample, jobs, chunksize=2):
                    rows.append(row)
                    bar.update()
        else:
            for job in jobs:
                rows.append(render_sample(job))
                bar.update()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    arrays = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    arrays["has_smpl"] = np.ones(n, np.float32)
    for k in ("focal", "cam_t"):
        arrays[k] = arrays[k].astype(np.float32)
    return save_annotations(out / "annotations.npz", **arrays)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (image root)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--model-path", default=None, help="SMPL file/dir (default: procedural)")
    p.add_argument(
        "--keypoint-regressor",
        default=None,
        help=".npy (19 or 14, V) when the model file has no cocoplus_regressor",
    )
    p.add_argument("--mocap", default=None, help="take body poses from this mocap npz")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    p.add_argument(
        "--palette", choices=PALETTES, default="random", help="part colours (see sample_scene)"
    )
    p.add_argument(
        "--background", choices=BACKGROUNDS, default="clutter", help="see make_background"
    )
    p.add_argument("--views", choices=VIEWS, default="all", help="see sample_orientation")
    p.add_argument(
        "--pose-spread", type=float, default=POSE_SPREAD, help="see synth_mocap.sample_poses"
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)  # fmt: skip
    t0 = time.perf_counter()
    try:
        path = synthesize(
            args.out, args.n, args.seed, args.image_size, args.model_path, args.workers,
            args.keypoint_regressor, args.mocap, args.quality, not args.no_progress,
            args.palette, args.background, args.views, args.pose_spread,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        print(f"hmr-fast synth: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {args.n} images and {path} in {dt:.1f} s ({args.n / dt:.1f} img/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
