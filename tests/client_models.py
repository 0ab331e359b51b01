"""Small imitations of how real projects build on `smplx.SMPL`, written as factories over the
base class so the very same client code runs on smplx and on hmr_fast.

They follow the public code of SPIN (nkolot/SPIN, models/smpl.py), mmhuman3d
(mmhuman3d/models/body_models/smpl.py) and 4D-Humans (hmr2/models/smpl_wrapper.py) in the
points that matter to the base class: what they call on it, which buffers they add, how they
call `super().forward` and what they do with its output. Their data files (extra regressors,
joint maps) are replaced by seeded random stand-ins.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from smplx.lbs import vertices2joints
from smplx.utils import SMPLOutput

NUM_VERTICES = 6890


def random_regressor(rows: int, seed: int, per_row: int = 8) -> np.ndarray:
    """A dense (rows, 6890) float32 regressor: each row averages a few random vertices."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((rows, NUM_VERTICES))
    for r in range(rows):
        cols = rng.choice(NUM_VERTICES, size=per_row, replace=False)
        reg[r, cols] = rng.random(per_row) + 0.1
    return (reg / reg.sum(1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------------- SPIN
SPIN_NUM_EXTRA = 9  # rows of SPIN's J_regressor_extra.npy
SPIN_NUM_OUT = 49  # 25 OpenPose + 24 ground-truth joints


def spin_joint_map(seed: int = 3) -> list[int]:
    """Stand-in for SPIN's `[JOINT_MAP[i] for i in JOINT_NAMES]`: 49 ids into the 45 smplx
    joints followed by the 9 extra ones (with repeats, as SPIN's map has)."""
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.integers(0, 45 + SPIN_NUM_EXTRA, size=SPIN_NUM_OUT)]


def make_spin_smpl(base):
    """SPIN's `SMPL(_SMPL)`: an extra joint regressor buffer, `get_skin=True` passed down,
    extra joints regressed from the vertices, concatenated and re-indexed."""

    class SpinSMPL(base):
        def __init__(self, *args, joint_regressor_extra=None, **kwargs):
            super().__init__(*args, **kwargs)
            J_regressor_extra = np.load(joint_regressor_extra)
            self.register_buffer("J_regressor_extra",
                                 torch.tensor(J_regressor_extra, dtype=torch.float32))
            self.joint_map = torch.tensor(spin_joint_map(), dtype=torch.long)

        def forward(self, *args, **kwargs):
            kwargs["get_skin"] = True
            smpl_output = super().forward(*args, **kwargs)
            extra_joints = vertices2joints(self.J_regressor_extra, smpl_output.vertices)
            joints = torch.cat([smpl_output.joints, extra_joints], dim=1)
            joints = joints[:, self.joint_map, :]
            # SPIN returns smplx's ModelOutput; in smplx 0.1.28 that lacks betas/body_pose,
            # so its SMPLOutput subclass stands in.
            return SMPLOutput(vertices=smpl_output.vertices,
                              global_orient=smpl_output.global_orient,
                              body_pose=smpl_output.body_pose, joints=joints,
                              betas=smpl_output.betas, full_pose=smpl_output.full_pose)

    return SpinSMPL


# --------------------------------------------------------------------------------- mmhuman3d
MMH_DST = 30  # keypoints of the stand-in destination convention


def mmhuman_convention(seed: int = 4):
    """Stand-in for `convert_kps(src='smpl_45', dst=...)`: destination slots fed from a
    source joint, or masked (-1)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 45 + 4, size=MMH_DST)
    src[rng.random(MMH_DST) < 0.2] = -1
    return src


def make_mmhuman_smpl(base):
    """mmhuman3d's `SMPL(_SMPL)`: keyword-only return_verts/return_full_pose, `get_num_verts()`
    in `__init__`, an optional replacement and an extra joint regressor as buffers, a keypoint
    convention conversion, and a dict as output."""

    class MMHumanSMPL(base):
        NUM_VERTS = 6890
        NUM_FACES = 13776

        def __init__(self, *args, joints_regressor=None, extra_joints_regressor=None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            if joints_regressor is not None:
                self.register_buffer("joints_regressor",
                                     torch.tensor(np.load(joints_regressor), dtype=torch.float))
            if extra_joints_regressor is not None:
                self.register_buffer("joints_regressor_extra", torch.tensor(
                    np.load(extra_joints_regressor), dtype=torch.float))
            self.num_verts = self.get_num_verts()
            self.num_joints = MMH_DST
            self.register_buffer("kps_src", torch.tensor(mmhuman_convention()),
                                 persistent=False)

        def convert_kps(self, joints):
            src = self.kps_src
            mask = (src >= 0).to(torch.uint8)
            out = joints[:, src.clamp(min=0)] * mask[None, :, None].to(joints.dtype)
            return out, mask

        def forward(self, *args, return_verts=True, return_full_pose=False, **kwargs):
            kwargs["get_skin"] = True
            smpl_output = super().forward(*args, **kwargs)
            if not hasattr(self, "joints_regressor"):
                joints = smpl_output.joints
            else:
                joints = vertices2joints(self.joints_regressor, smpl_output.vertices)
            if hasattr(self, "joints_regressor_extra"):
                extra = vertices2joints(self.joints_regressor_extra, smpl_output.vertices)
                joints = torch.cat([joints, extra], dim=1)
            joints, joint_mask = self.convert_kps(joints)
            joint_mask = joint_mask.reshape(1, -1).expand(joints.shape[0], -1)
            output = dict(global_orient=smpl_output.global_orient,
                          body_pose=smpl_output.body_pose, joints=joints,
                          joint_mask=joint_mask,
                          keypoints=torch.cat([joints, joint_mask[:, :, None]], dim=-1),
                          betas=smpl_output.betas)
            if return_verts:
                output["vertices"] = smpl_output.vertices
            if return_full_pose:
                output["full_pose"] = smpl_output.full_pose
            return output

    return MMHumanSMPL


# --------------------------------------------------------------------------------- 4D-Humans
SMPL_TO_OPENPOSE = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7,
                    25, 26, 27, 28, 29, 30, 31, 32, 33, 34]


def write_pickled_regressor(path, rows: int, seed: int):
    with open(path, "wb") as handle:
        pickle.dump(random_regressor(rows, seed), handle)
    return path


def make_hmr2_smpl(layer_base):
    """4D-Humans' `SMPL(smplx.SMPLLayer)`: rotation-matrix input, an OpenPose `joint_map`
    buffer, hips moved in place, pickled extra regressor, joints written back into the
    output object."""

    class HMR2SMPL(layer_base):
        def __init__(self, *args, joint_regressor_extra=None, update_hips=False, **kwargs):
            super().__init__(*args, **kwargs)
            if joint_regressor_extra is not None:
                with open(joint_regressor_extra, "rb") as handle:
                    extra = pickle.load(handle, encoding="latin1")
                self.register_buffer("joint_regressor_extra",
                                     torch.tensor(extra, dtype=torch.float32))
            self.register_buffer("joint_map", torch.tensor(SMPL_TO_OPENPOSE, dtype=torch.long))
            self.update_hips = update_hips

        def forward(self, *args, **kwargs):
            smpl_output = super().forward(*args, **kwargs)
            joints = smpl_output.joints[:, self.joint_map, :]
            if self.update_hips:
                joints[:, [9, 12]] = (joints[:, [9, 12]]
                                      + 0.25 * (joints[:, [9, 12]] - joints[:, [12, 9]])
                                      + 0.5 * (joints[:, [8]]
                                               - 0.5 * (joints[:, [9, 12]] + joints[:, [12, 9]])))
            if hasattr(self, "joint_regressor_extra"):
                extra = vertices2joints(self.joint_regressor_extra, smpl_output.vertices)
                joints = torch.cat([joints, extra], dim=1)
            smpl_output.joints = joints
            return smpl_output

    return HMR2SMPL


# --------------------------------------------------------------------------------- SMPLify
def gmof(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robustifier, as SMPLify's reprojection term uses."""
    x2 = x * x
    return sigma ** 2 * x2 / (sigma ** 2 + x2)


def perspective(points: torch.Tensor, cam_t: torch.Tensor, focal: float = 500.0,
                center: float = 112.0) -> torch.Tensor:
    p = points + cam_t[:, None]
    return focal * p[..., :2] / p[..., 2:] + center


def smplify_fit(model, targets_2d, conf, cam_t, optimizer: str, steps: int = 10):
    """SMPLify-style fit of the model's own (batch_size=B) parameters: robust 2D reprojection
    of the joints to fixed targets, a quadratic pose prior and a shape prior.

    Returns the per-step losses and the fitted parameters (detached copies).
    """
    params = [model.global_orient, model.body_pose, model.betas]

    def objective():
        out = model()
        proj = perspective(out.joints, cam_t)
        reproj = (conf[..., None] * gmof(proj - targets_2d, 100.0)).sum()
        prior = 50.0 * model.body_pose.pow(2).sum() + 5.0 * model.betas.pow(2).sum()
        return reproj + prior

    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=0.02)
    else:
        # No line search: with strong_wolfe the fp32 iterates of two implementations that
        # differ only by rounding drift apart by ~1e-3 within 10 steps (checked on smplx
        # computing in fp32 vs in fp64), far above any useful tolerance.
        opt = torch.optim.LBFGS(params, lr=0.5, max_iter=4)
    losses = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        loss = opt.step(closure)
        losses.append(float(loss))
    return losses, [p.detach().clone() for p in params]
