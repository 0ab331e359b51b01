"""Fused Triton SMPL (hmr_fast.ops.smpl_triton) against the float64 torch reference.

Runs under Triton's interpreter on CPU tensors when there is no GPU (root conftest.py), and
compiled on CUDA tensors otherwise. Every case draws fresh random models and inputs.
"""

import math
import warnings

import pytest
import torch

from hmr_fast.body.constants import PARENTS, VERTEX_JOINT_IDS
from hmr_fast.ops import reference as ref
from hmr_fast.ops import smpl_triton as st

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_model(
    num_verts=300, num_betas=10, num_skin=4, dtype=torch.float64, vertex_joint_ids=None
) -> ref.ModelTensors:
    """A random SMPL-like model: mesh around the origin, small blend directions, K distinct
    skinning joints per vertex with normalised weights, some of them zero padding."""
    num_joints = len(PARENTS)
    skin_idx = torch.stack([torch.randperm(num_joints)[:num_skin] for _ in range(num_verts)])
    skin_w = torch.rand(num_verts, num_skin, dtype=dtype)
    skin_w[:, -1] *= torch.rand(num_verts) > 0.5
    skin_w = skin_w / skin_w.sum(1, keepdim=True)
    if vertex_joint_ids is None:
        vertex_joint_ids = torch.randperm(num_verts)[: len(VERTEX_JOINT_IDS)]
    model = ref.ModelTensors(
        v_template=torch.randn(num_verts, 3, dtype=dtype) * 0.3,
        blend_dirs=torch.randn(num_betas + 207, 3 * num_verts, dtype=dtype) * 0.01,
        joint_template=torch.randn(num_joints, 3, dtype=dtype) * 0.3,
        joint_shapedirs=torch.randn(num_joints, 3, num_betas, dtype=dtype) * 0.01,
        parents=PARENTS,
        skin_idx=skin_idx,
        skin_w=skin_w,
        vertex_joint_ids=torch.as_tensor(vertex_joint_ids, dtype=torch.long),
    )
    return to(model, dtype)


def to(model: ref.ModelTensors, dtype) -> ref.ModelTensors:
    def conv(t):
        if not isinstance(t, torch.Tensor):
            return t
        return t.to(DEVICE, dtype) if t.is_floating_point() else t.to(DEVICE)

    return ref.ModelTensors(*[conv(t) for t in model])


def sparse_regressor(num_verts, num_rows=19, dtype=torch.float64):
    """HMR-like: 14 rows mixing a few vertices each, then 5 one-hot face-vertex rows."""
    reg = torch.zeros(num_rows, num_verts, dtype=dtype)
    for q in range(num_rows - 5):
        cols = torch.randperm(num_verts)[:6]
        reg[q, cols] = torch.rand(6, dtype=dtype)
        reg[q] /= reg[q].sum()
    reg[torch.arange(num_rows - 5, num_rows), torch.randperm(num_verts)[:5]] = 1.0
    return reg.to(DEVICE)


def random_inputs(batch, num_betas, dtype, pose2rot=True, angle_scale=0.6):
    aa = torch.randn(batch, 72, dtype=dtype) * angle_scale
    if pose2rot:
        pose = aa
    else:
        # Not exactly orthonormal on purpose: the backward must not assume it.
        rot = ref.rodrigues(aa.reshape(-1, 3)).reshape(batch, 24, 3, 3)
        pose = rot + 0.02 * torch.randn_like(rot)
    betas = torch.randn(batch, num_betas, dtype=dtype) * 1.5
    transl = torch.randn(batch, 3, dtype=dtype)
    camera = torch.cat(
        [torch.rand(batch, 1, dtype=dtype) + 0.5, torch.randn(batch, 2, dtype=dtype) * 0.2], 1
    )
    return [t.to(DEVICE).requires_grad_(True) for t in (betas, pose, transl, camera)]


def reference_outputs(model, betas, pose, transl, camera, regressor, pose2rot):
    """Float64 torch reference: (vertices, joints, keypoints, projected joints/keypoints)."""
    batch = betas.shape[0]
    rot = ref.rodrigues(pose.reshape(-1, 3)).reshape(batch, 24, 3, 3) if pose2rot else pose
    verts, joints, kps = ref.smpl_forward(model, betas, rot, transl, regressor)
    return (
        verts,
        joints,
        kps,
        ref.weak_perspective(joints, camera),
        ref.weak_perspective(kps, camera),
    )


def compare(
    model, inputs, regressor, pose2rot, return_verts, val_tol, grad_tol, tf32=False, precision=None
):
    """Triton vs the float64 reference on the same inputs: values and all four gradients."""
    betas, pose, transl, camera = inputs
    outs = st.smpl_forward_triton(
        model,
        betas,
        pose,
        transl,
        pose2rot=pose2rot,
        return_verts=return_verts,
        keypoint_regressor=regressor,
        camera=camera,
        tf32=tf32,
        precision=precision,
    )
    assert (outs[0] is not None) == return_verts
    m64 = to(model, torch.float64)
    inputs64 = [t.detach().double().requires_grad_(True) for t in inputs]
    refs = reference_outputs(m64, *inputs64, regressor.double(), pose2rot)
    pairs = [(o, r) for o, r in zip(outs, refs) if o is not None]
    assert len(pairs) == (5 if return_verts else 4)
    for o, r in pairs:
        assert o.shape == r.shape and o.dtype == betas.dtype
        assert torch.isfinite(o).all()
        err = (o.double() - r).abs().max().item()
        assert err <= val_tol * max(1.0, r.abs().max().item()), err
    weights = [torch.randn(r.shape, dtype=torch.float64, device=DEVICE) for _, r in pairs]
    loss = sum((o * w.to(o.dtype)).sum() for (o, _), w in zip(pairs, weights))
    grads = torch.autograd.grad(loss, inputs)
    loss_ref = sum((r * w).sum() for (_, r), w in zip(pairs, weights))
    grads_ref = torch.autograd.grad(loss_ref, inputs64)
    for name, g, gr in zip(("betas", "pose", "transl", "camera"), grads, grads_ref):
        assert g.shape == gr.shape and torch.isfinite(g).all(), name
        err = (g.double() - gr).abs().max().item()
        assert err <= grad_tol * max(1.0, gr.abs().max().item()), (name, err)


@pytest.fixture(autouse=True)
def _nan_outputs(monkeypatch):
    # Every kernel output starts NaN: an element a kernel does not write fails `isfinite`.
    monkeypatch.setattr(st, "FILL_OUTPUTS_WITH_NAN", True)


def test_full_size_fp32_values_and_gradients():
    # Rotation-matrix input is covered on smaller meshes below (the interpreter is slow).
    pose2rot = True
    model = random_model(6890, dtype=torch.float32, vertex_joint_ids=VERTEX_JOINT_IDS)
    compare(
        model,
        random_inputs(3, 10, torch.float32, pose2rot),
        sparse_regressor(6890, dtype=torch.float32),
        pose2rot,
        True,
        val_tol=2e-5,
        grad_tol=2e-5,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "pose2rot,return_verts,batch,num_skin",
    [
        (True, True, 1, 4),
        (True, False, 37, 3),
        (False, True, 3, 6),
        (False, False, 1, 4),
    ],
)
def test_small_model_matches_reference(dtype, pose2rot, return_verts, batch, num_skin):
    model = random_model(300, num_betas=10, num_skin=num_skin, dtype=dtype)
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    compare(
        model,
        random_inputs(batch, 10, dtype, pose2rot),
        sparse_regressor(300, dtype=dtype),
        pose2rot,
        return_verts,
        val_tol=tol,
        grad_tol=tol,
    )


@pytest.mark.parametrize("case", ["zero", "tiny", "near_pi", "near_two_pi", "large_betas"])
def test_nasty_poses(case):
    batch = 4
    betas, pose, transl, camera = [t.detach() for t in random_inputs(batch, 10, torch.float64)]
    axes = torch.nn.functional.normalize(torch.randn(batch, 24, 3, dtype=torch.float64), dim=-1)
    axes = axes.to(DEVICE)
    if case == "zero":
        pose = torch.zeros_like(pose)
    elif case == "tiny":
        pose = (axes * 1e-8).reshape(batch, 72)
    elif case == "near_pi":
        pose = (axes * (math.pi - 1e-4)).reshape(batch, 72)
    elif case == "near_two_pi":
        pose = (axes * (2 * math.pi - 1e-4)).reshape(batch, 72)
    else:
        betas = betas * 4.0
    model = random_model(120, dtype=torch.float64)
    inputs = [t.requires_grad_(True) for t in (betas, pose, transl, camera)]
    compare(model, inputs, sparse_regressor(120), True, True, val_tol=1e-11, grad_tol=1e-9)


def test_gradcheck_fp64_tiny_model():
    model = random_model(50, num_betas=4, dtype=torch.float64)
    reg = sparse_regressor(50)
    for pose2rot, return_verts in ((True, True), (False, False)):
        inputs = random_inputs(2, 4, torch.float64, pose2rot)

        def fn(betas, pose, transl, camera, pose2rot=pose2rot, return_verts=return_verts):
            outs = st.smpl_forward_triton(
                model,
                betas,
                pose,
                transl,
                pose2rot=pose2rot,
                return_verts=return_verts,
                keypoint_regressor=reg,
                camera=camera,
            )
            return tuple(o for o in outs if o is not None)

        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_keypoint_mode_equals_full_forward():
    model = random_model(400, dtype=torch.float32)
    reg = sparse_regressor(400, dtype=torch.float32)
    betas, pose, transl, camera = [t.detach() for t in random_inputs(5, 10, torch.float32)]
    full = st.smpl_forward_triton(
        model,
        betas,
        pose,
        transl,
        pose2rot=True,
        return_verts=True,
        keypoint_regressor=reg,
        camera=camera,
    )
    kp = st.smpl_forward_triton(
        model,
        betas,
        pose,
        transl,
        pose2rot=True,
        return_verts=False,
        keypoint_regressor=reg,
        camera=camera,
    )
    assert kp[0] is None
    for a, b in zip(full[1:], kp[1:]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # The keypoint plan skins only the 21 vertex joints and the regressor's columns.
    plan = st.get_plan(model, reg, vertices=False)
    needed = torch.unique(torch.cat([model.vertex_joint_ids, torch.nonzero(reg.sum(0)).flatten()]))
    assert plan.model.v_template.shape[0] == needed.numel() < 400
    # The vertex joints read the mesh: compare with the full forward's vertices.
    torch.testing.assert_close(full[1][:, 24:], full[0][:, model.vertex_joint_ids])
    torch.testing.assert_close(
        full[2], torch.einsum("qv,bvc->bqc", reg, full[0]), atol=1e-5, rtol=1e-5
    )


def test_without_regressor_camera_or_transl():
    model = random_model(200, dtype=torch.float64)
    betas, pose, _, _ = random_inputs(3, 10, torch.float64)
    verts, joints, kps, pj, pk = st.smpl_forward_triton(
        model, betas, pose, None, pose2rot=True, return_verts=True
    )
    assert kps is None and pj is None and pk is None
    rot = ref.rodrigues(pose.reshape(-1, 3)).reshape(3, 24, 3, 3)
    rv, rj, _ = ref.smpl_forward(model, betas, rot)
    torch.testing.assert_close(verts, rv)
    torch.testing.assert_close(joints, rj)
    g = torch.autograd.grad(joints.sum(), pose)[0]
    torch.testing.assert_close(g, torch.autograd.grad(rj.sum(), pose)[0])


def test_launch_counts(monkeypatch):
    launched = []
    real = st._launch
    monkeypatch.setattr(st, "_launch", lambda k, *a, **kw: (launched.append(k), real(k, *a, **kw)))
    model = random_model(100, dtype=torch.float64)
    betas, pose, transl, camera = random_inputs(2, 10, torch.float64)
    outs = st.smpl_forward_triton(
        model,
        betas,
        pose,
        transl,
        pose2rot=True,
        return_verts=True,
        keypoint_regressor=sparse_regressor(100),
        camera=camera,
    )
    assert len(launched) == 3
    sum(o.sum() for o in outs).backward()
    assert len(launched) == 7  # backward: readout, vertex A-grad, vertex coef-grad, skeleton
    assert all(x.grad is not None for x in (betas, pose, transl, camera))


def test_torch_compile_fullgraph():
    model = random_model(150, dtype=torch.float32)
    reg = sparse_regressor(150, dtype=torch.float32)
    plan = st.get_plan(model, reg, vertices=False)

    def fn(betas, pose, transl, camera):
        _, joints, kps, pj, pk = st.smpl_forward_triton(
            model,
            betas,
            pose,
            transl,
            pose2rot=True,
            return_verts=False,
            keypoint_regressor=reg,
            camera=camera,
            plan=plan,
        )
        return joints.square().sum() + kps.sum() + pj.sin().sum() + pk.cos().sum()

    inputs = random_inputs(3, 10, torch.float32)
    explained = torch._dynamo.explain(fn)(*inputs)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(*inputs)
    grads = torch.autograd.grad(out, inputs)
    out_eager = fn(*inputs)
    grads_eager = torch.autograd.grad(out_eager, inputs)
    torch.testing.assert_close(out, out_eager)
    for a, b in zip(grads, grads_eager):
        torch.testing.assert_close(a, b)


def test_plan_cache_tracks_in_place_changes():
    model = random_model(80, dtype=torch.float64)
    p1 = st.get_plan(model, None, vertices=True)
    assert st.get_plan(model, None, vertices=True) is p1
    model.v_template.add_(1.0)
    assert st.get_plan(model, None, vertices=True) is not p1


def test_bad_inputs_raise_clear_errors():
    model = random_model(60, dtype=torch.float64)
    betas, pose, transl, camera = [t.detach() for t in random_inputs(2, 10, torch.float64)]
    kw = dict(pose2rot=True, return_verts=True)
    with pytest.raises(ValueError, match="betas"):
        st.smpl_forward_triton(model, betas[:, :5], pose, transl, **kw)
    with pytest.raises(ValueError, match="pose"):
        st.smpl_forward_triton(model, betas, pose[:, :69], transl, **kw)
    with pytest.raises(TypeError, match="dtype"):
        st.smpl_forward_triton(model, betas.float(), pose, transl, **kw)
    with pytest.raises(ValueError, match="camera"):
        st.smpl_forward_triton(model, betas, pose, transl, camera=camera[:, :2], **kw)
    with pytest.raises(ValueError, match="keypoint_regressor"):
        st.smpl_forward_triton(
            model, betas, pose, transl, keypoint_regressor=torch.ones(3, 7), **kw
        )


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.setattr(st, "INTERPRETED", False)
    model = to(random_model(40, dtype=torch.float64), torch.float64)
    model = ref.ModelTensors(*[t.cpu() if isinstance(t, torch.Tensor) else t for t in model])
    betas, pose, transl, _ = [t.detach().cpu() for t in random_inputs(1, 10, torch.float64)]
    with pytest.raises(RuntimeError, match="CUDA tensors.*TRITON_INTERPRET=1"):
        st.smpl_forward_triton(model, betas, pose, transl, pose2rot=True, return_verts=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_block_sizes_and_vertex_splits(monkeypatch, dtype):
    # The compiled path's block shapes (many programs, edge masks) and NSPLIT > 1 partial
    # buffers, reduced by the skeleton backward kernel.
    monkeypatch.setattr(st, "USE_GPU_BLOCKS", True)
    if dtype == torch.float64:  # fp64's tiny GPU tiles are slow to interpret: smaller case
        num_verts, batch, cases, tol = 64, 5, ((False, True),), 1e-11
    else:
        num_verts, batch, cases, tol = 300, 37, ((True, True), (False, False)), 2e-5
    model = random_model(num_verts, num_skin=3, dtype=dtype)
    for pose2rot, return_verts in cases:
        compare(
            model,
            random_inputs(batch, 10, dtype, pose2rot),
            sparse_regressor(num_verts, dtype=dtype),
            pose2rot,
            return_verts,
            val_tol=tol,
            grad_tol=tol,
        )


def test_plan_builds_planar_blend_dirs_once():
    # The kernels read the blend directions as planar (KC, 3, V) rows (contiguous loads);
    # the plan makes that copy once and get_plan's cache returns it while the model is
    # unchanged.
    model = random_model(90, dtype=torch.float64)
    reg = sparse_regressor(90)
    for vertices in (True, False):
        plan = st.get_plan(model, reg, vertices=vertices)
        assert st.get_plan(model, reg, vertices=vertices).blend_planar is plan.blend_planar
        bd = plan.model.blend_dirs
        num_coeffs, num_verts = bd.shape[0], bd.shape[1] // 3
        planar = plan.blend_planar
        # Rows padded to a multiple of 16 vertices (aligned, vectorisable loads), zeros.
        assert planar.shape == (num_coeffs, 3, 16 * math.ceil(num_verts / 16))
        assert planar.is_contiguous() and not planar[:, :, num_verts:].any()
        assert torch.equal(planar[:, :, :num_verts],
                           bd.reshape(num_coeffs, num_verts, 3).permute(0, 2, 1))
        assert torch.equal(st.interleaved_blend_dirs(planar, num_verts), bd)
    assert st.get_plan(model, reg, vertices=True).blend_planar.shape[2] == 96


def _forward_backward(model, inputs, reg, pose2rot, precision=None):
    betas, pose, transl, camera = inputs
    outs = st.smpl_forward_triton(model, betas, pose, transl, pose2rot=pose2rot,
                                  return_verts=True, keypoint_regressor=reg, camera=camera,
                                  precision=precision)
    loss = sum((o * (i + 1.0)).sum() for i, o in enumerate(outs) if o is not None)
    return [o.detach() for o in outs if o is not None], torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize(
    "dtype,batch", [(torch.float32, 1), (torch.float32, 3), (torch.float32, 37), (torch.float64, 3)]
)
def test_many_vertex_splits_odd_batches_deterministic(monkeypatch, dtype, batch):
    # GPU block sizes with 8 "SMs": 16 vertex splits of the coefficient kernel at B <= 64,
    # some owning two of the 19 vertex tiles (fp32), so the register accumulators run over
    # several tiles; the fp32 coefficient kernel over two KC blocks (BLOCK_KC = 128 < 217);
    # the skeleton backward sums the partials in several BLOCK_S steps. Outputs start NaN
    # (autouse fixture). Against the float64 reference, and bitwise equal over two runs.
    # The interpreter runs programs one at a time, so this cannot show a race; the sums have
    # a fixed order by construction (each program stores its own partial row once, no
    # atomics), which the GPU tests check at B = 4096.
    num_verts = 300 if dtype == torch.float32 else 64
    monkeypatch.setattr(st, "USE_GPU_BLOCKS", True)
    monkeypatch.setattr(st, "_num_sms", lambda device: 8)
    use_dot = dtype == torch.float32
    cfg = st.backward_launches(batch, num_verts, use_dot, "tf32x3", st.INTERPRETED_GPU_ARCH, 8,
                               217)
    assert cfg["split_coef"] == 16 > st._kb.GPU_SKELETON_BWD["BLOCK_S"] + 1
    assert cfg["coef"][0][2] == (2 if use_dot else 1)
    model = random_model(num_verts, num_skin=3, dtype=dtype)
    reg = sparse_regressor(num_verts, dtype=dtype)
    inputs = random_inputs(batch, 10, dtype)
    tol = 2e-5 if use_dot else 1e-11
    compare(model, inputs, reg, True, True, val_tol=tol, grad_tol=tol)
    first = _forward_backward(model, inputs, reg, True)
    second = _forward_backward(model, inputs, reg, True)
    for a, b in zip(first[0] + list(first[1]), second[0] + list(second[1])):
        assert torch.equal(a, b)


def test_split_counts():
    # About two programs per SM, capped: at B = 1 the old 264 splits made the skeleton
    # backward add 264 partial rows one round trip at a time.
    num_splits = st._kf.num_splits
    assert num_splits(1, 6890, 64, 16, 132) == st._kf.MAX_SPLITS == 64
    assert num_splits(64, 6890, 8, 16, 132) == 33
    assert num_splits(4096, 6890, 64, 16, 132) == 5
    assert num_splits(1, 20, 16, 16, 132) == 2  # never more splits than vertex tiles
    assert num_splits(131071, 6890, 2, 8, 132) == 1


def test_gpu_report_floor_arithmetic():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_report.py"
    spec = importlib.util.spec_from_file_location("gpu_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    nbytes, flops = report.smpl_cost(4096, "forward")
    # blend_dirs once + the vertices; 2 * 217 * 20670 + 30 * 4 per vertex FLOPs per sample.
    assert nbytes == 217 * 20670 * 4 + 4096 * 20670 * 4
    assert flops == 4096 * (2 * 217 * 20670 + 120 * 6890)
    assert report.floor_ms(3e9, 1e9, 3e12, 1e12) == pytest.approx(1.0)
    table = report.format_table(["a", "b"], [[1, 0.12345]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |"]


def test_tf32_flag_runs_close():
    model = random_model(100, dtype=torch.float32)
    compare(
        model,
        random_inputs(2, 10, torch.float32),
        sparse_regressor(100, dtype=torch.float32),
        True,
        True,
        val_tol=5e-3,
        grad_tol=5e-3,
        tf32=True,
    )


# --------------------------------------------------------------------------- precision modes


def test_default_precision_selection():
    # fp32 on CUDA: split-precision TF32 tensor cores; fp64 never uses tl.dot.
    assert st.select_dot_precision(torch.float32, "cuda") == (True, "tf32x3")
    assert st.select_dot_precision(torch.float64, "cuda") == (False, "ieee")
    # The interpreter computes exact fp32 products whatever it is told: call it "ieee".
    assert st.select_dot_precision(torch.float32, "cpu") == (True, "ieee")
    for prec in ("ieee", "tf32", "tf32x3"):
        assert st.select_dot_precision(torch.float32, "cuda", prec) == (True, prec)
        assert st.select_dot_precision(torch.float64, "cuda", prec) == (False, "ieee")
    assert st.resolve_precision() is None
    assert st.resolve_precision(tf32=True) == "tf32"
    assert st.resolve_precision("tf32", tf32=True) == "tf32"
    with pytest.raises(ValueError, match="precision"):
        st.resolve_precision("tf32x3", tf32=True)
    with pytest.raises(ValueError, match="precision"):
        st.resolve_precision("fp16")
    # Every fp32 precision has block sizes for every GPU family.
    for prec in st.PRECISIONS:
        for arch in st._kf.GPU_ARCHS:
            assert (prec, arch) in st._kf.GPU_VERTEX_FWD
            assert (prec, arch) in st._kb.GPU_VERTEX_BWD_REL
            assert (prec, arch) in st._kb.GPU_VERTEX_BWD_COEF
    assert st._kf.gpu_arch((9, 0)) == 90 and st._kf.gpu_arch((8, 6)) == 80


@pytest.mark.parametrize("precision,arch", [("tf32x3", 90), ("tf32x3", 80), ("ieee", 80)])
def test_explicit_precision_runs(monkeypatch, precision, arch):
    # The constexpr paths of every fp32 precision, with the GPU block sizes of both families
    # (the interpreter computes exact products: the values must match at fp32 accuracy).
    monkeypatch.setattr(st, "USE_GPU_BLOCKS", True)
    monkeypatch.setattr(st, "INTERPRETED_GPU_ARCH", arch)
    model = random_model(100, num_skin=3, dtype=torch.float32)
    compare(
        model,
        random_inputs(3, 10, torch.float32),
        sparse_regressor(100, dtype=torch.float32),
        True,
        True,
        val_tol=2e-5,
        grad_tol=2e-5,
        precision=precision,
    )
    with pytest.raises(ValueError, match="precision"):
        st.smpl_forward_triton(
            model,
            *random_inputs(1, 10, torch.float32)[:3],
            pose2rot=True,
            return_verts=True,
            precision="bf16",
        )


def _tf32_round(x: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero."""
    return ((x.view(torch.int32) + 0x1000) & -0x2000).view(torch.float32)


def _tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    """What a TF32 MMA reads of an fp32 register: the top 19 bits."""
    return (x.view(torch.int32) & -0x2000).view(torch.float32)


def emulated_dot(a: torch.Tensor, b: torch.Tensor, precision: str, block_k: int) -> torch.Tensor:
    """(M, K) @ (K, N) in fp32 as Triton's tl.dot computes it on an NVIDIA GPU, K in blocks.

    "tf32x3" (Triton's F32DotTC pass): a = a_hi + a_lo with a_hi = tf32(a) (round to
    nearest), a_lo = a - a_hi (read truncated by the MMA); per block
    acc += a_hi b_hi + (a_lo b_hi + a_hi b_lo). Products of TF32 numbers are exact in fp32,
    so fp32 matmuls of the parts reproduce the MMAs up to the summation order.
    """
    acc = a.new_zeros(a.shape[0], b.shape[1])
    for k0 in range(0, a.shape[1], block_k):
        ak, bk = a[:, k0 : k0 + block_k], b[k0 : k0 + block_k]
        if precision == "ieee":
            acc = acc + ak @ bk
        elif precision == "tf32":
            acc = acc + _tf32_truncate(ak) @ _tf32_truncate(bk)
        else:
            a_hi, b_hi = _tf32_round(ak), _tf32_round(bk)
            a_lo, b_lo = _tf32_truncate(ak - a_hi), _tf32_truncate(bk - b_hi)
            acc = acc + (a_hi @ b_hi + (a_lo @ b_hi + a_hi @ b_lo))
    return acc


def test_tf32_emulation_rounds_like_the_hardware():
    x = torch.tensor([1.0 + 2.0**-11, 1.0 + 2.0**-10 + 2.0**-11, -(1.0 + 2.0**-11), 3.0])
    assert _tf32_round(x).tolist() == [1.0 + 2.0**-10, 1.0 + 2.0**-9, -(1.0 + 2.0**-10), 3.0]
    assert _tf32_truncate(x).tolist() == [1.0, 1.0 + 2.0**-10, -1.0, 3.0]
    a, b = torch.randn(16, 300), torch.randn(300, 8)
    exact = a.double() @ b.double()
    err = {p: (emulated_dot(a, b, p, 32).double() - exact).abs().max() for p in st.PRECISIONS}
    assert err["tf32x3"] < 4 * err["ieee"] + 1e-6 < err["tf32"] / 50


def test_tf32x3_vertex_error_on_the_procedural_body():
    """MEASURES the default fp32 CUDA path's blend-GEMM error (tf32x3, emulated on CPU) on
    the procedural body: vertex error vs float64 within the 2e-5 m budget. Plain TF32 is
    measured too (it is over budget: the reason it is opt-in)."""
    from hmr_fast import SMPL

    with warnings.catch_warnings():  # the stand-in warning fires once per process
        warnings.simplefilter("ignore", UserWarning)
        m64 = SMPL(dtype=torch.float64).model_tensors()
    m32 = ref.ModelTensors(
        *[t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in m64]
    )
    batch = 64
    betas = torch.randn(batch, m64.joint_shapedirs.shape[2], dtype=torch.float64) * 1.5
    pose = torch.randn(batch, 72, dtype=torch.float64) * 0.6
    rot64 = ref.rodrigues(pose.reshape(-1, 3)).reshape(batch, 24, 3, 3)
    verts64, _, _ = ref.smpl_forward(m64, betas, rot64)
    coeffs64 = torch.cat([betas, ref.pose_feature(rot64)], dim=1)
    offsets64 = coeffs64 @ m64.blend_dirs

    rot = ref.rodrigues(pose.float().reshape(-1, 3)).reshape(batch, 24, 3, 3)
    coeffs = torch.cat([betas.float(), ref.pose_feature(rot)], dim=1)
    joints = ref.rest_joints(betas.float(), m32.joint_template, m32.joint_shapedirs)
    _, rel = ref.forward_kinematics(rot, joints, m32.parents)
    block_k = st._kf.GPU_VERTEX_FWD["tf32x3", 90]["BLOCK_K"]
    vertex_err, gemm_err = {}, {}
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # plain fp32 CPU matmuls for the parts
    try:
        for prec in st.PRECISIONS:
            offsets = emulated_dot(coeffs, m32.blend_dirs, prec, block_k)
            gemm_err[prec] = (offsets.double() - offsets64).abs().max().item()
            v_posed = offsets.view(batch, -1, 3) + m32.v_template
            verts = ref.skin(v_posed, rel, m32.skin_idx, m32.skin_w)
            vertex_err[prec] = (verts.double() - verts64).norm(dim=-1).max().item()
    finally:
        torch.set_float32_matmul_precision(previous)
    print(f"emulated max vertex error (m): {vertex_err}; blend GEMM alone: {gemm_err}")
    assert vertex_err["tf32x3"] <= 2e-5, vertex_err
    # Split TF32 is as good as fp32 FMAs here (the rest of the fp32 pipeline dominates).
    assert gemm_err["tf32x3"] <= 4 * gemm_err["ieee"] + 1e-7, gemm_err
    assert vertex_err["tf32"] > 2e-5, vertex_err  # the emulation does round


@pytest.mark.parametrize("case", ["sum_loss", "projected_keypoints_only", "no_transl_camera"])
def test_expanded_and_missing_gradients(monkeypatch, case):
    # The backward reads output gradients through their strides (a `.sum()` loss hands it
    # all-stride-0 ones) and reads missing ones as zeros; forward without translation or
    # camera uses flags, not zero tensors. GPU blocks: several vertex splits, so the
    # coefficient partials' first-tile store (no zero fill) is exercised too.
    monkeypatch.setattr(st, "USE_GPU_BLOCKS", True)
    model = random_model(100, num_skin=3, dtype=torch.float32)
    reg = sparse_regressor(100, dtype=torch.float32)
    betas, pose, transl, camera = random_inputs(5, 10, torch.float32)
    if case == "no_transl_camera":
        transl = camera = None
    outs = st.smpl_forward_triton(model, betas, pose, transl, pose2rot=True, return_verts=True,
                                  keypoint_regressor=reg, camera=camera)
    leaves = [t for t in (betas, pose, transl, camera) if t is not None]
    m64 = to(model, torch.float64)
    leaves64 = [t.detach().double().requires_grad_(True) for t in leaves]
    b64, p64 = leaves64[:2]
    t64 = leaves64[2] if transl is not None else torch.zeros(5, 3, dtype=torch.float64)
    c64 = leaves64[3] if camera is not None else None
    refs = reference_outputs(m64, b64, p64, t64, c64 if c64 is not None else t64 * 0,
                             reg.double(), True)
    if case == "no_transl_camera":
        assert outs[3] is None and outs[4] is None
        loss, loss_ref = outs[0].sum() + outs[1].sum(), refs[0].sum() + refs[1].sum()
    elif case == "sum_loss":
        loss = sum(o.sum() for o in outs)
        loss_ref = sum(r.sum() for r in refs)
    else:
        w = torch.randn(refs[4].shape, dtype=torch.float64, device=DEVICE)
        loss, loss_ref = (outs[4] * w.float()).sum(), (refs[4] * w).sum()
    for o, r in zip(outs, refs):
        if o is not None:
            assert (o.double() - r).abs().max().item() <= 2e-5 * max(1.0, r.abs().max().item())
    grads = torch.autograd.grad(loss, leaves)
    grads_ref = torch.autograd.grad(loss_ref, leaves64)
    for g, gr in zip(grads, grads_ref):
        assert torch.isfinite(g).all()
        err = (g.double() - gr).abs().max().item()
        assert err <= 2e-5 * max(1.0, gr.abs().max().item()), (case, err)


@pytest.mark.parametrize("batch,num_verts", [(131071, 6890), (110000, 97), (4096, 6890)])
def test_launch_grids_stay_within_cuda_limits(batch, num_verts):
    # CUDA: grid axis 0 up to 2**31 - 1 programs, axes 1 and 2 up to 65535. Sample tiles go
    # on axis 0: with them on axis 1 the fp64 A-gradient kernel (2-sample tiles) would need
    # 65536 programs there from B = 131071. Every GPU block table, both families.
    cases = [(True, p) for p in st.PRECISIONS] + [(False, "ieee")]
    for use_dot, prec in cases:
        for arch in st._kf.GPU_ARCHS:
            fwd = st.forward_launches(batch, num_verts, use_dot, prec, arch)
            bwd = st.backward_launches(batch, num_verts, use_dot, prec, arch, num_sms=132,
                                       num_coeffs=217)
            launches = [(f"fwd_{k}", v) for k, v in fwd.items()]
            launches += [(f"bwd_{k}", v) for k, v in bwd.items() if isinstance(v, tuple)]
            assert len(launches) == 7
            for name, (grid, cfg) in launches:
                assert 1 <= grid[0] < 2**31, (name, grid)
                assert all(1 <= g <= 65535 for g in grid[1:]), (name, use_dot, prec, grid)
                # Axis 0 covers every sample, in tiles of BLOCK_B.
                assert grid[0] * cfg["BLOCK_B"] >= batch > (grid[0] - 1) * cfg["BLOCK_B"]
    # The old layout (sample tiles on axis 1) would not have fit at this size.
    rel = st._kb.GPU_VERTEX_BWD_REL_F64
    assert batch < 131071 or st.triton_cdiv(batch, rel["BLOCK_B"]) > 65535


def _pose_parts(pose: torch.Tensor, pose2rot: bool, layout: str):
    """(global_orient, body_pose) from one (B, J*S) pose, in a layout a client might pass."""
    batch = pose.shape[0]
    size = 3 if pose2rot else 9
    flat = pose.detach().reshape(batch, 24 * size)
    root, body = flat[:, :size].clone(), flat[:, size:].clone()
    if layout == "expanded_root":  # one orientation for the batch: row stride 0
        root = root[:1].expand(batch, size)
    elif layout == "views":  # slices of one tensor: row stride J*S, body offset by S
        whole = torch.cat([root, body], 1)
        root, body = whole[:, :size], whole[:, size:]
    elif layout == "strided_columns":  # columns not contiguous: copied before the launch
        body = body.t().contiguous().t()
    return root, body


@pytest.mark.parametrize("pose2rot", [True, False], ids=["axis-angle", "rotmat"])
@pytest.mark.parametrize("layout", ["separate", "expanded_root", "views", "strided_columns"])
@pytest.mark.parametrize("return_verts", [True, False], ids=["full", "keypoint"])
def test_pose_pair_is_read_in_place(pose2rot, layout, return_verts):
    # The layer passes global_orient and body_pose as a pair: the kernels read both through
    # their row strides. Values and each part's gradient against the float64 reference of
    # the concatenated pose.
    model = random_model(200, dtype=torch.float64)
    reg = sparse_regressor(200)
    betas, pose, transl, camera = [t.detach() for t in random_inputs(5, 10, torch.float64,
                                                                     pose2rot)]
    root, body = _pose_parts(pose, pose2rot, layout)
    leaves = [t.requires_grad_(True) for t in (betas, transl, camera)]
    root_leaf = (root[:1].detach().clone() if layout == "expanded_root" else root.detach()
                 ).requires_grad_(True)
    body_leaf = body.detach().clone().requires_grad_(True)
    if layout == "strided_columns":
        body_leaf = body_leaf.t().contiguous().t().detach().requires_grad_(True)
        assert body_leaf.stride(1) != 1
    root_in = root_leaf.expand(5, root.shape[1]) if layout == "expanded_root" else root_leaf
    outs = st.smpl_forward_triton(model, leaves[0], (root_in, body_leaf), leaves[1],
                                  pose2rot=pose2rot, return_verts=return_verts,
                                  keypoint_regressor=reg, camera=leaves[2])
    full = torch.cat([root_in, body_leaf], 1).detach().requires_grad_(True)
    refs = reference_outputs(to(model, torch.float64), leaves[0], full.reshape(pose.shape),
                             leaves[1], leaves[2], reg, pose2rot)
    pairs = [(o, r) for o, r in zip(outs, refs) if o is not None]
    weights = [torch.randn(r.shape, dtype=torch.float64) for _, r in pairs]
    for o, r in pairs:
        assert (o - r).abs().max().item() <= 1e-11 * max(1.0, r.abs().max().item())
    grads = torch.autograd.grad(sum((o * w).sum() for (o, _), w in zip(pairs, weights)),
                                [*leaves, root_leaf, body_leaf])
    refs_g = torch.autograd.grad(sum((r * w).sum() for (_, r), w in zip(pairs, weights)),
                                 [*leaves, full])
    size = root.shape[1]
    expected = [*refs_g[:3], refs_g[3][:, :size], refs_g[3][:, size:]]
    if layout == "expanded_root":
        expected[3] = expected[3].sum(0, keepdim=True)
    for name, g, gr in zip(("betas", "transl", "camera", "global_orient", "body_pose"), grads,
                           expected):
        assert g.shape == gr.shape and torch.isfinite(g).all(), name
        assert (g - gr).abs().max().item() <= 1e-10 * max(1.0, gr.abs().max().item()), name


def test_pose_pair_gradients_are_separate_dense_tensors():
    # Each part's gradient is its own dense tensor, so a leaf's .grad takes it as it is (no
    # copy); and first- and second-order gradients pass gradcheck / gradgradcheck.
    model = random_model(40, num_betas=4, dtype=torch.float64)
    reg = sparse_regressor(40)
    betas, pose, transl, camera = random_inputs(2, 4, torch.float64)
    root = pose.detach()[:, :3].clone().requires_grad_(True)
    body = pose.detach()[:, 3:].clone().requires_grad_(True)

    def fn(betas, root, body, transl, camera):
        outs = st.smpl_forward_triton(model, betas, (root, body), transl, pose2rot=True,
                                      return_verts=True, keypoint_regressor=reg, camera=camera)
        return tuple(o for o in outs if o is not None)

    sum(o.sum() for o in fn(betas, root, body, transl, camera)).backward()
    assert root.grad.shape == (2, 3) and root.grad.is_contiguous()
    assert body.grad.shape == (2, 69) and body.grad.is_contiguous()
    inputs = (betas, root, body, transl, camera)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4,
                                        fast_mode=True)


def test_pose_pair_bad_parts_raise_clear_errors():
    model = random_model(40, num_betas=4, dtype=torch.float64)
    betas, pose, transl, _ = [t.detach() for t in random_inputs(2, 4, torch.float64)]
    kw = dict(pose2rot=True, return_verts=True)
    with pytest.raises(ValueError, match=r"pose\[1\] \(body_pose\): expected shape \(2, 69\)"):
        st.smpl_forward_triton(model, betas, (pose[:, :3], pose[:, 3:60]), transl, **kw)
    with pytest.raises(ValueError, match="a pair"):
        st.smpl_forward_triton(model, betas, (pose[:, :3],), transl, **kw)
    with pytest.raises(TypeError, match=r"pose\[0\] \(global_orient\): expected dtype"):
        st.smpl_forward_triton(model, betas, (pose[:, :3].float(), pose[:, 3:]), transl, **kw)
