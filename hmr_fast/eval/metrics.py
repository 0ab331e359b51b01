"""3D pose metrics: MPJPE, PA-MPJPE (similarity Procrustes), PCK and AUC.

Every function takes ``pred`` and ``gt`` of shape (N, J, 3) in one unit (millimetres for the
standard protocols), as numpy arrays or torch tensors, and returns one value per sample, (N,),
of the same array type. Nothing is root-aligned here: the protocols align first.
"""

from __future__ import annotations

import numpy as np
import torch

#: AUC thresholds of MPI-INF-3DHP: 0..150 mm in 31 steps.
AUC_THRESHOLDS = np.linspace(0.0, 150.0, 31)


def _check_pair(pred, gt):
    """Validate (N, J, 3) inputs of one array type; returns (pred, gt, is_torch)."""
    is_torch = isinstance(pred, torch.Tensor)
    for name, x in (("pred", pred), ("gt", gt)):
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
        if isinstance(x, torch.Tensor) != is_torch:
            raise TypeError(
                f"pred and gt must both be numpy arrays or both torch tensors, got "
                f"{type(pred).__name__} and {type(gt).__name__}"
            )
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (N, J, 3), got {tuple(x.shape)}")
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"pred and gt must have the same shape (N, J, 3), got {tuple(pred.shape)} "
            f"and {tuple(gt.shape)}"
        )
    if pred.shape[1] < 1:
        raise ValueError(f"pred and gt need at least one joint, got shape {tuple(pred.shape)}")
    return pred, gt, is_torch


def _norm(x, is_torch):
    return torch.linalg.vector_norm(x, dim=-1) if is_torch else np.linalg.norm(x, axis=-1)


def joint_errors(pred, gt):
    """Per-joint Euclidean distances.

    Args:
        pred, gt: (N, J, 3).
    Returns:
        (N, J) distances, same array type as the inputs.
    """
    pred, gt, is_torch = _check_pair(pred, gt)
    return _norm(pred - gt, is_torch)


def mpjpe(pred, gt):
    """Mean per-joint position error without any alignment.

    Args:
        pred, gt: (N, J, 3) in one unit.
    Returns:
        (N,) mean joint distance per sample.
    """
    return joint_errors(pred, gt).mean(-1)


def _mT(x):
    """Swap the last two axes (numpy or torch)."""
    return x.transpose(-1, -2) if isinstance(x, torch.Tensor) else np.swapaxes(x, -1, -2)


def procrustes_align(pred, gt):
    """Similarity-align each ``pred`` sample onto ``gt`` (HMR's compute_similarity_transform).

    Finds per sample the scale s, rotation R (det R = +1: a reflection is fixed through the
    sign of det(U V^T)) and translation t minimising ||s R pred + t - gt||, and returns the
    transformed ``pred``.

    Args:
        pred, gt: (N, J, 3).
    Returns:
        (N, J, 3) aligned prediction, same array type as the inputs.
    """
    pred, gt, is_torch = _check_pair(pred, gt)
    xp = torch if is_torch else np
    mu1 = pred.mean(1)[:, None]  # (N, 1, 3)
    mu2 = gt.mean(1)[:, None]
    x1 = pred - mu1
    x2 = gt - mu2
    var1 = (x1**2).sum(-1).sum(-1)  # (N,)
    k = _mT(x1) @ x2  # (N, 3, 3): HMR's K = X1 X2^T in its (3, J) column layout
    u, _, vh = xp.linalg.svd(k)
    v, ut = _mT(vh), _mT(u)
    # Z = diag(1, 1, sign det(U V^T)) keeps R a proper rotation.
    sign = xp.sign(xp.linalg.det(u @ vh))
    sign = xp.where(sign == 0, xp.ones_like(sign), sign)
    ones = xp.ones_like(sign)
    z = xp.stack([ones, ones, sign], -1)  # (N, 3) diagonal of Z
    r = (v * z[:, None, :]) @ ut  # (N, 3, 3) = V Z U^T, acting on column vectors
    scale = (r @ k).diagonal(0, -2, -1).sum(-1) / var1  # (N,)
    t = mu2 - scale[:, None, None] * (mu1 @ _mT(r))
    return scale[:, None, None] * (pred @ _mT(r)) + t


def pa_mpjpe(pred, gt):
    """MPJPE after per-sample similarity Procrustes alignment of ``pred`` onto ``gt``.

    Args:
        pred, gt: (N, J, 3).
    Returns:
        (N,) errors in the input unit.
    """
    return mpjpe(procrustes_align(pred, gt), gt)


def pck(pred, gt, threshold=150.0):
    """Percentage of correct keypoints: fraction of joints closer than ``threshold``.

    Args:
        pred, gt: (N, J, 3).
        threshold: distance in the input unit (150 mm for MPI-INF-3DHP).
    Returns:
        (N,) fractions in [0, 1].
    """
    if not np.isscalar(threshold) or not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite non-negative number, got {threshold!r}")
    err = joint_errors(pred, gt)
    hit = err < threshold
    return hit.to(err.dtype).mean(-1) if isinstance(err, torch.Tensor) else hit.mean(-1)


def auc(pred, gt, thresholds=AUC_THRESHOLDS):
    """Area under the PCK curve: mean PCK over ``thresholds`` (0..150 mm, 31 steps).

    Args:
        pred, gt: (N, J, 3).
    Returns:
        (N,) values in [0, 1].
    """
    err = joint_errors(pred, gt)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or len(thresholds) == 0:
        raise ValueError(
            f"thresholds must be a non-empty 1-D sequence, got shape {thresholds.shape}"
        )
    if isinstance(err, torch.Tensor):
        th = torch.as_tensor(thresholds, dtype=err.dtype, device=err.device)
        return (err[..., None] < th).to(err.dtype).mean((-1, -2))
    return (err[..., None] < thresholds).mean(axis=(-1, -2))
