"""The drop-in SMPL layer against smplx on the same (random, SMPL-format) model files."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import smplx
import torch
from smplx.lbs import batch_rodrigues

import hmr_fast
from hmr_fast import SMPL, SMPLLayer
from tests.model_factory import random_model_data, write_chumpy_pkl, write_clean_pkl, write_npz

TOL_FP32 = 2e-5  # metres, the project's parity budget


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    print(f"torch seed {seed}")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("smpl")
    data10 = random_model_data(num_betas=10)
    data300 = random_model_data(num_betas=300, max_weights=3)
    return {
        "pkl": write_clean_pkl(data10, root / "clean.pkl"),
        "chumpy": write_chumpy_pkl(data10, root / "chumpy.pkl"),
        "npz": write_npz(data10, root / "model.npz"),
        "pkl300": write_clean_pkl(data300, root / "clean300.pkl"),
        "data10": data10,
    }


@pytest.fixture(scope="module")
def pair(files):
    return smplx.SMPL(str(files["pkl"])), SMPL(str(files["pkl"]))


def random_axis_angle(batch: int, joints: int, max_angle: float = 2 * math.pi):
    direction = torch.nn.functional.normalize(torch.randn(batch, joints, 3), dim=-1)
    angle = torch.rand(batch, joints, 1) * max_angle
    return (direction * angle).reshape(batch, joints * 3)


def assert_close(a, b, tol, what):
    err = (a - b).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def compare(ref, ours, tol=TOL_FP32, **inputs):
    out_ref, out = ref(**inputs), ours(**inputs)
    assert_close(out.vertices, out_ref.vertices, tol, "vertices")
    assert_close(out.joints, out_ref.joints, tol, "joints")
    assert out.joints.shape == out_ref.joints.shape
    assert out.vertices.is_contiguous()  # smplx callers may .view() it
    return out_ref, out


@pytest.mark.parametrize("batch", [1, 3, 37])
def test_random_poses_up_to_two_pi(pair, batch):
    ref, ours = pair
    compare(ref, ours, body_pose=random_axis_angle(batch, 23), global_orient=random_axis_angle(
        batch, 1), betas=torch.randn(batch, 10) * 2, transl=torch.randn(batch, 3))


def test_zero_and_tiny_angles(pair):
    ref, ours = pair
    zero = torch.zeros(2, 69)
    compare(ref, ours, body_pose=zero, global_orient=torch.zeros(2, 3), betas=torch.randn(2, 10))
    tiny = 1e-8 * torch.rand(2, 69)
    compare(ref, ours, body_pose=tiny, global_orient=torch.full((2, 3), 1e-8),
            betas=torch.randn(2, 10))
    # θ = -1e-8 cancels smplx's shift exactly and smplx returns NaN there; we must not.
    out = ours(body_pose=torch.full((2, 69), -1e-8), global_orient=torch.full((2, 3), -1e-8))
    identity = ours(body_pose=torch.zeros(2, 69), global_orient=torch.zeros(2, 3))
    assert_close(out.vertices, identity.vertices, 1e-6, "vertices at theta=-1e-8")


def test_near_pi_and_two_pi(pair):
    ref, ours = pair
    direction = torch.nn.functional.normalize(torch.randn(4, 24, 3), dim=-1)
    angles = torch.tensor([math.pi - 1e-4, math.pi, 2 * math.pi - 1e-4, 2 * math.pi])
    pose = (direction * angles[:, None, None]).reshape(4, 72)
    compare(ref, ours, body_pose=pose[:, 3:], global_orient=pose[:, :3])


def test_pose2rot_false(pair):
    ref, ours = pair
    batch = 5
    body = batch_rodrigues(random_axis_angle(batch, 23).view(-1, 3)).view(batch, 23, 3, 3)
    orient = batch_rodrigues(random_axis_angle(batch, 1).view(-1, 3)).view(batch, 1, 3, 3)
    compare(ref, ours, body_pose=body, global_orient=orient, betas=torch.randn(batch, 10),
            pose2rot=False)


def test_betas_broadcast_and_transl(pair):
    ref, ours = pair
    betas = torch.randn(1, 10)
    out_ref, out = compare(ref, ours, body_pose=random_axis_angle(6, 23),
                           global_orient=random_axis_angle(6, 1), betas=betas,
                           transl=torch.randn(6, 3))
    assert out.betas.shape == (6, 10)
    assert torch.equal(out.betas[3], betas[0])


def test_module_parameters_are_used(files):
    ref = smplx.SMPL(str(files["pkl"]), batch_size=2)
    ours = SMPL(str(files["pkl"]), batch_size=2)
    with torch.no_grad():
        for name in ("betas", "body_pose", "global_orient", "transl"):
            value = torch.randn_like(getattr(ref, name))
            getattr(ref, name).copy_(value)
            getattr(ours, name).copy_(value)
    out_ref, out = ref(), ours()
    assert_close(out.vertices, out_ref.vertices, TOL_FP32, "vertices")


def test_three_hundred_betas(files):
    ref = smplx.SMPL(str(files["pkl300"]), num_betas=300)
    ours = SMPL(str(files["pkl300"]), num_betas=300)
    assert ours.num_betas == 300 and ours.skin_idx.shape[1] == 3
    compare(ref, ours, body_pose=random_axis_angle(3, 23), global_orient=random_axis_angle(3, 1),
            betas=torch.randn(3, 300))


def test_gradients_match_smplx(pair):
    ref, ours = pair
    batch = 4
    inputs = {"body_pose": random_axis_angle(batch, 23, math.pi),
              "global_orient": random_axis_angle(batch, 1), "betas": torch.randn(batch, 10),
              "transl": torch.randn(batch, 3)}
    w_v, w_j = torch.randn(batch, 6890, 3), torch.randn(batch, 45, 3)
    grads = []
    for model in (ref, ours):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = model(**leaves)
        ((out.vertices * w_v).sum() + (out.joints * w_j).sum()).backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for name in inputs:
        g_ref, g = grads[0][name], grads[1][name]
        assert torch.isfinite(g).all(), name
        rel = (g - g_ref).abs().max() / g_ref.abs().max()
        assert rel < 1e-4, f"d/d{name}: relative error {rel:.3g}"


def float64_reference(data: dict, body_pose, global_orient, betas, transl):
    """smplx's own `lbs` function on the file's float64 arrays (smplx.SMPL itself rounds the
    constants through float32), plus smplx's 21 vertex joints."""
    dense = {k: torch.as_tensor(np.asarray(v.todense()) if hasattr(v, "todense") else v)
             for k, v in data.items() if k != "f"}
    parents = torch.as_tensor(hmr_fast.body.constants.PARENTS)
    num_betas = betas.shape[1]
    verts, joints = smplx.lbs.lbs(
        betas, torch.cat([global_orient, body_pose], 1), dense["v_template"],
        dense["shapedirs"][..., :num_betas], dense["posedirs"].reshape(-1, 207).T,
        dense["J_regressor"], parents, dense["weights"])
    ids = list(hmr_fast.body.constants.VERTEX_JOINT_IDS)
    joints = torch.cat([joints, verts[:, ids]], 1)
    return verts + transl[:, None], joints + transl[:, None]


def test_float64_matches_float64_reference(files):
    ours = SMPL(str(files["pkl"]), dtype=torch.float64)
    pose = random_axis_angle(3, 24).double()
    inputs = dict(body_pose=pose[:, 3:], global_orient=pose[:, :3],
                  betas=torch.randn(3, 10, dtype=torch.float64),
                  transl=torch.randn(3, 3, dtype=torch.float64))
    verts, joints = float64_reference(files["data10"], **inputs)
    out = ours(**inputs)
    assert_close(out.vertices, verts, 1e-12, "vertices")
    assert_close(out.joints, joints, 1e-12, "joints")


def test_gradcheck_float64(files):
    data = random_model_data(num_betas=4, num_vertices=6890)
    ours = SMPL(data_struct=smplx.utils.Struct(**data), num_betas=4, dtype=torch.float64)

    def fn(body_pose, global_orient, betas, transl):
        out = ours(body_pose=body_pose, global_orient=global_orient, betas=betas, transl=transl)
        return out.vertices[:, ::97], out.joints

    args = (random_axis_angle(2, 23).double().requires_grad_(),
            random_axis_angle(2, 1).double().requires_grad_(),
            torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)


def test_zero_rotation_has_finite_gradients(pair):
    _, ours = pair
    for pose2rot in (True, False):
        if pose2rot:
            body, orient = torch.zeros(2, 69), torch.zeros(2, 3)
        else:
            body, orient = torch.eye(3).repeat(2, 23, 1, 1), torch.eye(3).repeat(2, 1, 1, 1)
        body.requires_grad_(True)
        orient.requires_grad_(True)
        betas = torch.zeros(2, 10, requires_grad=True)
        out = ours(body_pose=body, global_orient=orient, betas=betas, pose2rot=pose2rot)
        (out.vertices.sum() + out.joints.sum()).backward()
        for t in (out.vertices, out.joints, body.grad, orient.grad, betas.grad):
            assert torch.isfinite(t).all()
        assert body.grad.abs().sum() > 0


def test_zero_rotation_gradient_is_the_derivative(pair):
    """At θ = 0 the gradient must be the true derivative (finite differences in fp64)."""
    _, ours32 = pair
    ours = SMPL(ours32.model_path, dtype=torch.float64)
    w = torch.randn(1, 6890, 3, dtype=torch.float64)
    body = torch.zeros(1, 69, dtype=torch.float64, requires_grad=True)
    (ours(body_pose=body).vertices * w).sum().backward()
    eps = 1e-6
    for idx in random.sample(range(69), 5):
        step = torch.zeros(1, 69, dtype=torch.float64)
        step[0, idx] = eps
        plus = (ours(body_pose=step).vertices * w).sum()
        minus = (ours(body_pose=-step).vertices * w).sum()
        numeric = (plus - minus) / (2 * eps)
        assert abs(numeric - body.grad[0, idx]) < 1e-5 * max(1.0, abs(numeric))


def test_keypoint_mode_matches_full_forward(files):
    ours = SMPL(str(files["pkl"]), keypoint_regressor="hmr")
    pose = random_axis_angle(3, 24)
    inputs = dict(body_pose=pose[:, 3:], global_orient=pose[:, :3], betas=torch.randn(3, 10),
                  transl=torch.randn(3, 3))
    full, light = ours(**inputs), ours(**inputs, return_verts=False)
    assert light.vertices is None
    assert_close(light.joints, full.joints, 1e-6, "joints")
    assert light.keypoints.shape == (3, 19, 3)
    assert_close(light.keypoints, full.keypoints, 1e-6, "keypoints")
    expected = torch.einsum("kv,bvc->bkc", ours.hmr_keypoint_regressor(), full.vertices)
    assert_close(full.keypoints, expected, 1e-5, "keypoints vs regressor")


def test_layer_takes_rotation_matrices(files):
    ref = smplx.SMPLLayer(str(files["pkl"]))
    ours = SMPLLayer(str(files["pkl"]))
    body = batch_rodrigues(random_axis_angle(2, 23).view(-1, 3)).view(2, 23, 3, 3)
    compare(ref, ours, body_pose=body, betas=torch.randn(2, 10), transl=torch.randn(2, 3))
    assert not list(ours.parameters())


def test_joint_mapper_and_vertex_ids(files):
    pick = [0, 15, 24, 44]
    ref = smplx.SMPL(str(files["pkl"]), joint_mapper=lambda j: j[:, pick])
    ours = SMPL(str(files["pkl"]), joint_mapper=lambda j: j[:, pick])
    compare(ref, ours, body_pose=random_axis_angle(2, 23), global_orient=torch.randn(2, 3),
            transl=torch.randn(2, 3))
    for flags in ({"use_hands": False}, {"use_feet_keypoints": False}):
        compare(smplx.SMPL(str(files["pkl"]), **flags), SMPL(str(files["pkl"]), **flags),
                body_pose=random_axis_angle(1, 23))


@pytest.mark.parametrize("kind", ["chumpy", "npz"])
def test_file_formats_agree(files, kind):
    ref = smplx.SMPL(str(files["pkl"]))
    ours = SMPL(str(files[kind]))
    compare(ref, ours, body_pose=random_axis_angle(2, 23), global_orient=torch.randn(2, 3),
            betas=torch.randn(2, 10))
    assert "cocoplus_regressor" in ours.extra_regressors
    expected = np.asarray(files["data10"]["cocoplus_regressor"].todense())
    assert np.allclose(ours.extra_regressors["cocoplus_regressor"].numpy(), expected, atol=1e-7)


def test_directory_env_and_create(files, tmp_path, monkeypatch):
    write_clean_pkl(files["data10"], tmp_path / "SMPL_MALE.pkl")
    (tmp_path / "smpl").mkdir()
    write_npz(files["data10"], tmp_path / "smpl" / "SMPL_FEMALE.npz")
    assert SMPL(str(tmp_path), gender="male").model_path.endswith("SMPL_MALE.pkl")
    assert hmr_fast.create(str(tmp_path), gender="female").model_path.endswith("FEMALE.npz")
    monkeypatch.setenv("HMR_FAST_SMPL_DIR", str(tmp_path))
    assert SMPL(gender="male").model_path.endswith("SMPL_MALE.pkl")


def test_state_moves_with_to(pair):
    _, ours = pair
    model = SMPL(ours.model_path).double()
    out = model(body_pose=random_axis_angle(1, 23).double())
    assert out.vertices.dtype == torch.float64


def test_default_is_the_procedural_body_and_matches_smplx(tmp_path, monkeypatch):
    from hmr_fast.body.procedural import write_procedural_model

    monkeypatch.delenv("HMR_FAST_SMPL_DIR", raising=False)
    path = write_procedural_model(tmp_path / "SMPL_NEUTRAL.pkl") or tmp_path / "SMPL_NEUTRAL.pkl"
    ours = SMPL()
    assert ours.model_path is None and ours.faces.shape == (13776, 3)
    assert ours.skin_idx.shape[1] <= 4
    ref = smplx.SMPL(str(path))
    compare(ref, ours, body_pose=random_axis_angle(3, 23, math.pi),
            global_orient=random_axis_angle(3, 1), betas=torch.randn(3, 10))
