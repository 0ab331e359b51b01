"""Rotation representations the released HMR-family models use, as plain torch ops that
trace and export (ONNX opset 17) without custom operators.

Axis-angle to matrix is `reference.rodrigues` (smplx-compatible); this module adds the other
two directions a pretrained regressor needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """SPIN's 6-D rotation representation to rotation matrices.

    SPIN (nkolot/SPIN, utils/geometry.py) reads each 6-vector as a 3x2 matrix in row-major
    order, so its two columns are a1 = (x0, x2, x4) and a2 = (x1, x3, x5) (not the first and
    last three numbers, as in Zhou et al.'s paper and pytorch3d). Gram-Schmidt gives
    b1 = a1/|a1|, b2 = normalised (a2 - (b1·a2) b1), b3 = b1 × b2, and R = [b1 b2 b3] as
    columns. Normalisation clamps the norm at 1e-12, as F.normalize does.

    Args:
        x: (..., 6k) with k rotations per row (e.g. (B, 144) for SMPL's 24 joints).
    Returns:
        (N, 3, 3) with N = x.numel() / 6.
    """
    pairs = x.reshape(-1, 3, 2)
    a1, a2 = pairs[..., 0], pairs[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    # The cross product written out: exports as plain multiplies (no linalg_cross operator).
    b3 = torch.stack([b1[:, 1] * b2[:, 2] - b1[:, 2] * b2[:, 1],
                      b1[:, 2] * b2[:, 0] - b1[:, 0] * b2[:, 2],
                      b1[:, 0] * b2[:, 1] - b1[:, 1] * b2[:, 0]], dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_axis_angle(rotmats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to axis-angle vectors (angle in [0, π]), accurate at every angle.

    Through the unit quaternion, built from whichever of w, x, y, z is largest (Shepperd's
    method), so the result has no 0/0 near the identity and no loss of the axis near π.

    Args:
        rotmats: (..., 3, 3) proper rotations.
    Returns:
        (..., 3).
    """
    shape = rotmats.shape[:-2]
    r = rotmats.reshape(-1, 3, 3).double()
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    trace = m00 + m11 + m22
    # Four candidate quaternions (w, x, y, z), each accurate where its pivot is largest.
    cands = torch.stack([
        torch.stack([1 + trace, r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0],
                     r[:, 1, 0] - r[:, 0, 1]], -1),
        torch.stack([r[:, 2, 1] - r[:, 1, 2], 1 + m00 - m11 - m22, r[:, 0, 1] + r[:, 1, 0],
                     r[:, 0, 2] + r[:, 2, 0]], -1),
        torch.stack([r[:, 0, 2] - r[:, 2, 0], r[:, 0, 1] + r[:, 1, 0], 1 - m00 + m11 - m22,
                     r[:, 1, 2] + r[:, 2, 1]], -1),
        torch.stack([r[:, 1, 0] - r[:, 0, 1], r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1],
                     1 - m00 - m11 + m22], -1),
    ], 1)  # (N, 4 candidates, 4)
    pivots = torch.stack([1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22,
                          1 - m00 - m11 + m22], -1)
    best = pivots.argmax(-1)
    quat = cands[torch.arange(r.shape[0]), best]
    quat = quat / quat.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[:, :1] < 0, -quat, quat)  # w >= 0: angle in [0, π]
    sin_half = quat[:, 1:].norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, quat[:, 0])
    # angle / sin(angle / 2) -> 2 as the angle -> 0.
    scale = torch.where(sin_half > 1e-12, angle / sin_half.clamp_min(1e-12),
                        torch.full_like(angle, 2.0))
    return (quat[:, 1:] * scale[:, None]).to(rotmats.dtype).reshape(*shape, 3)
