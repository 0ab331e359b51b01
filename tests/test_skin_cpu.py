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
    kernels = skin_cpu._kernels()

    transl_t = (transl if transl is not None else torch.zeros(batch, 3)).t().contiguous()
    outs = {}
    for mode, (fwd, _) in kernels.items():
        outs[mode] = torch.full((batch, num_verts, 3), float("nan"))
        fwd(v_planar.numpy(), transforms.numpy(), idx.numpy(), w.numpy(), transl_t.numpy(),
            outs[mode].numpy())
    assert torch.equal(outs["serial"], outs["parallel"])
    out = outs["parallel"]
    v64 = v_planar.double().permute(2, 0, 1).requires_grad_()
    rel64 = rel.double().requires_grad_()
    expected = ref.skin(v64, rel64, idx, w.double(),
                        None if transl is None else transl.double())
    assert not out.isnan().any(), "unwritten output elements"
    assert (out.double() - expected).abs().max() < 1e-5

    grad = torch.randn(batch, num_verts, 3)
    expected.backward(grad.double())
    grads = {}
    for mode, (_, bwd) in kernels.items():
        grad_v = torch.full_like(v_planar, float("nan"))
        partial = torch.full((skin_cpu.CHUNKS, *transforms.shape), float("nan"))
        bwd(grad.permute(1, 2, 0).contiguous().numpy(), v_planar.numpy(), transforms.numpy(),
            idx.numpy(), w.numpy(), grad_v.numpy(), partial.numpy())
        assert not grad_v.isnan().any() and not partial.isnan().any(), "unwritten gradients"
        grads[mode] = grad_v, partial
    for a, b in zip(grads["serial"], grads["parallel"]):
        assert torch.equal(a, b)
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


FORK_SCRIPT = """
import torch
from hmr_fast import SMPL
from tests.model_factory import random_model_data
import smplx
model = SMPL(data_struct=smplx.utils.Struct(**random_model_data(num_betas=10)))
with torch.no_grad():
    expected = model(body_pose=torch.ones(2, 69) * 0.3).vertices  # the parent runs the loops

class Forward(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        with torch.no_grad():
            return model(body_pose=torch.ones(2, 69) * 0.3).vertices

loader = torch.utils.data.DataLoader(Forward(), batch_size=2, num_workers=2,
                                     multiprocessing_context="fork")
for batch in loader:
    assert torch.allclose(batch, expected.expand(2, -1, -1, -1), atol=1e-6)
print("ok")
"""


def test_forked_dataloader_workers_can_run_the_layer(tmp_path):
    """Regression: numba's OpenMP layer terminates every process forked after it ran."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT], cwd=repo, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
