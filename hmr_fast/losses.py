"""HMR's training losses (Kanazawa et al. 2018), as small pure functions.

Every loss returns a 0-dim tensor and is exactly zero, with a zero (finite) gradient, when
nothing in the batch carries the label it needs: masks multiply the per-element errors, and
an empty mask's normaliser is replaced by 1, so it never divides 0 by 0. Unlabelled
ground truth is replaced by zeros before use, so placeholder values there (even NaN) never
reach the loss or its gradient.

Both 3D losses are half the mean squared error, as the original code's ``compute_3d_loss``
(``tf.losses.mean_squared_error(...) * 0.5`` in akanazawa/hmr ``src/trainer.py``), so that the
paper's lambda = 60 weighs them as it did there.

The adversarial losses are the least-squares GAN objectives of the original code: with D
returning (N, 25) scores (23 joints, full pose, shape), each sample's 25 squared errors are
summed, then averaged over the samples.
"""

from __future__ import annotations

import torch

from hmr_fast.body.constants import LSP_LEFT_HIP, LSP_RIGHT_HIP
from hmr_fast.ops.reference import rodrigues


def _masked_mean(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(weight * err) / sum(weight over err's elements), or 0 when the weights sum to 0.

    err (B, ...); weight broadcastable to err.
    """
    weight = weight.to(err.dtype).expand_as(err)
    total = weight.sum()
    return (err * weight).sum() / torch.where(total > 0, total, torch.ones_like(total))


def keypoint_2d_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 reprojection error over visible keypoints.

    pred (B, K, 2) projected keypoints; gt (B, K, 3) = [x, y, visibility].
    Returns sum(|pred - gt_xy| * vis) / (2 * sum(vis)): the mean absolute error per visible
    coordinate (0 when no keypoint is visible).
    """
    if pred.shape[:-1] != gt.shape[:-1] or pred.shape[-1] != 2 or gt.shape[-1] != 3:
        raise ValueError(
            f"keypoint_2d_loss expects pred (B, K, 2) and gt (B, K, 3), got pred "
            f"{tuple(pred.shape)} and gt {tuple(gt.shape)}"
        )
    vis = gt[..., 2:3].to(pred.dtype)
    gt_xy = torch.where(vis > 0, gt[..., :2].to(pred.dtype), 0.0)
    return _masked_mean((pred - gt_xy).abs(), vis)


def smpl_param_loss(
    pred_rotmats: torch.Tensor,
    pred_betas: torch.Tensor,
    gt_pose: torch.Tensor,
    gt_betas: torch.Tensor,
    has_smpl: torch.Tensor,
) -> torch.Tensor:
    """Half the mean squared error on SMPL parameters for the samples that have them.

    pred_rotmats (B, 24, 3, 3); pred_betas (B, 10); gt_pose (B, 72) axis-angle, turned into
    rotation matrices here; gt_betas (B, 10); has_smpl (B,) bool or 0/1.
    Returns 0.5 x the MSE over the concatenated [24·9 rotation entries, 10 betas] of labelled
    samples, one mean over all 226 values as in the original code's `compute_3d_loss`
    (averaging the betas separately would weigh 10 numbers as much as 216); 0 when no sample
    is labelled.
    """
    b = pred_rotmats.shape[0]
    if (
        tuple(pred_rotmats.shape[1:]) != (24, 3, 3)
        or tuple(gt_pose.shape) != (b, 72)
        or tuple(pred_betas.shape) != tuple(gt_betas.shape)
        or pred_betas.shape[0] != b
        or tuple(has_smpl.shape) != (b,)
    ):
        raise ValueError(
            "smpl_param_loss expects pred_rotmats (B, 24, 3, 3), pred_betas (B, 10), gt_pose "
            f"(B, 72), gt_betas (B, 10), has_smpl (B,); got {tuple(pred_rotmats.shape)}, "
            f"{tuple(pred_betas.shape)}, {tuple(gt_pose.shape)}, {tuple(gt_betas.shape)}, "
            f"{tuple(has_smpl.shape)}"
        )
    mask = has_smpl.to(pred_rotmats.dtype)
    keep = mask[:, None] > 0
    gt_pose = torch.where(keep, gt_pose.to(pred_rotmats.dtype), 0.0)
    gt_betas = torch.where(keep, gt_betas.to(pred_betas.dtype), 0.0)
    gt_rotmats = rodrigues(gt_pose.reshape(-1, 3)).reshape(b, 24, 3, 3)
    pred = torch.cat([pred_rotmats.reshape(b, -1), pred_betas], dim=1)
    target = torch.cat([gt_rotmats.reshape(b, -1), gt_betas], dim=1)
    return 0.5 * _masked_mean((pred - target).square(), mask[:, None])


def joints_3d_loss(pred: torch.Tensor, gt: torch.Tensor, has_3d: torch.Tensor) -> torch.Tensor:
    """Half the mean squared error of pelvis-centred 3D joints (the original's 0.5).

    pred (B, 14, 3) LSP-order joints; gt (B, 14, 4) = [x, y, z, valid]; has_3d (B,).
    Each set is centred on its own pelvis, the midpoint of the hips (LSP 2 and 3). The error
    is averaged over the coordinates of valid joints of samples with has_3d (0 when none).
    """
    b = pred.shape[0]
    if (
        tuple(pred.shape[1:]) != (14, 3)
        or tuple(gt.shape) != (b, 14, 4)
        or tuple(has_3d.shape) != (b,)
    ):
        raise ValueError(
            "joints_3d_loss expects pred (B, 14, 3), gt (B, 14, 4), has_3d (B,); got "
            f"{tuple(pred.shape)}, {tuple(gt.shape)}, {tuple(has_3d.shape)}"
        )
    gt = gt.to(pred.dtype)
    weight = torch.where(has_3d[:, None, None].bool(), gt[..., 3:4], 0.0)
    gt_xyz = torch.where(weight > 0, gt[..., :3], 0.0)

    def centre(j):
        return j - 0.5 * (
            j[:, LSP_LEFT_HIP : LSP_LEFT_HIP + 1] + j[:, LSP_RIGHT_HIP : LSP_RIGHT_HIP + 1]
        )

    return 0.5 * _masked_mean((centre(pred) - centre(gt_xyz)).square(), weight)


def encoder_adversarial_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares adversarial loss for the regressor.

    d_fake (N, 25) discriminator scores of predicted parameters (the caller concatenates the
    fakes of all iterations). Returns mean over the N samples of sum over the 25 scores of
    (D - 1)^2.
    """
    if d_fake.dim() != 2:
        raise ValueError(f"d_fake must have shape (N, 25), got {tuple(d_fake.shape)}")
    return (d_fake - 1.0).square().sum(1).mean()


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss.

    d_real (M, 25) scores of mocap samples; d_fake (N, 25) scores of (detached) predictions.
    Returns mean_M(sum_25 (D(real) - 1)^2) + mean_N(sum_25 D(fake)^2).
    """
    if d_real.dim() != 2 or d_fake.dim() != 2 or d_real.shape[1] != d_fake.shape[1]:
        raise ValueError(
            f"d_real and d_fake must have shapes (M, 25) and (N, 25), got "
            f"{tuple(d_real.shape)} and {tuple(d_fake.shape)}"
        )
    return (d_real - 1.0).square().sum(1).mean() + d_fake.square().sum(1).mean()
