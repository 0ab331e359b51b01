"""The fused CPU skinning loops (ops/skin_cpu.py) against the torch composition and float64."""

from __future__ import annotations

import random

import pytest
import torch

from hmr_fast.ops import reference as ref
from hmr_fast.ops import skin_cpu

pytestmark = pytest.mark.skipif(not skin_cpu.available(), reason="numba is not installed")


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    print(f"torch seed {seed}")


def random_skinning(num_verts: int, num_joints: int = 24, k: int = 4):
    """Compact weights with some zero-padded slots, as real files have."""
    idx = torch.stack([torch.randperm(num_joints)[:k] for _ in range(num_verts)])
    w = torch.rand(num_verts, k)
    w[torch.rand(num_verts, k) < 0.3] = 0.0
    w[:, 0] += 0.1
    return idx, w / w.sum(1, keepdim=True)


def random_inputs(batch, num_verts, dtype=torch.float32, num_joints=24):
    v_planar = torch.randn(num_verts, 3, batch, dtype=dtype)
    rel = torch.randn(batch, num_joints, 3, 4, dtype=dtype)
    transl = torch.randn(batch, 3, dtype=dtype)
    return v_planar, rel, transl


@pytest.mark.parametrize("batch", [1, 3, 37])
@pytest.mark.parametrize("with_transl", [True, False])
def test_kernels_write_every_element_and_match_float64(batch, with_transl):
    num_verts = 301
    idx, w = random_skinning(num_verts)
    v_planar, rel, transl = random_inputs(batch, num_verts)
    transl = transl if with_transl else None
    transforms = rel.permute(1, 2, 3, 0).contiguous()
    fwd, bwd = skin_cpu._kernels()

    out = torch.full((batch, num_verts, 3), float("nan"))
    transl_t = (transl if transl is not None else torch.zeros(batch, 3)).t().contiguous()
    fwd(v_planar.numpy(), transforms.numpy(), idx.numpy(), w.numpy(), transl_t.numpy(),
        out.numpy())
    v64 = v_planar.double().permute(2, 0, 1).requires_grad_()
    rel64 = rel.double().requires_grad_()
    expected = ref.skin(v64, rel64, idx, w.double(),
                        None if transl is None else transl.double())
    assert not out.isnan().any(), "unwritten output elements"
    assert (out.double() - expected).abs().max() < 1e-5

    grad = torch.randn(batch, num_verts, 3)
    expected.backward(grad.double())
    grad_v = torch.full_like(v_planar, float("nan"))
    partial = torch.full((skin_cpu.CHUNKS, *transforms.shape), float("nan"))
    bwd(grad.permute(1, 2, 0).contiguous().numpy(), v_planar.numpy(), transforms.numpy(),
        idx.numpy(), w.numpy(), grad_v.numpy(), partial.numpy())
    assert not grad_v.isnan().any() and not partial.isnan().any(), "unwritten gradients"
    got_v = grad_v.permute(2, 0, 1).double()
    got_rel = partial.sum(0).permute(3, 0, 1, 2).double()
    for name, got, want in (("v_posed", got_v, v64.grad), ("rel_transforms", got_rel, rel64.grad)):
        rel_err = ((got - want).abs().max() / want.abs().max()).item()
        assert rel_err < 1e-5, f"d/d{name}: relative error {rel_err:.3g}"


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_fused_skin_matches_the_torch_composition(batch):
    num_verts = 1000
    idx, w = random_skinning(num_verts)
    v_planar, rel, transl = random_inputs(batch, num_verts)
    results = []
    for fused in (False, True):
        v = v_planar.permute(2, 0, 1).clone().requires_grad_()  # (B, V, 3) view of (V, 3, B)
        r = rel.clone().requires_grad_()
        t = transl.clone().requires_grad_()
        out = ref.skin(v, r, idx, w, t, fused_cpu=fused)
        assert out.is_contiguous() and out.shape == (batch, num_verts, 3)
        out.backward(torch.ones_like(out) * torch.linspace(-1, 1, 3))
        results.append((out.detach(), v.grad, r.grad, t.grad))
    for name, a, b in zip(("vertices", "v_posed", "rel", "transl"), *results):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max() <= 2e-6 * scale, name


def test_gradcheck_float64():
    num_verts, batch = 23, 2
    idx, w = random_skinning(num_verts, k=3)
    v_planar, rel, transl = random_inputs(batch, num_verts, torch.float64)
    args = (v_planar.permute(2, 0, 1).requires_grad_(), rel.requires_grad_(),
            transl.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda v, r, t: ref._SkinCPU.apply(v, r, idx, w.double(), t), args)


def test_results_do_not_depend_on_the_thread_count():
    idx, w = random_skinning(2000)
    v_planar, rel, transl = random_inputs(16, 2000)
    transforms = rel.permute(1, 2, 3, 0).contiguous()
    grad = torch.randn(2000, 3, 16)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            out = skin_cpu.skin_forward(v_planar, transforms, idx, w, transl)
            results.append((out, *skin_cpu.skin_backward(grad, v_planar, transforms, idx, w)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)
