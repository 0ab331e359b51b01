"""Discriminator: structure, backends (torch / fused Triton / per-head loop) and their gradients.

The oracle is an explicit float64 forward written here from the model's parameters, one head
at a time, with rotation matrices from scipy (independent of the package's Rodrigues).
Triton runs under the CPU interpreter when there is no GPU (root conftest.py).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from hmr_fast.models.discriminator import Discriminator
from hmr_fast.ops import discriminator_ops as ops

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# Forward/gradient tolerances against the float64 oracle, relative to each tensor's max.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}
# The whole model is tested in fp32/fp64 (CPU half-precision GEMMs are not a meaningful
# reference); half-precision activations are tested on the heads op, where the kernel upcasts.
DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16] + ([torch.bfloat16] if CUDA else [])


def random_axis_angle(batch, generator=None):
    """(B, 69) axis-angles with angles up to about pi, plus a zero and a near-pi joint."""
    aa = torch.randn(batch, 23, 3, generator=generator, dtype=torch.float64) * 0.8
    aa[:, 0] = 0.0
    aa[:, 1] = torch.tensor([np.pi - 1e-3, 0.0, 0.0], dtype=torch.float64)
    return aa.reshape(batch, 69)


def scipy_rotmats(axis_angle):
    """(B, 69) -> (B, 23, 3, 3) float64 via scipy."""
    aa = axis_angle.detach().cpu().double().numpy().reshape(-1, 3)
    mats = Rotation.from_rotvec(aa).as_matrix().reshape(-1, 23, 3, 3)
    return torch.from_numpy(mats)


def oracle_forward(disc, rotmats, betas):
    """Float64 discriminator, one head at a time, straight from the parameters."""
    p = {k: v.detach().double().cpu().requires_grad_() for k, v in disc.named_parameters()}
    x = rotmats.double().cpu().reshape(-1, 23, 9)
    emb, scores = [], []
    for j in range(23):
        h = F.relu(x[:, j] @ p["embed1.weight"].T + p["embed1.bias"])
        h = F.relu(h @ p["embed2.weight"].T + p["embed2.bias"])
        emb.append(h)
        scores.append(h @ p["head_weight"][j] + p["head_bias"][j])
    full = torch.cat(emb, 1)
    for i in (0, 2):
        full = F.relu(full @ p[f"full_pose.{i}.weight"].T + p[f"full_pose.{i}.bias"])
    full = full @ p["full_pose.4.weight"].T + p["full_pose.4.bias"]
    s = betas.double().cpu()
    for i in (0, 2):
        s = F.relu(s @ p[f"shape.{i}.weight"].T + p[f"shape.{i}.bias"])
    s = s @ p["shape.4.weight"].T + p["shape.4.bias"]
    return torch.cat([torch.stack(scores, 1), full, s], 1), p


def assert_close_rel(actual, expected, tol, what):
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual - expected).abs().max() / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.1g}"


def test_exact_parameter_count():
    disc = Discriminator()
    assert sum(p.numel() for p in disc.parameters()) == 1_807_619
    assert tuple(disc.head_weight.shape) == (23, 32) and tuple(disc.head_bias.shape) == (23,)
    assert [m.out_features for m in disc.full_pose if isinstance(m, torch.nn.Linear)] == [
        1024,
        1024,
        1,
    ]
    assert [m.out_features for m in disc.shape if isinstance(m, torch.nn.Linear)] == [10, 5, 1]


@pytest.mark.parametrize("backend", ["torch", "triton", "loop"])
@pytest.mark.parametrize("batch", [1, 3, 37])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backend_matches_oracle_with_all_gradients(backend, batch, dtype):
    torch.manual_seed(1000 * batch + len(backend))
    disc = Discriminator(backend=backend).to(DEVICE, dtype)
    aa = random_axis_angle(batch)
    rot = scipy_rotmats(aa)
    betas = torch.randn(batch, 10, dtype=torch.float64) * 2
    rot_in = rot.to(DEVICE, dtype).requires_grad_()
    betas_in = betas.to(DEVICE, dtype).requires_grad_()
    out = disc(rot_in, betas_in)
    assert out.shape == (batch, 25) and out.dtype == dtype

    # The oracle sees the same (rounded) inputs and parameters as the model under test.
    rot_ref = rot_in.detach().double().cpu().requires_grad_()
    betas_ref = betas_in.detach().double().cpu().requires_grad_()
    expected, ref_params = oracle_forward(disc, rot_ref, betas_ref)
    tol = TOL[dtype]
    assert_close_rel(out, expected, tol, "output")

    grad_out = torch.randn(batch, 25, dtype=torch.float64)
    params = dict(disc.named_parameters())
    names = list(params)
    grads = torch.autograd.grad(
        out, [rot_in, betas_in, *params.values()], grad_out.to(DEVICE, dtype)
    )
    ref_grads = torch.autograd.grad(
        expected, [rot_ref, betas_ref, *(ref_params[n] for n in names)], grad_out
    )
    for name, g, r in zip(["body_pose", "betas", *names], grads, ref_grads):
        assert g.dtype == dtype, name
        assert_close_rel(g, r, tol, f"grad {name}")


@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_triton_heads_half_activations(batch, dtype):
    """Half-precision activations with fp32 parameters (the autocast case): fp32 math inside."""
    torch.manual_seed(batch)
    disc = Discriminator().to(DEVICE)
    x = scipy_rotmats(random_axis_angle(batch)).to(DEVICE, dtype).reshape(batch, 23, 9)
    x.requires_grad_()
    w = [
        disc.embed1.weight,
        disc.embed1.bias,
        disc.embed2.weight,
        disc.embed2.bias,
        disc.head_weight,
        disc.head_bias,
    ]
    h2, scores = ops.disc_heads_triton(x, *w)
    assert h2.dtype == dtype and scores.dtype == dtype
    xr = x.detach().double().cpu().requires_grad_()
    wr = [t.detach().double().cpu().requires_grad_() for t in w]
    h2r, sr = ops.disc_heads_loop_reference(xr, *wr)
    assert_close_rel(h2, h2r, TOL[dtype], "h2")
    assert_close_rel(scores, sr, TOL[dtype], "scores")
    gh2 = torch.randn(batch, 23, 32, dtype=torch.float64)
    gs = torch.randn(batch, 23, dtype=torch.float64)
    got = torch.autograd.grad(
        (h2.double().cpu() * gh2).sum() + (scores.double().cpu() * gs).sum(), [x, *w]
    )
    ref = torch.autograd.grad((h2r * gh2).sum() + (sr * gs).sum(), [xr, *wr])
    for name, g, r in zip(["x", "w1", "b1", "w2", "b2", "wh", "bh"], got, ref):
        assert_close_rel(g, r, TOL[dtype], f"grad {name}")


def test_axis_angle_and_rotmat_inputs_agree():
    torch.manual_seed(3)
    disc = Discriminator(backend="torch").double()
    aa = random_axis_angle(5).requires_grad_()
    betas = torch.randn(5, 10, dtype=torch.float64)
    out_aa = disc(aa, betas)
    out_rot = disc(scipy_rotmats(aa), betas)
    # Rodrigues shifts the angle by 1e-8 as smplx does (rotations ~1e-8 off scipy's), which
    # the (original, Xavier-initialised) layers carry to ~1e-8 in the scores.
    torch.testing.assert_close(out_aa, out_rot, rtol=1e-6, atol=1e-7)
    # And the gradient reaches the axis-angles.
    (g,) = torch.autograd.grad(out_aa.sum(), aa)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 37])
def test_triton_launchers_write_every_output(batch):
    """NaN-filled outputs before the launch: any NaN left is an element the kernel skipped."""
    torch.manual_seed(batch)
    disc = Discriminator().to(DEVICE)
    x = scipy_rotmats(random_axis_angle(batch)).float().to(DEVICE).reshape(batch, 23, 9)
    w = [
        disc.embed1.weight,
        disc.embed1.bias,
        disc.embed2.weight,
        disc.embed2.bias,
        disc.head_weight,
        disc.head_bias,
    ]
    w = [t.detach() for t in w]
    h2 = torch.full((batch, 23, 32), float("nan"), device=DEVICE)
    scores = torch.full((batch, 23), float("nan"), device=DEVICE)
    ops.launch_disc_heads_fwd(x, *w, h2, scores)
    h2_ref, scores_ref = ops.disc_heads_loop_reference(x, *w)
    assert not h2.isnan().any() and not scores.isnan().any()
    torch.testing.assert_close(h2, h2_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, scores_ref, rtol=1e-5, atol=1e-5)

    gh2 = torch.randn(batch, 23, 32, device=DEVICE)
    gs = torch.randn(batch, 23, device=DEVICE)
    dx = torch.full_like(x, float("nan"))
    flat = ops.launch_disc_heads_bwd(x, *w[:5], gh2, gs, dx)
    assert not dx.isnan().any() and not flat.isnan().any()
    xr = x.clone().requires_grad_()
    wr = [t.clone().requires_grad_() for t in w]
    h2r, sr = ops.disc_heads_loop_reference(xr, *wr)
    ref = torch.autograd.grad((h2r * gh2).sum() + (sr * gs).sum(), [xr, *wr])
    torch.testing.assert_close(dx, ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        flat, torch.cat([r.reshape(-1) for r in ref[1:]]), rtol=1e-5, atol=1e-4
    )


def _small_heads_inputs(batch):
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 23, 9, generator=g, dtype=torch.float64)
    shapes = [(32, 9), (32,), (32, 32), (32,), (23, 32), (23,)]
    # Biases shifted so some units are active and some are not, away from the ReLU kink.
    params = [torch.randn(*s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]
    return [t.to(DEVICE).requires_grad_() for t in (x, *params)]


# fast_mode checks v^T J u for random u, v against finite differences: a couple of launches
# per input instead of one per input element (2549 of them), which the interpreter can't afford.
def test_gradcheck_autograd_function_fp64():
    inputs = _small_heads_inputs(2)
    assert torch.autograd.gradcheck(
        ops.DiscHeadsFunction.apply, inputs, eps=1e-6, atol=1e-7, fast_mode=True
    )


def test_gradcheck_registered_op_fp64():
    inputs = _small_heads_inputs(3)
    assert torch.autograd.gradcheck(
        ops.disc_heads_triton, inputs, eps=1e-6, atol=1e-7, fast_mode=True
    )


def test_unused_output_gets_zero_gradient():
    """Autograd hands the backward None for an output that never reached the loss."""
    x, *w = _small_heads_inputs(3)
    _, scores = ops.disc_heads_triton(x, *w)
    got = torch.autograd.grad(scores.sum(), [x, *w])
    xr, *wr = (t.detach().clone().requires_grad_() for t in (x, *w))
    _, sr = ops.disc_heads_loop_reference(xr, *wr)
    ref = torch.autograd.grad(sr.sum(), [xr, *wr])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_state_dict_round_trip_between_backends():
    torch.manual_seed(5)
    src = Discriminator(backend="torch").to(DEVICE)
    dst = Discriminator(backend="triton").to(DEVICE)
    assert list(src.state_dict()) == list(dst.state_dict())
    dst.load_state_dict(src.state_dict())
    pose = random_axis_angle(4).float().to(DEVICE)
    betas = torch.randn(4, 10, device=DEVICE)
    torch.testing.assert_close(dst(pose, betas), src(pose, betas), rtol=1e-5, atol=1e-5)
    back = Discriminator(backend="torch").to(DEVICE)
    back.load_state_dict(dst.state_dict())
    torch.testing.assert_close(back(pose, betas), src(pose, betas), rtol=0, atol=0)


def test_auto_backend_choice(monkeypatch):
    disc = Discriminator()
    assert disc.resolve_backend(torch.device("cpu")) == "torch"
    assert disc.resolve_backend(torch.device("cuda")) == "triton"
    with pytest.raises(ValueError, match="backend"):
        Discriminator(backend="cuda")


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(ops, "_kernels_interpreted", lambda: False)
    disc = Discriminator(backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        disc(torch.zeros(2, 69), torch.zeros(2, 10))


@pytest.mark.parametrize(
    "pose_shape,betas_shape,match",
    [
        ((2, 72), (2, 10), r"body_pose.*\(B, 69\).*\(2, 72\)"),
        ((2, 24, 3, 3), (2, 10), r"body_pose.*\(B, 23, 3, 3\).*\(2, 24, 3, 3\)"),
        ((69,), (2, 10), r"body_pose.*\(69,\)"),
        ((2, 69), (2, 300), r"betas.*\(B, 10\).*\(2, 300\)"),
        ((2, 69), (3, 10), r"batch size.*2.*3"),
    ],
)
def test_bad_shapes_raise_value_error(pose_shape, betas_shape, match):
    disc = Discriminator(backend="torch")
    with pytest.raises(ValueError, match=match):
        disc(torch.zeros(pose_shape), torch.zeros(betas_shape))


def test_bad_dtype_raises_type_error():
    disc = Discriminator(backend="torch")
    with pytest.raises(TypeError, match="body_pose"):
        disc(torch.zeros(2, 69, dtype=torch.long), torch.zeros(2, 10))
    with pytest.raises(TypeError, match=r"betas.*torch.float32.*torch.float64"):
        disc(torch.zeros(2, 69), torch.zeros(2, 10, dtype=torch.float64))


def test_torch_compile_fullgraph_triton_backend():
    """The registered ops trace without graph breaks, forward and backward."""
    torch.manual_seed(7)
    disc = Discriminator(backend="triton").to(DEVICE)
    compiled = torch.compile(disc, backend="aot_eager", fullgraph=True)
    pose = random_axis_angle(3).float().to(DEVICE)
    betas = torch.randn(3, 10, device=DEVICE)
    out = compiled(pose, betas)
    ref = Discriminator(backend="torch").to(DEVICE)
    ref.load_state_dict(disc.state_dict())
    expected = ref(pose, betas)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad(out.square().sum(), disc.embed1.weight)[0]
    gr = torch.autograd.grad(expected.square().sum(), ref.embed1.weight)[0]
    torch.testing.assert_close(g, gr, rtol=1e-4, atol=1e-5)


def test_aot_variants_cover_every_kernel_parameter():
    kernels = ops._kernels
    for variant in kernels.AOT_VARIANTS:
        assert list(variant["signature"]) == list(variant["fn"].arg_names), variant["name"]
        constexprs = [k for k, v in variant["signature"].items() if v == "constexpr"]
        assert sorted(variant["constexprs"]) == sorted(constexprs), variant["name"]
    used = {(kernels.GPU_FWD_CONFIG["BLOCK_M"], kernels.GPU_FWD_CONFIG["num_warps"])}
    used.add((kernels.GPU_BWD_CONFIG["BLOCK_M"], kernels.GPU_BWD_CONFIG["num_warps"]))
    listed = {(v["constexprs"]["BLOCK_M"], v["num_warps"]) for v in kernels.AOT_VARIANTS}
    assert used == listed


_AOT_SCRIPT = r"""
import os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from hmr_fast.ops import discriminator_ops as ops

ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
for v in ops._kernels.AOT_VARIANTS:
    if not v["name"].endswith("fp32"):
        continue
    src = ASTSource(fn=v["fn"], signature=v["signature"], constexprs=v["constexprs"])
    cc = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=v["num_warps"]))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(cc.asm["ptx"])
        res = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", path, "-o", path + ".cubin"],
                             capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", res.stderr)]
    print(v["name"], "spills", spills)
    assert spills and max(spills) == 0, (v["name"], res.stderr)
print("ok")
"""


def test_fp32_kernels_compile_for_sm90_without_spills():
    """Ahead-of-time build (no GPU needed) in a fresh process without the interpreter."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    triton_dir = Path(__import__("triton").__file__).parent
    if not (triton_dir / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("triton's bundled ptxas is not available")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr
