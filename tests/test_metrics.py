"""Pose metrics against independent references (scipy rotations, explicit loops)."""

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from hmr_fast.eval import auc, mpjpe, pa_mpjpe, pck, procrustes_align


def _rng():
    return np.random.default_rng()


def _ref_pa_mpjpe(pred, gt):
    """Per-sample similarity Procrustes via scipy's proper-rotation solver (Kabsch)."""
    out = []
    for p, g in zip(pred, gt):
        x1, x2 = p - p.mean(0), g - g.mean(0)
        rot, _ = Rotation.align_vectors(x2, x1)  # proper rotation with x2 ~ R x1
        r = rot.as_matrix()
        rx1 = x1 @ r.T
        s = (x2 * rx1).sum() / (x1**2).sum()
        aligned = s * rx1 + g.mean(0)
        out.append(np.mean(np.sqrt(((aligned - g) ** 2).sum(-1))))
    return np.array(out)


def test_mpjpe_matches_loop():
    rng = _rng()
    pred, gt = rng.normal(size=(7, 14, 3)) * 100, rng.normal(size=(7, 14, 3)) * 100
    ref = [
        np.mean(
            [np.sqrt(sum((pred[n, j, c] - gt[n, j, c]) ** 2 for c in range(3))) for j in range(14)]
        )
        for n in range(7)
    ]
    got = mpjpe(pred, gt)
    assert isinstance(got, np.ndarray) and got.shape == (7,)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    got_t = mpjpe(torch.from_numpy(pred), torch.from_numpy(gt))
    assert isinstance(got_t, torch.Tensor) and got_t.shape == (7,)
    np.testing.assert_allclose(got_t.numpy(), ref, rtol=1e-12)


def test_pa_mpjpe_matches_scipy_reference():
    rng = _rng()
    gt = rng.normal(size=(9, 14, 3)) * 200
    pred = gt + rng.normal(size=gt.shape) * 60
    ref = _ref_pa_mpjpe(pred, gt)
    np.testing.assert_allclose(pa_mpjpe(pred, gt), ref, rtol=1e-9, atol=1e-9)
    got_t = pa_mpjpe(torch.from_numpy(pred), torch.from_numpy(gt))
    np.testing.assert_allclose(got_t.numpy(), ref, rtol=1e-9, atol=1e-9)
    # Alignment never makes things worse than no alignment.
    assert np.all(pa_mpjpe(pred, gt) <= mpjpe(pred, gt) + 1e-9)


def test_random_similarity_is_recovered_exactly():
    rng = _rng()
    gt = rng.normal(size=(5, 17, 3)) * 300
    rots = Rotation.random(5, random_state=int(rng.integers(1 << 30))).as_matrix()
    scale = rng.uniform(0.3, 3.0, size=5)
    shift = rng.normal(size=(5, 1, 3)) * 1000
    # pred = (gt - shift) R / s so that s R^T pred + shift = gt.
    pred = np.einsum("nij,nkj->nki", rots, gt) * scale[:, None, None] + shift
    assert np.all(mpjpe(pred, gt) > 10)
    np.testing.assert_allclose(pa_mpjpe(pred, gt), 0.0, atol=1e-8)
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-8)
    got = pa_mpjpe(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    assert got.dtype == torch.float32
    assert float(got.max()) < 1e-2 * 300


def test_reflection_is_not_allowed():
    rng = _rng()
    gt = rng.normal(size=(4, 14, 3)) * 100
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection: no rotation maps it back
    # An unconstrained orthogonal Procrustes would undo the mirror exactly ...
    x1 = mirrored[0] - mirrored[0].mean(0)
    x2 = gt[0] - gt[0].mean(0)
    r, _ = orthogonal_procrustes(x1, x2)
    assert np.linalg.det(r) < 0 and np.allclose(x1 @ r, x2, atol=1e-8)
    # ... the metric must keep det R = +1, so the error stays and matches the Kabsch reference.
    got = pa_mpjpe(mirrored, gt)
    assert np.all(got > 1.0)
    np.testing.assert_allclose(got, _ref_pa_mpjpe(mirrored, gt), rtol=1e-8, atol=1e-8)


def test_pa_mpjpe_gradient_finite():
    rng = _rng()
    gt = torch.from_numpy(rng.normal(size=(3, 14, 3)))
    pred = (gt + 0.3 * torch.randn_like(gt)).requires_grad_(True)
    pa_mpjpe(pred, gt).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_pck_and_auc_hand_example():
    gt = np.zeros((2, 4, 3))
    pred = np.zeros((2, 4, 3))
    pred[0, :, 0] = [0.0, 100.0, 149.0, 151.0]  # 3 of 4 within 150
    pred[1, :, 2] = [10.0, 20.0, 300.0, 400.0]  # 2 of 4
    np.testing.assert_allclose(pck(pred, gt), [0.75, 0.5])
    np.testing.assert_allclose(pck(pred, gt, threshold=50), [0.25, 0.5])
    th = np.linspace(0, 150, 31)
    ref = [
        np.mean([[np.linalg.norm(pred[n, j]) < t for j in range(4)] for t in th]) for n in range(2)
    ]
    np.testing.assert_allclose(auc(pred, gt), ref)
    got_t = auc(torch.from_numpy(pred), torch.from_numpy(gt))
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_t.numpy(), ref)


def test_pck_auc_random_vs_loop():
    rng = _rng()
    gt = rng.normal(size=(6, 14, 3)) * 100
    pred = gt + rng.normal(size=gt.shape) * 80
    d = np.sqrt(((pred - gt) ** 2).sum(-1))
    np.testing.assert_allclose(pck(pred, gt, 120.0), (d < 120).mean(1))
    areas = np.mean([(d < t).mean(1) for t in np.linspace(0, 150, 31)], axis=0)
    np.testing.assert_allclose(auc(pred, gt), areas)
    assert np.all(auc(pred, gt) <= pck(pred, gt, 150.0) + 1e-12)


@pytest.mark.parametrize("fn", [mpjpe, pa_mpjpe, pck, auc])
def test_bad_inputs_raise_clear_errors(fn):
    a = np.zeros((2, 14, 3))
    with pytest.raises(ValueError, match=r"\(N, J, 3\)"):
        fn(np.zeros((2, 14, 2)), np.zeros((2, 14, 2)))
    with pytest.raises(ValueError, match="same shape"):
        fn(a, np.zeros((3, 14, 3)))
    with pytest.raises(TypeError, match="both"):
        fn(a, torch.zeros(2, 14, 3))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        fn([[[0, 0, 0]]], a)
