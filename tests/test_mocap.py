"""Mocap loading (mosh / AMASS layouts) and the synthetic pose sampler's joint limits."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hmr_fast.body.constants import JOINT_NAMES
from hmr_fast.data.mocap import MocapDataset
from hmr_fast.data.synth_mocap import main as synth_mocap_main
from hmr_fast.data.synth_mocap import sample_poses
from tests import seeding


def _rot(pose, name):
    j = JOINT_NAMES.index(name)
    return Rotation.from_rotvec(pose[:, 3 * j : 3 * j + 3].astype(np.float64))


def test_knees_and_elbows_bend_one_way():
    rng = seeding.rng()
    pose = sample_poses(3000, rng)
    assert pose.shape == (3000, 72) and pose.dtype == np.float32
    assert np.isfinite(pose).all()
    assert not pose[:, :3].any()  # global orientation left to the caller
    down, left, right = np.array([0, -1.0, 0]), np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])
    for knee in ("left_knee", "right_knee"):
        shank = _rot(pose, knee).apply(down)
        assert (shank[:, 2] <= 1e-6).all()  # the foot never swings forward of the knee
        assert (shank[:, 0] ** 2 < 1e-10).all()  # a hinge: no sideways component
        assert (shank[:, 2] < -0.5).mean() > 0.1  # and it does bend, often
    for elbow, bone in (("left_elbow", left), ("right_elbow", right)):
        fore = _rot(pose, elbow).apply(bone)
        assert (fore[:, 2] >= -1e-6).all()  # the forearm bends to the front only
        assert (fore[:, 1] ** 2 < 1e-10).all()
        assert (fore[:, 2] > 0.5).mean() > 0.1
    # no joint turns near pi (a wrap-around would be implausible); hands are never posed
    angles = np.linalg.norm(pose.reshape(-1, 24, 3), axis=-1)
    assert angles.max() < 2.8
    assert not pose[:, 3 * 22 :].any()
    # left/right statistics are mirror images (hip flexion means match)
    lh = _rot(pose, "left_hip").apply(down)[:, 2].mean()
    rh = _rot(pose, "right_hip").apply(down)[:, 2].mean()
    assert abs(lh - rh) < 0.05 and lh > 0.1  # thighs swing forward on average
    # arms mostly hang: the upper arm points down more often than up
    upper = _rot(pose, "left_shoulder").apply(left)
    assert (upper[:, 1] < -0.5).mean() > 0.4


def test_deterministic():
    a = sample_poses(10, np.random.default_rng(3))
    b = sample_poses(10, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        sample_poses(-1, seeding.rng())


def test_spread_scales_the_noise_around_the_activity_postures():
    seed = int(seeding.rng().integers(1 << 31))
    wide = sample_poses(2000, np.random.default_rng(seed), spread=0.2)
    narrow = sample_poses(2000, np.random.default_rng(seed), spread=0.1)
    still = sample_poses(2000, np.random.default_rng(seed), spread=0.0)
    # Same draws, less noise: the same activities, closer to their postures.
    knee = JOINT_NAMES.index("left_knee")
    flex = [np.linalg.norm(p[:, 3 * knee : 3 * knee + 3], axis=1) for p in (wide, narrow, still)]
    # With no noise every sample is one of the five activity postures (or its mirror image).
    assert len(np.unique(still.round(5), axis=0)) <= 10
    spread_of = [np.abs(f - flex[2]).mean() for f in flex[:2]]
    assert spread_of[0] > 1.5 * spread_of[1] > 0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="spread"):
            sample_poses(3, seeding.rng(), spread=bad)
    assert synth_mocap_main(["--out", "never-written.npz", "--n", "3", "--spread", "2"]) == 2


def test_synth_mocap_cli_and_dataset(tmp_path):
    out = tmp_path / "mocap.npz"
    assert synth_mocap_main(["--out", str(out), "--n", "50", "--seed", "1"]) == 0
    narrow = tmp_path / "narrow.npz"
    args = ["--out", str(narrow), "--n", "50", "--seed", "1", "--spread", "0.1"]
    assert synth_mocap_main(args) == 0
    with np.load(out) as d, np.load(narrow) as e:
        np.testing.assert_array_equal(
            e["pose"], sample_poses(50, np.random.default_rng(1), spread=0.1)
        )
        assert not np.array_equal(d["pose"], e["pose"])
    with np.load(out) as d:
        assert d["pose"].shape == (50, 72) and d["shape"].shape == (50, 10)
        shape = d["shape"]
    assert abs(shape.mean()) < 0.3 and 0.7 < shape.std() < 1.3
    ds = MocapDataset(out)
    assert len(ds) == 50
    item = ds[7]
    with np.load(out) as d:
        np.testing.assert_array_equal(item["pose"].numpy(), d["pose"][7])
        np.testing.assert_array_equal(item["betas"].numpy(), d["shape"][7])
    assert item["pose"].dtype == torch.float32


def test_amass_layout_and_bad_rows(tmp_path):
    rng = seeding.rng()
    poses = rng.normal(size=(6, 156))
    betas = rng.normal(size=16)
    np.savez(tmp_path / "amass.npz", poses=poses, betas=betas, trans=np.zeros((6, 3)))
    mosh = {"pose": rng.normal(size=(4, 72)), "shape": rng.normal(size=(4, 10))}
    mosh["pose"][2, 5] = np.nan
    np.savez(tmp_path / "mosh.npz", **mosh)
    with pytest.warns(UserWarning, match="dropped 1"):
        ds = MocapDataset([tmp_path / "amass.npz", tmp_path / "mosh.npz"])
    assert len(ds) == 9 and ds.num_dropped == 1
    np.testing.assert_allclose(ds[4]["pose"].numpy(), poses[4, :72], rtol=1e-6)
    np.testing.assert_allclose(ds[4]["betas"].numpy(), betas[:10], rtol=1e-6)
    np.testing.assert_allclose(ds[8]["pose"].numpy(), mosh["pose"][3], rtol=1e-6)
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    assert batch["pose"].shape == (3, 72) and batch["betas"].shape == (3, 10)


def test_bad_file(tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="pose"):
        MocapDataset(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", pose=np.zeros((3, 60)), shape=np.zeros((3, 10)))
    with pytest.raises(ValueError, match="72"):
        MocapDataset(tmp_path / "y.npz")
