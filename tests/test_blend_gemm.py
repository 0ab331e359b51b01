"""The CPU blend-shape GEMM through oneDNN (reference._OneDNNBlend) against a float64 addmm."""

from __future__ import annotations

import random

import pytest
import torch

from hmr_fast import SMPL
from hmr_fast.ops import reference as ref
from tests.model_factory import random_model_data, write_clean_pkl

pytestmark = pytest.mark.skipif(
    ref._onednn_linear() is None, reason="this torch build has no oneDNN linear op"
)


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    print(f"torch seed {seed}")


def random_constants(num_vertices: int, num_coeffs: int):
    v_template = torch.randn(num_vertices, 3)
    blend_dirs = torch.randn(num_coeffs, 3 * num_vertices) * 0.01
    return v_template, blend_dirs


@pytest.mark.parametrize("batch", [1, 3, 37, 64])
def test_values_and_gradients_match_float64(batch):
    num_betas, num_vertices = 10, 1001
    v_template, blend_dirs = random_constants(num_vertices, num_betas + 207)
    dense = ref.dense_blend_weight(v_template, blend_dirs)
    betas = torch.randn(batch, num_betas, requires_grad=True)
    pose_feat = torch.randn(batch, 207, requires_grad=True)
    assert ref.onednn_gemm_usable(torch.cat([betas, pose_feat], 1))

    out = ref.blend_shapes(betas, pose_feat, v_template, blend_dirs, dense)
    leaves64 = [betas.detach().double().requires_grad_(), pose_feat.detach().double()]
    leaves64[1].requires_grad_()
    out64 = ref.blend_shapes(*leaves64, v_template.double(), blend_dirs.double())
    assert out.shape == (batch, num_vertices, 3)
    assert torch.isfinite(out).all()
    err = (out.double() - out64).abs().max().item()
    assert err < 1e-5, f"values: max abs error {err:.3g}"

    grad = torch.randn(batch, num_vertices, 3)
    g_betas, g_pose = torch.autograd.grad((out * grad).sum(), [betas, pose_feat])
    g64 = torch.autograd.grad((out64 * grad.double()).sum(), leaves64)
    for name, g, g_ref in (("betas", g_betas, g64[0]), ("pose_feat", g_pose, g64[1])):
        rel = ((g.double() - g_ref).abs().max() / g_ref.abs().max()).item()
        assert rel < 1e-5, f"d/d{name}: relative error {rel:.3g}"


def test_only_fp32_cpu_takes_onednn():
    assert ref.onednn_gemm_usable(torch.zeros(2, 5))
    assert not ref.onednn_gemm_usable(torch.zeros(2, 5, dtype=torch.float64))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    data = random_model_data(num_betas=10)
    return write_clean_pkl(data, tmp_path_factory.mktemp("gemm") / "model.pkl")


def test_layer_uses_the_dense_weight_in_fp32_only(model_file):
    fp32 = SMPL(str(model_file))
    weight = fp32.model_tensors().dense_blend
    assert weight is not None and weight.is_contiguous()
    expected = torch.cat([fp32.v_template.reshape(-1, 1), fp32.blend_dirs.t()], 1)
    assert torch.equal(weight, expected)
    assert fp32.model_tensors().dense_blend is weight  # built once
    assert SMPL(str(model_file), dtype=torch.float64).model_tensors().dense_blend is None


def test_in_place_edit_of_the_constants_rebuilds_the_weight(model_file):
    edited, fresh = SMPL(str(model_file)), SMPL(str(model_file))
    pose = torch.randn(2, 69) * 0.5
    edited(body_pose=pose)  # builds the cached weight
    shift = torch.randn(fresh.v_template.shape)
    with torch.no_grad():
        edited.v_template.add_(shift)
        edited.posedirs[3].mul_(2.0)
        fresh.v_template.add_(shift)
        fresh.posedirs[3].mul_(2.0)
    a, b = edited(body_pose=pose), fresh(body_pose=pose)
    assert torch.equal(a.vertices, b.vertices)
    unedited = SMPL(str(model_file))(body_pose=pose)
    assert not torch.allclose(a.vertices, unedited.vertices)


def test_torch_compile_traces_the_plain_torch_path(model_file):
    """The oneDNN GEMM and the numba loops are eager-only: traced code takes the plain torch
    path, with no graph break, and matches eager."""
    model = SMPL(str(model_file))

    def run(body_pose, betas):
        return model(body_pose=body_pose, betas=betas).vertices

    inputs = (torch.randn(3, 69) * 0.5, torch.randn(3, 10))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(run)(*inputs)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    assert (compiled(*inputs) - run(*inputs)).abs().max() < 2e-5
    torch._dynamo.reset()
