"""The fast-path rule (hmr_fast/ops/dispatch.py): which path a call takes, and the custom
autograd functions' differentiable backward (double backward, batched backward)."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from hmr_fast import SMPL
from hmr_fast.ops import naive
from hmr_fast.ops import reference as ref
from tests.model_factory import random_model_data, write_clean_pkl
from tests.spies import record_calls


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_clean_pkl(random_model_data(seed=5), tmp_path_factory.mktemp("d") / "m.pkl")


def inputs(batch=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"betas": torch.randn(batch, 10, generator=g, dtype=dtype),
            "body_pose": 0.4 * torch.randn(batch, 69, generator=g, dtype=dtype),
            "global_orient": 0.4 * torch.randn(batch, 3, generator=g, dtype=dtype)}


@pytest.fixture
def plain_calls(monkeypatch):
    """Counts calls of the plain path (naive.lbs) without changing what it returns."""
    return record_calls(monkeypatch, naive, "lbs")


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_calls_take_the_fast_path(model_file, plain_calls, grad, dtype):
    model = SMPL(str(model_file), dtype=dtype)
    x = inputs(dtype=dtype)
    if grad:
        x["betas"].requires_grad_(True)
    with torch.set_grad_enabled(grad):
        out = model(**x)
    assert plain_calls == [], "an eager call must not fall back to the plain path"
    with torch.no_grad():
        expected, _, _ = model._plain_forward(
            x["betas"], torch.cat([x["global_orient"], x["body_pose"]], 1), None, True)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.vertices.detach(), expected, atol=tol, rtol=0)


def _trace(model, x):
    zero = torch.zeros(x["betas"].shape[0], 3)  # explicit: the transl Parameter needs grad
    fn = torch.jit.trace(lambda b, p, o: model(betas=b, body_pose=p, global_orient=o,
                                               transl=zero).joints,
                         (x["betas"], x["body_pose"], x["global_orient"]), check_trace=False)
    return fn(x["betas"], x["body_pose"], x["global_orient"])


def _vmap(model, x):
    return torch.func.vmap(lambda b: model(betas=b[None], body_pose=x["body_pose"][:1],
                                           global_orient=x["global_orient"][:1]).joints)(
        x["betas"])


def _forward_ad(model, x):
    with fwAD.dual_level():
        out = model(betas=fwAD.make_dual(x["betas"], torch.ones_like(x["betas"])),
                    body_pose=x["body_pose"], global_orient=x["global_orient"])
        return fwAD.unpack_dual(out.joints).tangent


def _learnable_template(model, x):
    model.v_template = torch.nn.Parameter(model.v_template.clone())
    return model(**x).joints


@pytest.mark.parametrize("pattern", [_trace, _vmap, _forward_ad, _learnable_template])
def test_observing_calls_take_the_plain_path(model_file, plain_calls, pattern):
    model = SMPL(str(model_file))
    result = pattern(model, inputs())
    assert result is not None and torch.isfinite(result).all()
    assert plain_calls, f"{pattern.__name__}: the plain path must run"


def test_no_grad_edit_then_learnable_then_frozen_again(model_file, plain_calls):
    """Back from a learnable constant to a buffer: the fast path resumes, with the new data."""
    model = SMPL(str(model_file))
    x = inputs()
    model(**x)
    model.v_template = torch.nn.Parameter(model.v_template.clone() + 0.1)
    learnable = model(**x).vertices.detach()
    assert plain_calls
    plain_calls.clear()
    frozen_template = model.v_template.detach().clone()
    del model.v_template  # a Parameter's name takes only Parameters (nn.Module's rule)
    model.register_buffer("v_template", frozen_template)
    frozen = model(**x).vertices
    assert plain_calls == []
    torch.testing.assert_close(frozen, learnable, atol=2e-5, rtol=0)


def _skin_inputs(dtype, seed=3, batch=2, verts=40, joints=24):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, verts, 3, generator=g, dtype=dtype, requires_grad=True)
    rel = torch.randn(batch, joints, 3, 4, generator=g, dtype=dtype, requires_grad=True)
    idx = torch.stack([torch.randperm(joints, generator=g)[:4] for _ in range(verts)])
    w = torch.rand(verts, 4, generator=g, dtype=dtype)
    transl = torch.randn(batch, 3, generator=g, dtype=dtype, requires_grad=True)
    return v, rel, idx, w / w.sum(1, keepdim=True), transl


@pytest.mark.parametrize("fused_cpu", [False, True])
def test_skinning_functions_are_twice_differentiable(fused_cpu):
    """_Skin and _SkinCPU: gradgradcheck in float64 (their backward falls back to plain
    differentiable torch when create_graph=True)."""
    v, rel, idx, w, transl = _skin_inputs(torch.float64)

    def fn(v, rel, transl):
        return ref.skin(v, rel, idx, w, transl, fused_cpu=fused_cpu)

    assert torch.autograd.gradcheck(fn, (v, rel, transl))
    assert torch.autograd.gradgradcheck(fn, (v, rel, transl))


@pytest.mark.parametrize("fused_cpu", [False, True])
def test_skinning_backward_under_vectorized_jacobian(fused_cpu):
    """autograd.functional.jacobian(vectorize=True) batches the backward (legacy vmap): the
    functions take their plain formulas and give the dense-skinning Jacobian."""
    v, rel, idx, w, transl = _skin_inputs(torch.float64)
    dense = ref.dense_skinning_weights(idx, w, rel.shape[1])

    def fast(v):
        return ref.skin(v, rel.detach(), idx, w, transl.detach(), fused_cpu=fused_cpu)

    def plain(v):
        return ref.skin_dense(v, rel.detach(), dense) + transl.detach()[:, None]

    got = torch.autograd.functional.jacobian(fast, v.detach(), vectorize=True)
    want = torch.autograd.functional.jacobian(plain, v.detach())
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_onednn_blend_double_backward_matches_addmm():
    """_OneDNNBlend (fp32 CPU): a gradient penalty through it equals the addmm path's."""
    if not ref.onednn_gemm_usable(torch.zeros(1, 1)):
        pytest.skip("no oneDNN linear op in this torch build")
    g = torch.Generator().manual_seed(9)
    v_template = torch.randn(50, 3, generator=g)
    blend_dirs = torch.randn(17, 150, generator=g) * 0.1
    dense = ref.dense_blend_weight(v_template, blend_dirs)
    betas = torch.randn(3, 7, generator=g)
    feat = torch.randn(3, 10, generator=g)

    def penalty(weight):
        b = betas.clone().requires_grad_(True)
        f = feat.clone().requires_grad_(True)
        out = ref.blend_shapes(b, f, v_template, blend_dirs, weight)
        (gb,) = torch.autograd.grad((out.sin() ** 2).sum(), b, create_graph=True)
        return torch.autograd.grad((gb ** 2).sum(), (b, f))

    for fast, plain in zip(penalty(dense), penalty(None)):
        torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
