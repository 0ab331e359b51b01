"""HMR's regressor (Kanazawa et al. 2018): image encoder + iterative error feedback + SMPL.

Theta layout (85 values per sample)::

    theta[:, 0:3]    camera [s, tx, ty]   weak perspective: x_2d = s * (X_xy + t)
    theta[:, 3:6]    global orientation   axis-angle of the root (SMPL joint 0)
    theta[:, 6:75]   body pose            axis-angle of SMPL joints 1..23 (69 values)
    theta[:, 75:85]  betas                10 shape coefficients

so ``theta[:, 3:75]`` is SMPL's full 72-D pose. :func:`split_theta` returns
``(cam (B, 3), pose (B, 72), betas (B, 10))``.

Iterative error feedback: starting from the trainable mean Theta_0, T times (weights shared)
``Theta_{t+1} = Theta_t + R([phi, Theta_t])`` with R = FC1024-ReLU-Dropout(0.5)-FC1024-ReLU-
Dropout(0.5)-FC85 (last layer Xavier-uniform, gain 0.01; the dropout probability is the
``dropout`` argument, the paper's 0.5 by default) and phi the image feature.
Theta_0 holds s = 0.9, t = 0 (constants.MEAN_CAMERA), a rotation of pi about x for the root
(constants.MEAN_GLOBAL_ORIENT: upright in image coordinates, y down), and the mocap mean body
pose and shape when a mocap npz is given (else zeros).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from hmr_fast.body import constants
from hmr_fast.models.encoder import build_encoder
from hmr_fast.ops.reference import rodrigues, weak_perspective

NUM_CAM = 3
NUM_POSE = constants.NUM_JOINTS * 3  # 72
NUM_BETAS = 10
NUM_THETA = NUM_CAM + NUM_POSE + NUM_BETAS  # 85


def split_theta(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """theta (B, 85) -> (cam (B, 3), pose (B, 72) axis-angle, betas (B, 10))."""
    if theta.dim() != 2 or theta.shape[1] != NUM_THETA:
        raise ValueError(f"theta must have shape (B, {NUM_THETA}), got {tuple(theta.shape)}")
    return (
        theta[:, :NUM_CAM],
        theta[:, NUM_CAM : NUM_CAM + NUM_POSE],
        theta[:, NUM_CAM + NUM_POSE :],
    )


def load_mean_pose_shape(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean body pose (69,) of joints 1..23 and mean shape (10,) from a mocap npz
    with keys ``pose`` (N, 72) and ``shape`` (N, 10)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mean_params: mocap file {path!r} does not exist")
    with np.load(path) as data:
        missing = [k for k in ("pose", "shape") if k not in data]
        if missing:
            raise ValueError(
                f"mean_params: {path!r} lacks key(s) {missing}; expected 'pose' (N, 72) and "
                f"'shape' (N, 10), found {sorted(data.keys())}"
            )
        pose, shape = np.asarray(data["pose"], np.float64), np.asarray(data["shape"], np.float64)
    if pose.ndim != 2 or pose.shape[1] != NUM_POSE or len(pose) == 0:
        raise ValueError(f"mean_params: 'pose' must have shape (N, 72), got {pose.shape}")
    if shape.ndim != 2 or shape.shape[1] < NUM_BETAS or len(shape) == 0:
        raise ValueError(f"mean_params: 'shape' must have shape (N, 10), got {shape.shape}")
    return pose[:, 3:].mean(0), shape[:, :NUM_BETAS].mean(0)


def initial_theta(mean_params: str | os.PathLike | None = None) -> torch.Tensor:
    """Theta_0 (85,): mean camera, pi about x for the root, mocap mean pose/shape or zeros."""
    theta = torch.zeros(NUM_THETA, dtype=torch.float64)
    theta[:NUM_CAM] = torch.tensor(constants.MEAN_CAMERA, dtype=torch.float64)
    theta[NUM_CAM : NUM_CAM + 3] = torch.tensor(constants.MEAN_GLOBAL_ORIENT, dtype=torch.float64)
    if mean_params is not None:
        body_pose, betas = load_mean_pose_shape(mean_params)
        theta[NUM_CAM + 3 : NUM_CAM + NUM_POSE] = torch.from_numpy(body_pose)
        theta[NUM_CAM + NUM_POSE :] = torch.from_numpy(betas)
    return theta.float()


def build_smpl(backend: str = "auto", keypoint_regressor=None) -> nn.Module:
    """SMPL (procedural body unless $HMR_FAST_SMPL_DIR points at a model) whose forward
    returns HMR's 19 keypoints.

    keypoint_regressor: (19, 6890) or (14, 6890) array/tensor or a .npy path; None uses the
    model file's ``cocoplus_regressor`` (a clear ValueError if the file has none).
    """
    from hmr_fast.body.smpl import SMPL

    smpl = SMPL(
        backend=backend,
        create_betas=False,
        create_global_orient=False,
        create_body_pose=False,
        create_transl=False,
    )
    smpl.set_keypoint_regressor(smpl.hmr_keypoint_regressor(keypoint_regressor))
    return smpl


class HMR(nn.Module):
    """End-to-end human mesh recovery: images (B, 3, S, S) -> Theta, SMPL joints, keypoints.

    Args:
        backbone: a registered encoder (``resnet18``, ``resnet34``, ``resnet50``).
        pretrained: path to a local torchvision state_dict for the backbone, or None.
        smpl: an SMPL module (hmr_fast.SMPL or compatible; its keypoint regressor should give
            HMR's 19 keypoints) or None to build one (see :func:`build_smpl`).
        num_iters: T, the iterations of error feedback.
        mean_params: mocap npz (``pose`` (N, 72), ``shape`` (N, 10)) for Theta_0, or None.
        image_size: S, the square crop size forward() accepts.
        keypoint_regressor: HMR's keypoint regressor for a built SMPL (array or .npy path).
        smpl_backend: backend of a built SMPL ("auto", "torch", "triton").
        dropout: the regressor's dropout probability (the paper's 0.5; short from-scratch
            runs fit faster with less).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: str | os.PathLike | None = None,
        smpl: nn.Module | None = None,
        num_iters: int = 3,
        mean_params: str | os.PathLike | None = None,
        image_size: int = 224,
        keypoint_regressor=None,
        smpl_backend: str = "auto",
        dropout: float = 0.5,
    ):
        super().__init__()
        if int(num_iters) < 1:
            raise ValueError(f"num_iters must be >= 1, got {num_iters}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_iters = int(num_iters)
        self.image_size = int(image_size)
        self.encoder, self.feature_dim = build_encoder(backbone, pretrained)
        self.backbone = backbone
        fc_last = nn.Linear(1024, NUM_THETA)
        self.regressor = nn.Sequential(
            nn.Linear(self.feature_dim + NUM_THETA, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            fc_last,
        )
        # The original's initialisation (akanazawa/hmr src/models.py Encoder_fc3_dropout):
        # slim's Xavier-uniform weights and zero biases; the last layer variance scaling 0.01,
        # fan-avg, uniform = Xavier with gain sqrt(0.01) = 0.1, so that Theta starts near
        # Theta_0.
        for layer in self.regressor:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, gain=0.1 if layer is fc_last else 1.0)
                nn.init.zeros_(layer.bias)
        self.init_theta = nn.Parameter(initial_theta(mean_params))
        if smpl is None:
            smpl = build_smpl(smpl_backend, keypoint_regressor)
        elif keypoint_regressor is not None:
            smpl.set_keypoint_regressor(smpl.hmr_keypoint_regressor(keypoint_regressor))
        self.smpl = smpl

    def _check_images(self, images) -> None:
        s = self.image_size
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must have shape (B, 3, {s}, {s}), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
        if images.device != self.init_theta.device:
            raise ValueError(
                f"images must be on the model's device {self.init_theta.device}, got "
                f"{images.device}"
            )

    def regress(self, features: torch.Tensor) -> list[torch.Tensor]:
        """features (B, F) -> every iteration's Theta, a list of T tensors (B, 85).

        Theta stays in the parameters' dtype under autocast: the small updates would be lost
        to rounding if Theta itself were accumulated in half precision.
        """
        theta = self.init_theta.expand(features.shape[0], -1)
        features = features.to(theta.dtype)
        thetas = []
        for _ in range(self.num_iters):
            theta = theta + self.regressor(torch.cat([features, theta], 1)).to(theta.dtype)
            thetas.append(theta)
        return thetas

    def forward(self, images: torch.Tensor, return_verts: bool = False) -> dict:
        """images (B, 3, S, S) -> dict with

        thetas: list of T (B, 85); cam (B, 3); pose (B, 72); betas (B, 10);
        rotmats (B, 24, 3, 3); keypoints_3d (B, 19, 3); keypoints_2d (B, 19, 2);
        joints_3d (B, 45, 3); vertices (B, 6890, 3) when return_verts.
        All from the final Theta.
        """
        self._check_images(images)
        thetas = self.regress(self.encoder(images))
        cam, pose, betas = split_theta(thetas[-1])
        b = images.shape[0]
        rotmats = rodrigues(pose.reshape(-1, 3)).reshape(b, constants.NUM_JOINTS, 3, 3)
        smpl_dtype = getattr(self.smpl, "dtype", torch.float32)
        # SMPL is cheap next to the encoder; keep its geometry out of autocast's half precision
        # (a bf16 keypoint in [-1, 1] is only good to about half a pixel of a 224 crop).
        with torch.autocast(images.device.type, enabled=False):
            out = self.smpl(
                betas=betas.to(smpl_dtype),
                body_pose=rotmats[:, 1:].to(smpl_dtype),
                global_orient=rotmats[:, :1].to(smpl_dtype),
                pose2rot=False,
                return_verts=return_verts,
            )
            if out.keypoints is None:
                raise ValueError(
                    "the SMPL module has no keypoint regressor: pass keypoint_regressor= to "
                    "HMR or call smpl.set_keypoint_regressor(...)"
                )
            keypoints_2d = weak_perspective(out.keypoints, cam.to(out.keypoints.dtype))
        result = {
            "thetas": thetas,
            "cam": cam,
            "pose": pose,
            "betas": betas,
            "rotmats": rotmats,
            "keypoints_3d": out.keypoints,
            "keypoints_2d": keypoints_2d,
            "joints_3d": out.joints,
        }
        if return_verts:
            result["vertices"] = out.vertices
        return result
