"""The fused CPU skeleton stage (ops/skeleton_cpu.py) against the float64 torch oracle, and the
layer's no-grad path that runs through it."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import smplx
import torch

from hmr_fast import SMPL
from hmr_fast.body import constants
from hmr_fast.ops import reference as ref
from hmr_fast.ops import skeleton_cpu
from tests.model_factory import random_model_data, write_clean_pkl

pytestmark = pytest.mark.skipif(not skeleton_cpu.available(), reason="numba is not installed")

SMPL_PARENTS = tuple(constants.PARENTS)
# Relative to max(1, |expected|): the kernels compute in float64, so float32 outputs carry one
# rounding (~6e-8) and float64 ones a few ulps.
TOL = {torch.float32: 1e-6, torch.float64: 1e-10}
TOL_LAYER = {torch.float32: 2e-5, torch.float64: 1e-10}  # metres, the project's parity budget


@pytest.fixture
def gen():
    seed = random.randrange(2**31)
    print(f"generator seed {seed}")
    return torch.Generator().manual_seed(seed)


def random_axis_angle(gen, batch, joints, max_angle=2 * math.pi, dtype=torch.float32):
    """(B, joints * 3), directions uniform, angles uniform in [0, max_angle]."""
    direction = torch.nn.functional.normalize(
        torch.randn(batch, joints, 3, generator=gen, dtype=torch.float64), dim=-1
    )
    angle = torch.rand(batch, joints, 1, generator=gen, dtype=torch.float64) * max_angle
    return (direction * angle).reshape(batch, joints * 3).to(dtype)


def random_tree(gen, num_joints):
    """A random kinematic tree: each joint's parent is some earlier joint."""
    parents = [-1]
    for j in range(1, num_joints):
        parents.append(int(torch.randint(0, j, (1,), generator=gen)))
    return tuple(parents)


def random_constants(gen, num_joints, num_betas, dtype):
    """joint_template (J, 3) and joint_shapedirs (J, 3, L) at SMPL-like scales."""
    template = torch.randn(num_joints, 3, generator=gen, dtype=dtype) * 0.3
    shapedirs = torch.randn(num_joints, 3, num_betas, generator=gen, dtype=dtype) * 0.02
    return template, shapedirs


def oracle(betas, pose, template, shapedirs, parents, pose2rot):
    """The float64 torch composition: (rot_mats, coeffs, posed_joints, transforms)."""
    batch = betas.shape[0]
    betas = betas.double()
    if pose2rot:
        rot = ref.rodrigues(pose.double().reshape(-1, 3)).view(batch, -1, 3, 3)
    else:
        rot = pose.double()
    coeffs = torch.cat([betas.new_ones(batch, 1), betas, ref.pose_feature(rot)], dim=1)
    joints = ref.rest_joints(betas, template.double(), shapedirs.double())
    posed, rel = ref.forward_kinematics(rot, joints, parents)
    return skeleton_cpu.Skeleton(rot, coeffs, posed, rel.permute(1, 2, 3, 0))


def launch_nan_filled(betas, pose, template, shapedirs, parents, pose2rot):
    """The kernels on NaN-filled output buffers, so that an unwritten element shows."""
    batch, num_betas = betas.shape
    num_joints = len(parents)

    def nan(*shape):
        return torch.full(shape, float("nan"), dtype=betas.dtype)

    out = skeleton_cpu.Skeleton(
        nan(batch, num_joints, 3, 3) if pose2rot else pose,
        nan(batch, 1 + num_betas + 9 * (num_joints - 1)),
        nan(batch, num_joints, 3),
        nan(num_joints, 3, 4, batch),
    )
    common = (
        betas.numpy(),
        template.numpy(),
        shapedirs.numpy(),
        np.asarray(parents, dtype=np.int64),
        out.coeffs.numpy(),
        out.posed_joints.numpy(),
        out.transforms.numpy(),
    )
    if pose2rot:
        aa = pose.reshape(batch, num_joints, 3).contiguous().numpy()
        rot = out.rot_mats.numpy()
    else:
        aa = np.empty((0, num_joints, 3), dtype=betas.numpy().dtype)
        rot = pose.contiguous().numpy()
    eps, small = ref._SMPLX_ANGLE_EPS, ref._SMALL_ANGLE_SQ
    skeleton_cpu._kernels()(aa, eps, small, rot, *common)
    return out


def assert_skeleton_close(got, want, tol):
    for name in skeleton_cpu.Skeleton._fields:
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert not a.isnan().any(), f"{name}: unwritten elements"
        scale = max(1.0, b.abs().max().item())
        err = ((a.double() - b).abs().max() / scale).item()
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g}"


def make_case(gen, kind, batch, dtype, parents=SMPL_PARENTS, num_betas=10):
    """(betas, pose, template, shapedirs) for a pose kind."""
    num_joints = len(parents)
    template, shapedirs = random_constants(gen, num_joints, num_betas, dtype)
    betas = torch.randn(batch, num_betas, generator=gen, dtype=dtype) * 2
    if kind == "random":
        pose = random_axis_angle(gen, batch, num_joints, dtype=dtype)
    elif kind == "small":  # around the Taylor branch's switch, |θ|² = 1e-6
        pose = random_axis_angle(gen, batch, num_joints, max_angle=2e-3, dtype=dtype)
    elif kind == "zero":
        pose = torch.zeros(batch, num_joints * 3, dtype=dtype)
    elif kind == "tiny":
        # ±1e-8: in float64, -1e-8 cancels smplx's shift to an exactly zero norm.
        sign = torch.randint(0, 2, (batch, num_joints * 3), generator=gen) * 2 - 1
        pose = sign.to(dtype) * 1e-8
    elif kind == "matrices":
        # General matrices, not rotations: nothing may assume orthonormality (or Rᵀ = R⁻¹).
        pose = torch.randn(batch, num_joints, 3, 3, generator=gen, dtype=dtype) * 0.6
    else:
        raise ValueError(kind)
    return betas, pose, template, shapedirs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 37, 64])
@pytest.mark.parametrize("kind", ["random", "small", "zero", "tiny", "matrices"])
def test_kernels_write_every_element_and_match_float64(gen, dtype, batch, kind):
    betas, pose, template, shapedirs = make_case(gen, kind, batch, dtype)
    pose2rot = kind != "matrices"
    got = launch_nan_filled(betas, pose, template, shapedirs, SMPL_PARENTS, pose2rot)
    want = oracle(betas, pose, template, shapedirs, SMPL_PARENTS, pose2rot)
    assert_skeleton_close(got, want, TOL[dtype])
    if kind == "zero":
        eye = torch.eye(3, dtype=dtype).expand(batch, 24, 3, 3)
        assert torch.equal(got.rot_mats, eye)
        assert torch.equal(got.coeffs[:, 11:], torch.zeros(batch, 207, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotation_matrix_input_matches_axis_angle_input(gen, dtype):
    """pose2rot=False with Rodrigues' own rotations gives the axis-angle results."""
    betas, pose, template, shapedirs = make_case(gen, "random", 5, dtype)
    from_aa = launch_nan_filled(betas, pose, template, shapedirs, SMPL_PARENTS, True)
    from_rot = launch_nan_filled(betas, from_aa.rot_mats, template, shapedirs, SMPL_PARENTS, False)
    want = oracle(betas, from_aa.rot_mats, template, shapedirs, SMPL_PARENTS, False)
    assert_skeleton_close(from_rot, want, TOL[dtype])
    for name in ("posed_joints", "transforms"):
        a, b = getattr(from_aa, name), getattr(from_rot, name)
        assert (a - b).abs().max() <= 10 * TOL[dtype], name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pose2rot", [True, False])
def test_random_tree(gen, dtype, pose2rot):
    """Any tree with parents[j] < j: not SMPL's 24 joints, not its order."""
    num_joints = int(torch.randint(2, 40, (1,), generator=gen))
    parents = random_tree(gen, num_joints)
    print(f"parents {parents}")
    kind = "random" if pose2rot else "matrices"
    betas, pose, template, shapedirs = make_case(gen, kind, 37, dtype, parents, num_betas=7)
    got = launch_nan_filled(betas, pose, template, shapedirs, parents, pose2rot)
    want = oracle(betas, pose, template, shapedirs, parents, pose2rot)
    assert_skeleton_close(got, want, TOL[dtype])


@pytest.mark.parametrize("pose2rot", [True, False])
def test_skeleton_forward_takes_any_layout(gen, pose2rot):
    """The wrapper: non-contiguous and broadcast inputs, flat or per-joint axis-angle."""
    kind = "random" if pose2rot else "matrices"
    betas, pose, template, shapedirs = make_case(gen, kind, 6, torch.float32)
    want = oracle(betas, pose, template, shapedirs, SMPL_PARENTS, pose2rot)
    broadcast = betas[:1].expand(6, -1)
    want_broadcast = oracle(broadcast, pose, template, shapedirs, SMPL_PARENTS, pose2rot)
    strided = torch.cat([pose, pose], dim=1)[:, : pose.shape[1]]
    assert not strided.is_contiguous()
    for p, b, expected in (
        (pose, betas, want),
        (strided, betas, want),
        (pose, broadcast, want_broadcast),
    ):
        got = skeleton_cpu.skeleton_forward(b, p, template, shapedirs, SMPL_PARENTS, pose2rot)
        assert got.transforms.is_contiguous() and got.coeffs.is_contiguous()
        assert_skeleton_close(got, expected, TOL[torch.float32])
    if pose2rot:
        per_joint = pose.view(6, 24, 3)
        got = skeleton_cpu.skeleton_forward(
            betas, per_joint, template, shapedirs, SMPL_PARENTS, True
        )
        assert_skeleton_close(got, want, TOL[torch.float32])


def test_bad_tree_is_refused_before_launch(gen):
    betas, pose, template, shapedirs = make_case(
        gen, "random", 2, torch.float32, parents=(-1, 0, 5, 1)
    )
    with pytest.raises(ValueError, match="parent of joint 2"):
        skeleton_cpu.skeleton_forward(betas, pose, template, shapedirs, (-1, 0, 5, 1), True)


@pytest.mark.parametrize("dense", [True, False])
def test_blend_planar_matches_blend_shapes(gen, dense):
    num_vertices, num_betas, batch = 501, 10, 7
    v_template = torch.randn(num_vertices, 3, generator=gen)
    blend_dirs = torch.randn(num_betas + 207, 3 * num_vertices, generator=gen) * 0.01
    weight = ref.dense_blend_weight(v_template, blend_dirs) if dense else None
    betas = torch.randn(batch, num_betas, generator=gen)
    pose_feat = torch.randn(batch, 207, generator=gen)
    augmented = torch.cat([torch.ones(batch, 1), betas, pose_feat], dim=1)
    got = ref.blend_planar(augmented, v_template, blend_dirs, weight)
    assert got.shape == (3 * num_vertices, batch) and got.is_contiguous()
    want = ref.blend_shapes(
        betas.double(), pose_feat.double(), v_template.double(), blend_dirs.double()
    )
    err = (got.view(num_vertices, 3, batch).permute(2, 0, 1).double() - want).abs().max()
    assert err < 1e-5, f"max abs error {err:.3g}"


# ------------------------------------------------------------------------------------ layer
class Spy:
    """Counts `skeleton_forward` calls: proves which path a forward took."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = skeleton_cpu.skeleton_forward

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(skeleton_cpu, "skeleton_forward", counted)


@pytest.fixture(scope="module")
def procedural():
    """The embedded procedural body in both dtypes, with HMR's keypoint regressor."""
    return {
        dtype: SMPL(dtype=dtype, keypoint_regressor="hmr")
        for dtype in (torch.float32, torch.float64)
    }


def layer_inputs(gen, batch, dtype, pose2rot):
    pose = random_axis_angle(gen, batch, 24, dtype=dtype)
    if not pose2rot:
        pose = ref.rodrigues(pose.reshape(-1, 3)).view(batch, 24, 3, 3)
    return {
        "global_orient": pose[:, :3] if pose2rot else pose[:, :1],
        "body_pose": pose[:, 3:] if pose2rot else pose[:, 1:],
        "betas": torch.randn(batch, 10, generator=gen, dtype=dtype) * 2,
        "transl": torch.randn(batch, 3, generator=gen, dtype=dtype),
        "camera": torch.rand(batch, 3, generator=gen, dtype=dtype) + 0.5,
        "pose2rot": pose2rot,
    }


OUTPUTS = ("vertices", "joints", "keypoints", "projected_joints", "projected_keypoints")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 37, 64])
@pytest.mark.parametrize("pose2rot", [True, False])
@pytest.mark.parametrize("return_verts", [True, False])
def test_no_grad_layer_matches_the_autograd_path(
    procedural, monkeypatch, gen, dtype, batch, pose2rot, return_verts
):
    model = procedural[dtype]
    inputs = layer_inputs(gen, batch, dtype, pose2rot)
    spy = Spy(monkeypatch)
    with torch.no_grad():
        fast = model(**inputs, return_verts=return_verts)
    assert spy.calls == 1, "the no-grad forward did not take the fused path"
    leaves = {
        k: (v.clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in inputs.items()
    }
    slow = model(**leaves, return_verts=return_verts)
    assert spy.calls == 1, "a forward with gradients took the fused path"
    assert slow.joints.grad_fn is not None
    for name in OUTPUTS:
        a, b = getattr(fast, name), getattr(slow, name)
        if name == "vertices" and not return_verts:
            assert a is None and b is None
            continue
        assert a.shape == b.shape and not a.requires_grad
        err = (a - b.detach()).abs().max().item()
        assert err <= TOL_LAYER[dtype], f"{name}: max abs error {err:.3g}"
    if return_verts:
        assert fast.vertices.is_contiguous()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    data = random_model_data(num_betas=10)
    return write_clean_pkl(data, tmp_path_factory.mktemp("skeleton") / "model.pkl")


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("pose2rot", [True, False])
def test_no_grad_layer_matches_smplx(model_file, monkeypatch, gen, batch, pose2rot):
    ours, theirs = SMPL(str(model_file)), smplx.SMPL(str(model_file))
    inputs = layer_inputs(gen, batch, torch.float32, pose2rot)
    del inputs["camera"]
    spy = Spy(monkeypatch)
    with torch.no_grad():
        got, want = ours(**inputs), theirs(**inputs)
    assert spy.calls == 1
    for name in ("vertices", "joints"):
        err = (getattr(got, name) - getattr(want, name)).abs().max().item()
        assert err <= TOL_LAYER[torch.float32], f"{name}: max abs error {err:.3g}"


def test_gradients_keep_the_torch_path(procedural, monkeypatch, gen):
    """With gradients wanted, the forward records a graph and its gradients do not change when
    the fused path is switched off entirely; without, it takes the fused path."""
    model = procedural[torch.float64]
    inputs = layer_inputs(gen, 3, torch.float64, True)
    del inputs["camera"]
    weights = torch.randn(3, model.num_vertices, 3, generator=gen, dtype=torch.float64)

    def gradients(requires):
        leaves = {
            k: (v.clone().requires_grad_(k in requires) if torch.is_tensor(v) else v)
            for k, v in inputs.items()
        }
        out = model(**leaves)
        assert out.vertices.grad_fn is not None
        (out.vertices * weights).sum().backward()
        return [leaves[k].grad for k in requires]

    spy = Spy(monkeypatch)
    for requires in (["betas", "body_pose", "global_orient", "transl"], ["transl"], ["betas"]):
        got = gradients(requires)
        with monkeypatch.context() as patched:
            patched.setattr(skeleton_cpu, "usable", lambda *tensors: False)
            want = gradients(requires)
        for name, a, b in zip(requires, got, want):
            assert torch.equal(a, b), name
    assert spy.calls == 0
    # Module parameters that require grad keep the torch path too.
    out = model()
    assert out.vertices.grad_fn is not None and spy.calls == 0
    # Grad mode on, but nothing to differentiate: the fused path, and no graph.
    plain = model(**{k: (v.detach() if torch.is_tensor(v) else v) for k, v in inputs.items()})
    assert spy.calls == 1 and plain.vertices.grad_fn is None


def test_fused_path_off_in_traced_code():
    """`usable` is False while torch.compile traces (the numba call cannot be traced)."""
    seen = []

    def probe(x):
        seen.append(skeleton_cpu.usable(x))
        return x + 1

    torch._dynamo.reset()
    torch.compile(probe, backend="eager", fullgraph=True)(torch.zeros(2))
    torch._dynamo.reset()
    assert seen == [False] and skeleton_cpu.usable(torch.zeros(2))
    assert not skeleton_cpu.usable(torch.zeros(2, dtype=torch.float16))
    assert not skeleton_cpu.usable(torch.zeros(2), torch.zeros(2, dtype=torch.float64))


# ----------------------------------------------------------------------------- input checks
def test_finite_check_survives_an_overflowing_sum(model_file):
    """The one-pass finiteness check overflows on huge finite inputs; the per-argument pass
    must then clear them, and still name a non-finite argument."""
    model = SMPL(str(model_file))
    huge = torch.full((2, 3), 3e38)
    model(transl=huge)  # finite: no error
    pose = torch.zeros(2, 69)
    pose[1, 5] = float("nan")
    with pytest.raises(ValueError, match="body_pose: contains NaN or inf"):
        model(transl=huge, body_pose=pose)
    with pytest.raises(ValueError, match="transl: contains NaN or inf"):
        model(transl=torch.tensor([[float("inf"), -float("inf"), 0.0]]))
