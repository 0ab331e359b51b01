"""The SMPL skeleton stage on CPU in one compiled call (forward only), with numba.

Between the inputs and the two big passes of a CPU forward (the blend-shape GEMM and
skinning) lies a few hundred flops per joint, spread by torch over dozens of small ops:
Rodrigues, the pose feature, the rest-joint einsum, forward kinematics level by level, and the
copies into the layouts the big passes read. Each op costs more in dispatch than in arithmetic,
so without gradients one loop over the samples does all of it, writing each result straight
into the layout its consumer reads:

* ``coeffs``: (B, 1 + L + P) = [1 | β | vec(R_j - I) for j ≥ 1], the blend GEMM's input
  (`reference.blend_planar`);
* ``posed_joints``: (B, J, 3);
* ``transforms``: (J, 3, 4, B), the skinning transforms A_j as `skin_cpu.skin_forward` reads
  them (samples innermost);
* ``rot_mats``: (B, J, 3, 3), the local rotations (computed here from axis-angle, or the
  caller's).

The math is `reference`'s (`rodrigues`, `pose_feature`, `rest_joints`, `forward_kinematics`),
evaluated in float64 whatever the storage dtype: it is a few thousand flops per sample, and
float32 inputs then get their outputs rounded once rather than after every step.

Any kinematic tree with parents[j] < j works: a sequential pass over the joints visits every
parent before its children. The gradient path stays in torch (`reference.smpl_forward`).

The loop is serial: about 75 µs at B = 64 from rotation matrices, 95 µs from axis-angle (one
thread, with another process loading both cores, 2026-11-26), too little to pay for a parallel
region, and it needs no fork-safety care (see `skin_cpu._launch`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from hmr_fast.ops import skin_cpu
from hmr_fast.ops.kernels_loader import kernels_package
from hmr_fast.ops.skin_cpu import as_array
from hmr_fast.ops.tree import tree_levels

kernels_package()  # hmr_fast.kernels also in a source checkout that was not pip-installed
# The Rodrigues constants' one source (shared with the torch reference and the kernels).
from hmr_fast.kernels.constants import SMALL_ANGLE_SQ, SMPLX_ANGLE_EPS  # noqa: E402


class Skeleton(NamedTuple):
    """`skeleton_forward`'s outputs (B samples, J joints, L shape coefficients)."""

    rot_mats: torch.Tensor  # (B, J, 3, 3)
    coeffs: torch.Tensor  # (B, 1 + L + 9 (J - 1))
    posed_joints: torch.Tensor  # (B, J, 3)
    transforms: torch.Tensor  # (J, 3, 4, B), contiguous


@functools.cache
def _kernels():
    """Compile (or load from numba's cache) the skeleton loop; None without numba.

    One loop over the samples, fed by Rodrigues or by the caller's rotation matrices.
    """
    jit = skin_cpu.numba_jit()
    if jit is None:
        return None

    @jit
    def rodrigues(axis_angle, b, angle_eps, small_angle_sq, rot):
        """rot (J, 3, 3) float64 = Rodrigues of axis_angle[b] (J, 3), as `reference.rodrigues`."""
        for j in range(axis_angle.shape[1]):
            x = np.float64(axis_angle[b, j, 0])
            y = np.float64(axis_angle[b, j, 1])
            z = np.float64(axis_angle[b, j, 2])
            sx, sy, sz = x + angle_eps, y + angle_eps, z + angle_eps
            angle_sq = sx * sx + sy * sy + sz * sz
            if angle_sq < small_angle_sq:
                sin_term = 1.0 - angle_sq / 6.0 + angle_sq * angle_sq / 120.0
                cos_term = 0.5 - angle_sq / 24.0 + angle_sq * angle_sq / 720.0
            else:
                angle = np.sqrt(angle_sq)
                half_sin = np.sin(0.5 * angle)
                sin_term = np.sin(angle) / angle
                cos_term = 2.0 * half_sin * half_sin / angle_sq
            # K is built from the unshifted vector (as smplx); K² = θθᵀ - |θ|² I.
            rot[j, 0, 0] = 1.0 - cos_term * (y * y + z * z)
            rot[j, 0, 1] = -sin_term * z + cos_term * x * y
            rot[j, 0, 2] = sin_term * y + cos_term * x * z
            rot[j, 1, 0] = sin_term * z + cos_term * x * y
            rot[j, 1, 1] = 1.0 - cos_term * (x * x + z * z)
            rot[j, 1, 2] = -sin_term * x + cos_term * y * z
            rot[j, 2, 0] = -sin_term * y + cos_term * x * z
            rot[j, 2, 1] = sin_term * x + cos_term * y * z
            rot[j, 2, 2] = 1.0 - cos_term * (x * x + y * y)

    @jit
    def skeleton(
        axis_angle,
        angle_eps,
        small_angle_sq,
        rot_mats,
        betas,
        joint_template,
        joint_shapedirs,
        parents,
        coeffs,
        posed_joints,
        transforms,
    ):
        """Per sample: the rotations, then the GEMM coefficients, rest joints, kinematics and
        skinning transforms (rot, rest, world_* are float64 scratch). axis_angle (B, J, 3)
        fills rot_mats (B, J, 3, 3) through Rodrigues; an empty axis_angle (0, J, 3) means
        rot_mats already holds the rotations."""
        num_joints, num_betas = parents.shape[0], betas.shape[1]
        from_axis_angle = axis_angle.shape[0] > 0
        rot = np.empty((num_joints, 3, 3))
        rest, world_t = np.empty((num_joints, 3)), np.empty((num_joints, 3))
        world_rot = np.empty((num_joints, 3, 3))
        for b in range(betas.shape[0]):
            if from_axis_angle:
                rodrigues(axis_angle, b, angle_eps, small_angle_sq, rot)
            for j in range(num_joints):
                for r in range(3):
                    for c in range(3):
                        if from_axis_angle:
                            rot_mats[b, j, r, c] = rot[j, r, c]
                        else:
                            rot[j, r, c] = rot_mats[b, j, r, c]
            coeffs[b, 0] = 1.0
            for k in range(num_betas):
                coeffs[b, 1 + k] = betas[b, k]
            for j in range(1, num_joints):
                base = 1 + num_betas + 9 * (j - 1)
                for r in range(3):
                    for c in range(3):
                        # R - I from the float64 rotation: no cancellation against a rounded R.
                        coeffs[b, base + 3 * r + c] = rot[j, r, c] - (1.0 if r == c else 0.0)
            for j in range(num_joints):
                for c in range(3):
                    acc = np.float64(joint_template[j, c])
                    for k in range(num_betas):
                        acc += np.float64(joint_shapedirs[j, c, k]) * np.float64(betas[b, k])
                    rest[j, c] = acc
            for j in range(num_joints):
                p = parents[j]
                for r in range(3):
                    if j == 0:  # the root, whatever parents[0] says (as `forward_kinematics`)
                        world_t[j, r] = rest[j, r]
                        for c in range(3):
                            world_rot[j, r, c] = rot[j, r, c]
                    else:
                        # G_j = G_p · [R_j | J_j - J_p]
                        t = world_t[p, r]
                        for m in range(3):
                            t += world_rot[p, r, m] * (rest[j, m] - rest[p, m])
                        world_t[j, r] = t
                        for c in range(3):
                            world_rot[j, r, c] = (
                                world_rot[p, r, 0] * rot[j, 0, c]
                                + world_rot[p, r, 1] * rot[j, 1, c]
                                + world_rot[p, r, 2] * rot[j, 2, c]
                            )
            for j in range(num_joints):
                for r in range(3):
                    posed_joints[b, j, r] = world_t[j, r]
                    # A_j = [G_j^R | G_j^t - G_j^R J_j]
                    corr = world_t[j, r]
                    for c in range(3):
                        transforms[j, r, c, b] = world_rot[j, r, c]
                        corr -= world_rot[j, r, c] * rest[j, c]
                    transforms[j, r, 3, b] = corr

    return skeleton


def available() -> bool:
    """Whether the numba kernels can run (numba importable)."""
    return _kernels() is not None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether `skeleton_forward` may run on these tensors (see `skin_cpu.usable`)."""
    return skin_cpu.usable(*tensors) and available()


@functools.lru_cache(maxsize=16)
def _parents_array(parents: tuple[int, ...]) -> np.ndarray:
    """The tree as the kernels read it, validated first (they index without bounds checks)."""
    tree_levels(parents)
    array = np.asarray(parents, dtype=np.int64)
    array.flags.writeable = False
    return array


def skeleton_forward(
    betas: torch.Tensor,
    pose: torch.Tensor,
    joint_template: torch.Tensor,
    joint_shapedirs: torch.Tensor,
    parents: tuple[int, ...],
    pose2rot: bool,
) -> Skeleton:
    """Rotations, blend-GEMM coefficients, posed joints and skinning transforms in one call.

    No autograd: callers take this path only when no gradient is needed.

    Args:
        betas: (B, L).
        pose: (B, J * 3) or (B, J, 3) axis-angle when pose2rot, else (B, J, 3, 3) rotations.
        joint_template: (J, 3).
        joint_shapedirs: (J, 3, L).
        parents: length-J tuple, parents[0] = -1, parents[j] < j.
        pose2rot: whether `pose` is axis-angle.
    Returns:
        Skeleton (see its fields), in betas' dtype.
    """
    batch, num_betas = betas.shape
    num_joints = len(parents)
    coeffs = betas.new_empty(batch, 1 + num_betas + 9 * (num_joints - 1))
    posed_joints = betas.new_empty(batch, num_joints, 3)
    transforms = betas.new_empty(num_joints, 3, 4, batch)
    common = (
        as_array(betas),
        as_array(joint_template),
        as_array(joint_shapedirs),
        _parents_array(tuple(parents)),
        coeffs.numpy(),
        posed_joints.numpy(),
        transforms.numpy(),
    )
    if pose2rot:
        rot_mats = betas.new_empty(batch, num_joints, 3, 3)
        axis_angle, rot_array = as_array(pose.reshape(batch, num_joints, 3)), rot_mats.numpy()
    else:
        rot_mats = pose.reshape(batch, num_joints, 3, 3)
        axis_angle = np.empty((0, num_joints, 3), dtype=common[0].dtype)
        rot_array = as_array(rot_mats)
    _kernels()(
        axis_angle, SMPLX_ANGLE_EPS, SMALL_ANGLE_SQ, rot_array, *common
    )
    return Skeleton(rot_mats, coeffs, posed_joints, transforms)
