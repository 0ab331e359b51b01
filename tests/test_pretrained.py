"""load_pretrained: SPIN's released checkpoint format (random weights built here from the
format's facts), hmr-fast's own checkpoints, and refusals of anything else.

The SPIN oracle below is written independently of hmr_fast.models.spin: torchvision's
ResNet-50 run as a whole network with its classifier removed, the regressor as explicit
matmuls, and the 6-D conversion by Gram-Schmidt with torch.linalg.cross.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import hmr_fast
from hmr_fast import SMPLLayer
from hmr_fast.ops.reference import rodrigues
from hmr_fast.ops.rotations import rot6d_to_rotmat, rotmat_to_axis_angle


def spin_state_dict(seed: int, with_buffers: bool = True) -> dict:
    """A state_dict with SPIN's keys and shapes, random values (BatchNorm statistics too, so
    eval-mode normalisation is exercised)."""
    g = torch.Generator().manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bias")) or (k.endswith("weight") and v.dim() == 1):
            state[k] = 0.1 * torch.randn(v.shape, generator=g) + (k.endswith("weight") * 1.0)
        elif v.is_floating_point():
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    dims = {"fc1": (1024, 2048 + 157), "fc2": (1024, 1024), "decpose": (144, 1024),
            "decshape": (10, 1024), "deccam": (3, 1024)}
    # Random BatchNorm statistics let the features grow to ~1e4; fc1 is scaled down so the
    # regressed parameters stay at realistic magnitudes (|betas|, |cam| of order 1).
    gains = {"fc1": 3e-5, "fc2": 0.3, "decpose": 0.3, "decshape": 0.3, "deccam": 0.1}
    for name, (out_f, in_f) in dims.items():
        state[f"{name}.weight"] = torch.randn(out_f, in_f, generator=g) / in_f ** 0.5 * gains[
            name]
        state[f"{name}.bias"] = torch.randn(out_f, generator=g) * 0.01
    if with_buffers:
        state.update(mean_buffers(seed + 1))
    return state


def save_spin_checkpoint(path, seed: int):
    """A SPIN-format checkpoint file ({'model': state_dict}) with `spin_state_dict(seed)`."""
    torch.save({"model": spin_state_dict(seed)}, path)
    return path


def mean_buffers(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    # Identity in SPIN's row-major 6-D reading for the body joints; the root turned pi about x
    # (columns (1, 0, 0) and (0, -1, 0)), upright in image coordinates as SPIN's mean pose is.
    pose6 = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(24)
    pose6[:6] = torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0])
    return {"init_pose": (pose6 + 0.1 * torch.randn(144, generator=g))[None],
            "init_shape": 0.5 * torch.randn(1, 10, generator=g),
            "init_cam": torch.tensor([[0.9, 0.0, 0.0]]) + 0.05 * torch.randn(1, 3, generator=g)}


def gram_schmidt(x6: torch.Tensor) -> torch.Tensor:
    """(N, 6) in SPIN's row-major 3x2 reading -> (N, 3, 3)."""
    m = x6.reshape(-1, 3, 2)
    a1, a2 = m[:, :, 0], m[:, :, 1]
    b1 = a1 / a1.norm(dim=1, keepdim=True)
    u2 = a2 - (b1 * a2).sum(1, keepdim=True) * b1
    b2 = u2 / u2.norm(dim=1, keepdim=True)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2)], dim=2)


def spin_oracle(state: dict, images: torch.Tensor):
    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
    net.eval()
    feats = net(images)
    pose, shape, cam = (state["init_pose"].expand(len(images), -1),
                        state["init_shape"].expand(len(images), -1),
                        state["init_cam"].expand(len(images), -1))

    def lin(name, x):
        return x @ state[f"{name}.weight"].t() + state[f"{name}.bias"]

    for _ in range(3):
        h = lin("fc2", lin("fc1", torch.cat([feats, pose, shape, cam], 1)))
        pose, shape, cam = pose + lin("decpose", h), shape + lin("decshape", h), cam + lin(
            "deccam", h)
    return gram_schmidt(pose.reshape(-1, 6)).reshape(len(images), 24, 3, 3), shape, cam


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", ["wrapped", "bare", "dataparallel"])
def test_spin_checkpoint_matches_the_independent_oracle(tmp_path, images, layout):
    state = spin_state_dict(seed=10)
    saved = {"wrapped": {"model": state, "optimizer": {}, "epoch": 3, "total_step_count": 9},
             "bare": state,
             "dataparallel": {"model": {f"module.{k}": v for k, v in state.items()}}}[layout]
    torch.save(saved, tmp_path / "model_checkpoint.pt")
    model = hmr_fast.load_pretrained(tmp_path / "model_checkpoint.pt")
    assert not model.training
    assert model.crop_padding == "zero"  # SPIN's crops are black beyond the image
    with torch.no_grad():
        out = model(images)
        rotmats, betas, cam = spin_oracle(state, images)
    torch.testing.assert_close(out["rotmats"], rotmats, atol=2e-5, rtol=0)
    torch.testing.assert_close(out["betas"], betas, atol=2e-5, rtol=0)
    torch.testing.assert_close(out["cam"], cam, atol=2e-5, rtol=0)
    # The mesh is the SMPL layer's for those parameters (rotation-matrix input).
    body = SMPLLayer()(betas=out["betas"], body_pose=out["rotmats"][:, 1:],
                       global_orient=out["rotmats"][:, :1])
    torch.testing.assert_close(out["vertices"], body.vertices)
    assert out["joints"].shape == (2, 45, 3)


def test_spin_mean_params_file_when_buffers_are_absent(tmp_path, images):
    state = spin_state_dict(seed=20, with_buffers=False)
    torch.save({"model": state}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="mean_params"):
        hmr_fast.load_pretrained(tmp_path / "ckpt.pt")
    means = mean_buffers(21)
    np.savez(tmp_path / "smpl_mean_params.npz", pose=means["init_pose"][0].numpy(),
             shape=means["init_shape"][0].numpy(), cam=means["init_cam"][0].numpy())
    model = hmr_fast.load_pretrained(tmp_path / "ckpt.pt",
                                     mean_params=tmp_path / "smpl_mean_params.npz")
    with torch.no_grad():
        out = model(images)
        rotmats, _, cam = spin_oracle({**state, **means}, images)
    torch.testing.assert_close(out["rotmats"], rotmats, atol=2e-5, rtol=0)
    torch.testing.assert_close(out["cam"], cam, atol=2e-5, rtol=0)


def test_unknown_formats_are_refused_with_the_keys_found(tmp_path):
    torch.save({"state_dict": {"backbone.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"unrecognised format.*state_dict.*supported"):
        hmr_fast.load_pretrained(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        hmr_fast.load_pretrained(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        hmr_fast.load_pretrained(tmp_path / "missing.pt")


def test_wrong_image_size_is_a_clear_error(tmp_path):
    save_spin_checkpoint(tmp_path / "c.pt", seed=30)
    model = hmr_fast.load_pretrained(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"images: expected \(B, 3, 224, 224\)"):
        model(torch.zeros(1, 3, 128, 128))


def test_rot6d_is_gram_schmidt_and_a_rotation():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    r = rot6d_to_rotmat(x)
    torch.testing.assert_close(r, gram_schmidt(x), atol=1e-12, rtol=0)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(r.transpose(1, 2) @ r, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(500, dtype=torch.float64))


def exp_so3(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices as the matrix exponential of the cross-product matrix (an oracle
    independent of Rodrigues' formula and of smplx's 1e-8 shift)."""
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    return torch.linalg.matrix_exp(skew)


@pytest.mark.parametrize("max_angle", [1e-9, 1e-3, 1.0, np.pi - 1e-6, np.pi])
def test_rotmat_to_axis_angle_inverts_rodrigues(max_angle):
    g = torch.Generator().manual_seed(5)
    axis = torch.nn.functional.normalize(torch.randn(300, 3, generator=g, dtype=torch.float64),
                                         dim=1)
    angle = torch.rand(300, 1, generator=g, dtype=torch.float64) * max_angle
    angle[0] = max_angle
    rot = exp_so3(axis * angle)
    back = rotmat_to_axis_angle(rot)
    # Same rotation (the axis may flip sign at exactly pi), angle within [0, pi].
    torch.testing.assert_close(exp_so3(back), rot, atol=1e-9, rtol=0)
    torch.testing.assert_close(back.norm(dim=1), angle[:, 0], atol=1e-7, rtol=0)
    assert (back.norm(dim=1) <= np.pi + 1e-9).all()


def test_hmr_fast_checkpoint_loads_with_its_own_crop_size(tmp_path):
    """hmr-fast's own format, recognised by its contents (a 'config' entry), any name."""
    from hmr_fast.train.build import build_model
    from hmr_fast.train.config import TrainConfig

    cfg = TrainConfig(backbone="resnet18", image_size=64)
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu")).eval()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 7},
               tmp_path / "weights.bin")
    loaded = hmr_fast.load_pretrained(tmp_path / "weights.bin")
    assert loaded.image_size == 64 and not loaded.training
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, ref = loaded(images), model(images, return_verts=True)
    torch.testing.assert_close(out["rotmats"], rodrigues(ref["pose"].reshape(-1, 3)).reshape(
        2, 24, 3, 3))
    for key, ref_key in (("betas", "betas"), ("cam", "cam"), ("vertices", "vertices"),
                         ("joints", "joints_3d")):
        torch.testing.assert_close(out[key], ref[ref_key])
