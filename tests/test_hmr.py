"""HMR regressor: encoder registry, Theta_0, iterative error feedback, SMPL wiring, errors.

Small crops (64 px) and resnet18 keep it fast; the keypoints are checked against a separate
full-mesh SMPL forward (axis-angle path, all vertices) and hand-written projection.
"""

import math

import numpy as np
import pytest
import torch
import torchvision
from scipy.spatial.transform import Rotation
from torch import nn

from hmr_fast.body import constants
from hmr_fast.models import encoder as enc
from hmr_fast.models.hmr import HMR, build_smpl, initial_theta, split_theta
from tests.model_factory import random_model_data, write_npz

S = 64


@pytest.fixture(scope="module")
def smpl():
    return build_smpl("torch")


@pytest.fixture(scope="module")
def model(smpl):
    torch.manual_seed(0)
    return HMR(backbone="resnet18", smpl=smpl, image_size=S).eval()


def test_split_theta_layout():
    theta = torch.arange(2 * 85, dtype=torch.float32).reshape(2, 85)
    cam, pose, betas = split_theta(theta)
    assert torch.equal(cam, theta[:, 0:3])
    assert torch.equal(pose, theta[:, 3:75])
    assert torch.equal(betas, theta[:, 75:85])
    with pytest.raises(ValueError, match=r"theta.*\(B, 85\).*\(2, 84\)"):
        split_theta(theta[:, :84])


def test_initial_theta_defaults():
    theta = initial_theta()
    assert theta.shape == (85,)
    torch.testing.assert_close(theta[:3], torch.tensor([0.9, 0.0, 0.0]))
    torch.testing.assert_close(theta[3:6], torch.tensor([math.pi, 0.0, 0.0]))
    assert torch.equal(theta[6:], torch.zeros(79))


def test_initial_theta_from_mocap(tmp_path):
    rng = np.random.default_rng(1)
    pose = rng.normal(size=(7, 72))
    shape = rng.normal(size=(7, 10))
    path = tmp_path / "mocap.npz"
    np.savez(path, pose=pose, shape=shape)
    theta = initial_theta(path)
    # The root comes from the constants, not from the mocap mean.
    torch.testing.assert_close(theta[3:6], torch.tensor([math.pi, 0.0, 0.0]))
    expected_body = sum(pose[i, 3:] for i in range(7)) / 7
    expected_shape = sum(shape[i] for i in range(7)) / 7
    np.testing.assert_allclose(theta[6:75].numpy(), expected_body, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(theta[75:].numpy(), expected_shape, rtol=1e-6, atol=1e-7)


def test_initial_theta_bad_mocap(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        initial_theta(tmp_path / "nope.npz")
    path = tmp_path / "bad.npz"
    np.savez(path, poses=np.zeros((2, 72)), shape=np.zeros((2, 10)))
    with pytest.raises(ValueError, match="'pose'"):
        initial_theta(path)


def test_forward_outputs_and_shapes(model):
    b = 3
    images = torch.randn(b, 3, S, S)
    with torch.no_grad():
        out = model(images)
    assert len(out["thetas"]) == 3 and all(t.shape == (b, 85) for t in out["thetas"])
    shapes = {
        "cam": (b, 3),
        "pose": (b, 72),
        "betas": (b, 10),
        "rotmats": (b, 24, 3, 3),
        "keypoints_3d": (b, 19, 3),
        "keypoints_2d": (b, 19, 2),
        "joints_3d": (b, 45, 3),
    }
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
        assert torch.isfinite(out[key]).all(), key
    assert "vertices" not in out
    # Everything comes from the final Theta.
    cam, pose, betas = split_theta(out["thetas"][-1])
    assert torch.equal(out["cam"], cam) and torch.equal(out["pose"], pose)
    assert torch.equal(out["betas"], betas)


def test_iterative_error_feedback_matches_manual_loop(model):
    images = torch.randn(2, 3, S, S)
    with torch.no_grad():
        out = model(images)
        phi = model.encoder(images)
        assert phi.shape == (2, 512)
        theta = model.init_theta.expand(2, -1)
        for t in range(3):
            # Shared weights: the same regressor every iteration, on [phi, Theta_t].
            theta = theta + model.regressor(torch.cat([phi, theta], 1))
            torch.testing.assert_close(out["thetas"][t], theta)


def test_regressor_structure_and_small_last_layer(model):
    linears = [m for m in model.regressor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (512 + 85, 1024),
        (1024, 1024),
        (1024, 85),
    ]
    assert [m.p for m in model.regressor if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    bound = 0.1 * math.sqrt(6.0 / (1024 + 85))  # the original's variance scaling 0.01, fan-avg
    fresh = HMR(backbone="resnet18", smpl=model.smpl, image_size=S).regressor[-1]
    assert fresh.weight.abs().max() <= bound and fresh.weight.abs().max() > bound / 2
    assert torch.equal(fresh.bias, torch.zeros(85))
    assert isinstance(model.init_theta, nn.Parameter) and model.init_theta.requires_grad


def test_regressor_dropout_is_configurable(model):
    p = float(torch.rand(()) * 0.9)
    custom = HMR(backbone="resnet18", smpl=model.smpl, image_size=S, dropout=p)
    assert [m.p for m in custom.regressor if isinstance(m, nn.Dropout)] == [p, p]
    # In train mode the regressor is deterministic without dropout and random with 0.5.
    features = torch.randn(2, 512)
    still = HMR(backbone="resnet18", smpl=model.smpl, image_size=S, dropout=0.0).train()
    noisy = HMR(backbone="resnet18", smpl=model.smpl, image_size=S).train()
    with torch.no_grad():
        assert torch.equal(still.regress(features)[-1], still.regress(features)[-1])
        assert not torch.equal(noisy.regress(features)[-1], noisy.regress(features)[-1])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout must be in"):
            HMR(backbone="resnet18", smpl=model.smpl, image_size=S, dropout=bad)


def test_keypoints_match_full_mesh_smpl_and_projection(model, smpl):
    images = torch.randn(2, 3, S, S)
    with torch.no_grad():
        out = model(images, return_verts=True)
    assert out["vertices"].shape == (2, 6890, 3)
    pose, betas, cam = out["pose"], out["betas"], out["cam"]
    # Rotation matrices equal scipy's for the final pose.
    expected_rot = Rotation.from_rotvec(pose.reshape(-1, 3).double().numpy()).as_matrix()
    np.testing.assert_allclose(
        out["rotmats"].reshape(-1, 3, 3).numpy(), expected_rot, rtol=1e-5, atol=1e-5
    )
    # A separate full-mesh forward from the axis-angles; keypoints = regressor @ vertices.
    with torch.no_grad():
        full = smpl(
            betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], return_verts=True
        )
    regressor = smpl.hmr_keypoint_regressor()
    kp3d = torch.einsum("kv,bvc->bkc", regressor, full.vertices)
    torch.testing.assert_close(out["vertices"], full.vertices, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["keypoints_3d"], kp3d, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["joints_3d"], full.joints, rtol=1e-4, atol=1e-5)
    kp2d = cam[:, None, :1] * (kp3d[..., :2] + cam[:, None, 1:])
    torch.testing.assert_close(out["keypoints_2d"], kp2d, rtol=1e-4, atol=1e-5)


def test_gradients_reach_encoder_and_mean_theta(smpl):
    torch.manual_seed(1)
    model = HMR(backbone="resnet18", smpl=smpl, image_size=S, num_iters=2).train()
    out = model(torch.randn(2, 3, S, S))
    assert len(out["thetas"]) == 2
    out["keypoints_2d"].square().sum().backward()
    for name in ("init_theta", "regressor.0.weight", "encoder.net.conv1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "shape", [(2, 3, S, S + 1), (2, 1, S, S), (3, S, S), (2, 3, 2 * S, 2 * S)], ids=str
)
def test_bad_images_raise(model, shape):
    with pytest.raises(ValueError, match=rf"images.*\(B, 3, {S}, {S}\).*{tuple(shape)}"):
        model(torch.zeros(shape))


def test_custom_keypoint_regressor_array_and_path(tmp_path, smpl):
    rng = np.random.default_rng(2)
    reg = rng.random((19, 6890)) * (rng.random((19, 6890)) < 0.001)
    reg /= reg.sum(1, keepdims=True)
    path = tmp_path / "reg.npy"
    np.save(path, reg)
    torch.manual_seed(3)
    images = torch.randn(1, 3, S, S)
    for given in (reg, str(path)):
        model = HMR(
            backbone="resnet18", image_size=S, keypoint_regressor=given, smpl_backend="torch"
        ).eval()
        with torch.no_grad():
            out = model(images, return_verts=True)
        expected = torch.einsum("kv,bvc->bkc", torch.from_numpy(reg).float(), out["vertices"])
        torch.testing.assert_close(out["keypoints_3d"], expected, rtol=1e-4, atol=1e-5)


def test_model_file_without_cocoplus_asks_for_regressor(tmp_path, monkeypatch):
    data = random_model_data(seed=0)
    del data["cocoplus_regressor"]
    monkeypatch.setenv("HMR_FAST_SMPL_DIR", str(write_npz(data, tmp_path / "SMPL_NEUTRAL.npz")))
    with pytest.raises(ValueError, match=r"cocoplus_regressor.*\.npy"):
        HMR(backbone="resnet18", image_size=S, smpl_backend="torch")


def test_state_dict_round_trip_without_duplicates(model, smpl):
    state = model.state_dict()
    other = HMR(backbone="resnet18", smpl=smpl, image_size=S)
    other.load_state_dict(state)
    images = torch.randn(1, 3, S, S)
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(images)["thetas"][-1], model(images)["thetas"][-1])
    # The SMPL module is registered once: no duplicate copies of its buffers.
    ptrs = [t.data_ptr() for k, t in state.items() if k.startswith("smpl.")]
    assert len(ptrs) == len(set(ptrs))
    assert not any(k.startswith("smpl.") and k.count("smpl.") > 1 for k in state)


# ---------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_build_encoder_feature_dims(name, dim):
    module, feature_dim = enc.build_encoder(name)
    assert feature_dim == dim
    with torch.no_grad():
        assert module.eval()(torch.randn(1, 3, S, S)).shape == (1, dim)


def test_build_encoder_errors(tmp_path):
    with pytest.raises(ValueError, match="resnet50"):
        enc.build_encoder("vgg16")
    missing = tmp_path / "missing_weights.pth"
    with pytest.raises(FileNotFoundError, match="missing_weights.pth"):
        enc.build_encoder("resnet18", pretrained=missing)
    bad = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), bad)
    with pytest.raises(ValueError, match="resnet18"):
        enc.build_encoder("resnet18", pretrained=bad)


def test_pretrained_weights_load_from_local_file(tmp_path):
    torch.manual_seed(4)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    module, _ = enc.build_encoder("resnet18", pretrained=path)
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(module.net.state_dict()[key], value), key
    images = torch.randn(2, 3, S, S)
    reference.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(images), reference.eval()(images))


def test_registered_encoder_plugs_into_hmr(monkeypatch, smpl):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    monkeypatch.setitem(enc._ENCODERS, "tiny", (lambda pretrained: Tiny(), 8))
    model = HMR(backbone="tiny", smpl=smpl, image_size=32).eval()
    assert model.regressor[0].in_features == 8 + 85
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out["keypoints_2d"].shape == (2, len(constants.HMR19_FROM_J24), 2)


def test_autocast_keeps_theta_and_geometry_in_fp32(model):
    images = torch.randn(2, 3, S, S)
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images)
    for key in ("cam", "pose", "betas", "rotmats", "keypoints_3d", "keypoints_2d", "joints_3d"):
        assert out[key].dtype == torch.float32, key
    assert all(t.dtype == torch.float32 for t in out["thetas"])
    # bf16 features and MLP, but Theta_0 + small updates survive (not rounded to bf16's grid).
    torch.testing.assert_close(out["cam"], reference["cam"], rtol=0.02, atol=2e-3)
    bf16_grid = out["cam"][:, 0].to(torch.bfloat16).float()
    assert not torch.equal(out["cam"][:, 0], bf16_grid)


def test_pretrained_from_the_hub_cache_and_clear_errors(tmp_path, monkeypatch):
    """--pretrained hub finds torchvision's file in torch's hub cache (nothing downloaded);
    another backbone's weights are a clear error naming the file and a mismatched shape."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*nothing is downloaded"):
        enc.build_encoder("resnet18", "hub")
    reference = torchvision.models.resnet18(weights=None)
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    encoder, dim = enc.build_encoder("resnet18", "hub")
    assert dim == 512
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(encoder.net.state_dict()[key], value), key
    wrong = dict(reference.state_dict())
    wrong["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong\.pth.*conv1\.weight: file \(64, 3, 3, 3\)"):
        enc.build_encoder("resnet18", tmp_path / "wrong.pth")
