"""Losses against small hand-computed examples, masking, and the no-label edge cases."""

import math

import numpy as np
import pytest
import torch

from hmr_fast.losses import (
    discriminator_loss,
    encoder_adversarial_loss,
    joints_3d_loss,
    keypoint_2d_loss,
    smpl_param_loss,
)

NAN = float("nan")


def test_keypoint_2d_loss_hand_example():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]], requires_grad=True)
    # Visible: |0-1| + |0-2| = 3 and |2-2.5| + |2-1| = 1.5; the middle point is invisible (NaN).
    gt = torch.tensor([[[1.0, 2.0, 1.0], [NAN, NAN, 0.0], [2.5, 1.0, 1.0]]])
    loss = keypoint_2d_loss(pred, gt)
    assert loss.item() == pytest.approx((3.0 + 1.5) / (2 * 2))
    loss.backward()
    # d/dpred of |pred - gt| / 4 = sign / 4 on visible coordinates, 0 elsewhere.
    expected = torch.tensor([[[-1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]]) / 4
    torch.testing.assert_close(pred.grad, expected)


def test_keypoint_2d_loss_weights_by_visibility_across_samples():
    pred = torch.zeros(2, 2, 2)
    gt = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[4.0, 4.0, 0.0], [2.0, 2.0, 1.0]]])
    # 3 visible keypoints (6 coordinates) with errors 1,1,1,1,2,2.
    assert keypoint_2d_loss(pred, gt).item() == pytest.approx(8.0 / 6.0)


def test_keypoint_2d_loss_nothing_visible_is_zero_with_zero_grad():
    pred = torch.randn(3, 19, 2, requires_grad=True)
    gt = torch.cat([torch.randn(3, 19, 2), torch.zeros(3, 19, 1)], -1)
    gt[0, :, :2] = NAN
    loss = keypoint_2d_loss(pred, gt)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def _rot_x(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_smpl_param_loss_hand_example_and_masking():
    b = 3
    pred_rot = torch.eye(3).repeat(b, 24, 1, 1)
    pred_rot[0, 5] = _rot_x(math.pi / 2)  # matches the label below exactly
    pred_betas = torch.zeros(b, 10)
    pred_betas[0, :4] = 1.0  # squared error 4 over 10 betas
    pred_betas[2] = 7.0  # unlabelled sample: must not count
    pred_rot.requires_grad_()
    pred_betas.requires_grad_()
    gt_pose = torch.zeros(b, 72)
    gt_pose[0, 5 * 3] = math.pi / 2
    gt_pose[1, 0] = math.pi / 2  # pred is identity: 4 entries off by 1 (cos 90 = 0, sin = 1)
    gt_pose[2] = NAN
    gt_betas = torch.zeros(b, 10)
    gt_betas[2] = NAN
    has = torch.tensor([True, True, False])
    loss = smpl_param_loss(pred_rot, pred_betas, gt_pose, gt_betas, has)
    expected = 0.5 * (4.0 + 4.0) / (2 * (24 * 9 + 10))  # one mean over all 226 values, x0.5
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred_rot.grad).all() and torch.isfinite(pred_betas.grad).all()
    assert torch.equal(pred_rot.grad[2], torch.zeros(24, 3, 3))
    assert torch.equal(pred_betas.grad[2], torch.zeros(10))
    # d/dbeta of 0.5 * (beta - 0)^2 / (2 * 226) = beta / (2 * 226).
    torch.testing.assert_close(pred_betas.grad[0], pred_betas.detach()[0] / (2 * 226))


def test_smpl_param_loss_no_labels_is_zero_with_zero_grad():
    pred_rot = torch.randn(4, 24, 3, 3, requires_grad=True)
    pred_betas = torch.randn(4, 10, requires_grad=True)
    loss = smpl_param_loss(
        pred_rot, pred_betas, torch.full((4, 72), NAN), torch.randn(4, 10), torch.zeros(4)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred_rot.grad, torch.zeros_like(pred_rot))
    assert torch.equal(pred_betas.grad, torch.zeros_like(pred_betas))


def test_joints_3d_loss_is_translation_invariant_and_masked():
    torch.manual_seed(0)
    gt_xyz = torch.randn(2, 14, 3)
    pred = gt_xyz + torch.tensor([0.5, -2.0, 3.0])  # a global offset costs nothing
    pred[0, 0, 0] += 0.3  # right ankle: a non-hip joint, so the pelvis is unchanged
    pred[0, 7] += 10.0  # invalid joint: ignored
    valid = torch.ones(2, 14, 1)
    valid[0, 7] = 0.0
    gt = torch.cat([gt_xyz, valid], -1)
    gt[1] = NAN  # sample without 3D labels
    pred.requires_grad_()
    loss = joints_3d_loss(pred, gt, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(0.5 * 0.09 / (13 * 3), rel=1e-4)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[1], torch.zeros(14, 3))


def test_joints_3d_loss_pelvis_is_hip_midpoint():
    gt = torch.zeros(1, 14, 4)
    gt[..., 3] = 1.0
    pred = torch.zeros(1, 14, 3)
    pred[0, 2, 0] = 1.0  # move the right hip by 1 in x: pelvis moves by 0.5
    # Centred pred: every joint at -0.5 in x except the right hip at +0.5.
    loss = joints_3d_loss(pred, gt, torch.ones(1))
    assert loss.item() == pytest.approx(0.5 * 14 * 0.25 / (14 * 3))


def test_joints_3d_loss_none_is_zero_with_zero_grad():
    pred = torch.randn(2, 14, 3, requires_grad=True)
    loss = joints_3d_loss(pred, torch.full((2, 14, 4), NAN), torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_adversarial_losses_hand_example():
    d_fake = torch.ones(2, 25)
    d_fake[1, 3] = 3.0  # (3 - 1)^2 = 4 for sample 1, 0 for sample 0
    assert encoder_adversarial_loss(d_fake).item() == pytest.approx(2.0)
    d_real = torch.zeros(1, 25)  # sum (0 - 1)^2 = 25
    fake = torch.stack([torch.zeros(25), torch.ones(25)])  # sums 0 and 25: mean 12.5
    assert discriminator_loss(d_real, fake).item() == pytest.approx(37.5)
    # The optimum of each side is zero.
    assert encoder_adversarial_loss(torch.ones(5, 25)).item() == 0.0
    assert discriminator_loss(torch.ones(3, 25), torch.zeros(7, 25)).item() == 0.0


def test_adversarial_loss_gradients():
    d_fake = torch.randn(4, 25, requires_grad=True)
    encoder_adversarial_loss(d_fake).backward()
    torch.testing.assert_close(d_fake.grad, 2 * (d_fake.detach() - 1) / 4)
    d_real = torch.randn(3, 25, requires_grad=True)
    fake = torch.randn(5, 25, requires_grad=True)
    discriminator_loss(d_real, fake).backward()
    torch.testing.assert_close(d_real.grad, 2 * (d_real.detach() - 1) / 3)
    torch.testing.assert_close(fake.grad, 2 * fake.detach() / 5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: keypoint_2d_loss(torch.zeros(2, 19, 3), torch.zeros(2, 19, 3)), "pred"),
        (lambda: joints_3d_loss(torch.zeros(2, 14, 3), torch.zeros(2, 14, 3), torch.ones(2)), "gt"),
        (
            lambda: smpl_param_loss(
                torch.zeros(2, 24, 3, 3),
                torch.zeros(2, 10),
                torch.zeros(2, 69),
                torch.zeros(2, 10),
                torch.ones(2),
            ),
            "gt_pose",
        ),
        (lambda: encoder_adversarial_loss(torch.zeros(25)), "d_fake"),
        (lambda: discriminator_loss(torch.zeros(2, 25), torch.zeros(2, 24)), "d_real"),
    ],
)
def test_bad_shapes_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _tf_mean_squared_error(labels, predictions, weights):
    """tf.losses.mean_squared_error's default reduction (SUM_BY_NONZERO_WEIGHTS): the weighted
    sum of squared errors over the number of non-zero weights after broadcasting."""
    weights = np.broadcast_to(weights, labels.shape)
    return (weights * (labels - predictions) ** 2).sum() / max(np.count_nonzero(weights), 1)


def test_3d_losses_times_lambda_equal_the_original_formula():
    """lambda x each 3D term equals the original code's compute_3d_loss, i.e. lambda x
    tf.losses.mean_squared_error(gt, pred, weights=has[:, None]) x 0.5 (akanazawa/hmr
    src/trainer.py), on the flattened parameters / pelvis-aligned joints it uses."""
    import cv2

    rng = np.random.default_rng(7)
    b, lam = 5, 60.0
    has = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    # SMPL parameters: [24 rotation matrices (216), 10 betas] against Rodrigues of the labels.
    pred_rot = rng.normal(size=(b, 24, 3, 3))
    pred_betas, gt_betas = rng.normal(size=(b, 10)), rng.normal(size=(b, 10))
    gt_pose = rng.uniform(-1.0, 1.0, size=(b, 72))
    gt_rot = np.stack([[cv2.Rodrigues(gt_pose[i, 3 * j:3 * j + 3])[0] for j in range(24)]
                       for i in range(b)])
    pred_flat = np.concatenate([pred_rot.reshape(b, -1), pred_betas], 1)
    gt_flat = np.concatenate([gt_rot.reshape(b, -1), gt_betas], 1)
    expected = lam * _tf_mean_squared_error(gt_flat, pred_flat, has[:, None]) * 0.5
    t = torch.from_numpy
    got = lam * smpl_param_loss(t(pred_rot), t(pred_betas), t(gt_pose), t(gt_betas), t(has))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # 3D joints: each set centred on its hips' midpoint (LSP 2, 3), then (B, 42).
    pred_j, gt_j = rng.normal(size=(b, 14, 3)), rng.normal(size=(b, 14, 3))

    def align(j):
        return (j - 0.5 * (j[:, 2:3] + j[:, 3:4])).reshape(b, -1)

    expected = lam * _tf_mean_squared_error(align(gt_j), align(pred_j), has[:, None]) * 0.5
    gt4 = np.concatenate([gt_j, np.ones((b, 14, 1))], -1)
    got = lam * joints_3d_loss(t(pred_j), t(gt4), t(has))
    assert got.item() == pytest.approx(expected, rel=1e-9)
