"""Plain SMPL linear blend skinning on the model's public constants: no flags, no caches, no
custom autograd functions.

This is the layer's plain path (what runs whenever `hmr_fast.ops.dispatch` says a fast path
must step aside) and the oracle its fast paths are tested against. It reads exactly the
buffers smplx's SMPL holds, in smplx's layouts, so it is differentiable to any order in every
input and every constant, and it works under every transform and tracer that plain torch ops
do. Rodrigues, the forward kinematics and the dense skinning are `hmr_fast.ops.reference`'s
(plain torch ops).

Shapes: B samples, V vertices, J joints, L shape coefficients, P = 9 (J - 1) pose inputs.
"""

from __future__ import annotations

import torch

from hmr_fast.ops.reference import forward_kinematics, pose_feature, rodrigues, skin_dense


def shape_blend(betas: torch.Tensor, v_template: torch.Tensor,
                shapedirs: torch.Tensor) -> torch.Tensor:
    """v_template + shapedirs · β.

    Args:
        betas: (B, L).
        v_template: (V, 3).
        shapedirs: (V, 3, L).
    Returns:
        (B, V, 3).
    """
    return v_template + torch.einsum("bl,vcl->bvc", betas, shapedirs)


def lbs(betas: torch.Tensor, pose: torch.Tensor, v_template: torch.Tensor,
        shapedirs: torch.Tensor, posedirs: torch.Tensor, J_regressor: torch.Tensor,
        parents: tuple[int, ...], lbs_weights: torch.Tensor, pose2rot: bool = True):
    """The SMPL forward, as smplx's `lbs` defines it.

    Args:
        betas: (B, L).
        pose: (B, J * 3) axis-angle if pose2rot, else (B, J, 3, 3) rotation matrices (any
            shape with B * J * 9 elements).
        v_template: (V, 3).
        shapedirs: (V, 3, L).
        posedirs: (P, V * 3).
        J_regressor: (J, V).
        parents: length-J tuple, parents[0] = -1.
        lbs_weights: (V, J).
        pose2rot: whether `pose` is axis-angle.
    Returns:
        vertices: (B, V, 3).
        joints: (B, J, 3) posed joints.
    """
    batch = betas.shape[0]
    v_shaped = shape_blend(betas, v_template, shapedirs)
    rest = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)
    if pose2rot:
        rot_mats = rodrigues(pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
    else:
        rot_mats = pose.reshape(batch, -1, 3, 3)
    v_posed = v_shaped + (pose_feature(rot_mats) @ posedirs).reshape(batch, -1, 3)
    posed_joints, rel = forward_kinematics(rot_mats, rest, parents)
    return skin_dense(v_posed, rel, lbs_weights), posed_joints
