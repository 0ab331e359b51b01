"""Synthetic "mocap": plausible SMPL poses and shapes without any motion-capture data.

``hmr-fast synth-mocap --out FILE.npz --n N [--seed S]`` writes ``pose`` (N, 72) and
``shape`` (N, 10) float32, the layout of HMR's / mmhuman3d's mosh files (CMU / H3.6M MoSh),
so it is a stand-in for those: users who have real mosh data (or AMASS npz files) pass those
to the trainer's discriminator instead (``hmr_fast.data.mocap.MocapDataset`` reads both).

How poses are drawn (``sample_poses``): every body joint gets Euler angles (intrinsic x, y, z
in SMPL's joint frame: x = the body's left, y = up, z = forward, T-pose at zero) drawn from a
clipped normal around a per-sample "activity" posture (standing, walking, reaching, sitting,
crouching), always inside per-joint limits: knees only flex (foot goes backwards), elbows only
flex (forearm goes forwards), hips flex more than they extend, arms hang or rise but do not
pass through the torso, the spine / neck / wrists / feet move within small ranges. The
global orientation (``pose[:, :3]``) is zero: callers set it. Shapes are N(0, 1).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.spatial.transform import Rotation

from hmr_fast.body.constants import JOINT_NAMES

# (lo, hi) radians per joint for Euler (x, y, z); joints not listed are fixed at 0.
# Derivations (SMPL rest frame: x left, y up, z forward): R_x(+a) moves a downward bone
# backwards (knee flexion) and an upward bone forwards (spine flexion); R_y(-a) moves the
# left arm (+x) forwards (left elbow flexion), R_y(+a) the right one; R_z(-a) lowers the
# left arm, R_z(+a) the right one; R_z(+a) abducts the left leg, R_z(-a) the right one.
LIMITS = {
    "left_hip": ((-2.2, 0.5), (-0.6, 0.6), (-0.3, 0.8)),
    "right_hip": ((-2.2, 0.5), (-0.6, 0.6), (-0.8, 0.3)),
    "spine1": ((-0.3, 0.6), (-0.4, 0.4), (-0.3, 0.3)),
    "left_knee": ((0.0, 2.4), (0.0, 0.0), (0.0, 0.0)),
    "right_knee": ((0.0, 2.4), (0.0, 0.0), (0.0, 0.0)),
    "spine2": ((-0.2, 0.4), (-0.3, 0.3), (-0.2, 0.2)),
    "left_ankle": ((-0.4, 0.6), (-0.3, 0.3), (-0.2, 0.2)),
    "right_ankle": ((-0.4, 0.6), (-0.3, 0.3), (-0.2, 0.2)),
    "spine3": ((-0.2, 0.4), (-0.3, 0.3), (-0.2, 0.2)),
    "left_foot": ((-0.2, 0.2), (0.0, 0.0), (0.0, 0.0)),
    "right_foot": ((-0.2, 0.2), (0.0, 0.0), (0.0, 0.0)),
    "neck": ((-0.4, 0.5), (-0.6, 0.6), (-0.3, 0.3)),
    "left_collar": ((-0.2, 0.2), (-0.2, 0.2), (-0.25, 0.2)),
    "right_collar": ((-0.2, 0.2), (-0.2, 0.2), (-0.2, 0.25)),
    "head": ((-0.3, 0.4), (-0.5, 0.5), (-0.3, 0.3)),
    "left_shoulder": ((-0.9, 0.9), (-1.5, 0.6), (-1.45, 0.9)),
    "right_shoulder": ((-0.9, 0.9), (-0.6, 1.5), (-0.9, 1.45)),
    "left_elbow": ((0.0, 0.0), (-2.4, 0.0), (0.0, 0.0)),
    "right_elbow": ((0.0, 0.0), (0.0, 2.4), (0.0, 0.0)),
    "left_wrist": ((-0.5, 0.5), (-0.3, 0.3), (-0.6, 0.6)),
    "right_wrist": ((-0.5, 0.5), (-0.3, 0.3), (-0.6, 0.6)),
}

# Activity postures: (probability, {joint: (mean x, mean y, mean z)}), spread below.
_ARMS_DOWN = {"left_shoulder": (0.0, -0.1, -1.2), "right_shoulder": (0.0, 0.1, 1.2)}
ACTIVITIES = (
    (0.35, {**_ARMS_DOWN}),  # standing
    (0.25, {**_ARMS_DOWN, "left_hip": (-0.5, 0, 0.05), "right_hip": (0.3, 0, -0.05),
            "left_knee": (0.4, 0, 0), "right_knee": (0.2, 0, 0),
            "left_elbow": (0, -0.5, 0), "right_elbow": (0, 0.5, 0)}),  # walking
    (0.15, {"left_shoulder": (0.0, -0.6, -0.2), "right_shoulder": (0.0, 0.6, 0.2),
            "left_elbow": (0, -0.8, 0), "right_elbow": (0, 0.8, 0)}),  # reaching
    (0.15, {**_ARMS_DOWN, "left_hip": (-1.5, 0, 0.15), "right_hip": (-1.5, 0, -0.15),
            "left_knee": (1.5, 0, 0), "right_knee": (1.5, 0, 0),
            "left_elbow": (0, -1.0, 0), "right_elbow": (0, 1.0, 0)}),  # sitting
    (0.10, {**_ARMS_DOWN, "left_hip": (-1.9, 0, 0.3), "right_hip": (-1.9, 0, -0.3),
            "left_knee": (2.2, 0, 0), "right_knee": (2.2, 0, 0),
            "spine1": (0.4, 0, 0), "left_elbow": (0, -1.2, 0),
            "right_elbow": (0, 1.2, 0)}),  # crouching
)  # fmt: skip

POSE_SPREAD = 0.2  # default noise around the activity posture, as a fraction of each range
_JOINTS = [JOINT_NAMES.index(n) for n in LIMITS]
_LO = np.array([[lim[a][0] for a in range(3)] for lim in LIMITS.values()])
_HI = np.array([[lim[a][1] for a in range(3)] for lim in LIMITS.values()])


def _activity_means() -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([p for p, _ in ACTIVITIES])
    means = np.zeros((len(ACTIVITIES), len(LIMITS), 3))
    names = list(LIMITS)
    for a, (_, joints) in enumerate(ACTIVITIES):
        for name, mu in joints.items():
            means[a, names.index(name)] = mu
    return probs / probs.sum(), means


def check_spread(spread: float, name: str = "spread") -> None:
    """Raise a ValueError naming ``name`` unless 0 <= spread <= 1 (see `sample_poses`)."""
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {spread}")


def sample_poses(n: int, rng: np.random.Generator, spread: float = POSE_SPREAD) -> np.ndarray:
    """(n, 72) float32 axis-angle SMPL poses within ``LIMITS`` (global orientation zero).

    Each sample picks an activity posture, adds N(0, spread * range) noise per Euler angle
    (range = hi - lo of the joint's limit) and clips to the limits.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    check_spread(spread)
    probs, means = _activity_means()
    act = rng.choice(len(probs), size=n, p=probs)
    noise = rng.standard_normal((n, len(LIMITS), 3)) * spread * (_HI - _LO)
    # a per-sample left/right swap of the walking / reaching posture keeps it symmetric
    mu = means[act]
    swap = rng.random(n) < 0.5
    names = list(LIMITS)
    perm = [names.index(_mirror(nm)) for nm in names]
    mirrored = mu[:, perm] * np.array([1.0, -1.0, -1.0])
    mu = np.where(swap[:, None, None], mirrored, mu)
    euler = np.clip(mu + noise, _LO, _HI)
    pose = np.zeros((n, 24, 3))
    if n:
        rv = Rotation.from_euler("XYZ", euler.reshape(-1, 3)).as_rotvec()
        pose[:, _JOINTS] = rv.reshape(n, len(LIMITS), 3)
    return pose.reshape(n, 72).astype(np.float32)


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def sample_shapes(n: int, rng: np.random.Generator, num_betas: int = 10) -> np.ndarray:
    """(n, num_betas) float32 SMPL betas ~ N(0, 1)."""
    return rng.standard_normal((n, num_betas)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast synth-mocap", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output .npz (pose, shape)")
    p.add_argument("--n", type=int, required=True, help="number of poses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--spread",
        type=float,
        default=POSE_SPREAD,
        help="noise around each activity posture, as a fraction of each joint's range",
    )
    args = p.parse_args(argv)
    if args.n <= 0:
        print(f"hmr-fast synth-mocap: --n must be positive, got {args.n}", file=sys.stderr)
        return 2
    try:
        check_spread(args.spread, "--spread")
    except ValueError as exc:
        print(f"hmr-fast synth-mocap: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    pose = sample_poses(args.n, rng, args.spread)
    shape = sample_shapes(args.n, rng)
    from pathlib import Path

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, pose=pose, shape=shape)
    print(f"wrote {args.n} poses to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
