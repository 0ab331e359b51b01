"""SPIN's released regressor (Kolotouros et al., ICCV 2019), in the layout of its checkpoints.

SPIN's `model_checkpoint.pt` is ``{'model': state_dict, ...}``; this module's state_dict has
exactly those keys, so it loads strictly. What was matched against SPIN's public code
(nkolot/SPIN, `models/hmr.py` and `utils/geometry.py`), where it differs from the paper's
HMR regressor (`hmr_fast.models.hmr`):

* backbone: ResNet-50 in torchvision's layout with its modules at the top level (`conv1`,
  `bn1`, `layer1`..`layer4`; stride in the 3x3 conv), then a 7x7 average pool: for the
  224x224 crops SPIN uses this is the global mean, 2048 features;
* regressor: `fc1` (2048 + 144 + 10 + 3 -> 1024), dropout, `fc2` (1024 -> 1024), dropout,
  and three heads `decpose` (144), `decshape` (10), `deccam` (3) whose outputs are *added* to
  the current estimate. There is no ReLU between the layers (the paper's HMR has one);
* iterations: 3, from the buffers `init_pose` (1, 144), `init_shape` (1, 10), `init_cam`
  (1, 3), SPIN's `smpl_mean_params.npz` (`pose` (144,), `shape` (10,), `cam` (3,));
* pose: 24 6-D rotations in SPIN's row-major reading (`ops.rotations.rot6d_to_rotmat`),
  root first, as (B, 24, 3, 3);
* camera: [s, tx, ty], weak perspective in the crop's [-1, 1] coordinates, as HMR's; SPIN
  renders it as the perspective translation [tx, ty, 2 f / (224 s)] with f = 5000 px;
* input: (B, 3, 224, 224) RGB crops normalised with ImageNet's mean and std.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn

from hmr_fast.ops.rotations import rot6d_to_rotmat

NUM_JOINTS = 24
NUM_POSE_6D = NUM_JOINTS * 6  # 144
NUM_BETAS = 10
NUM_CAM = 3
NUM_ITERS = 3
FEATURE_DIM = 2048
IMAGE_SIZE = 224
MEAN_PARAM_SHAPES = {"pose": (NUM_POSE_6D,), "shape": (NUM_BETAS,), "cam": (NUM_CAM,)}
BUFFER_FOR_KEY = {"pose": "init_pose", "shape": "init_shape", "cam": "init_cam"}


def load_mean_params(path) -> dict[str, np.ndarray]:
    """SPIN's `smpl_mean_params.npz` as {'pose': (144,), 'shape': (10,), 'cam': (3,)}.

    Errors name the file and what was expected.
    """
    import os

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mean_params: {path!r} does not exist (SPIN's "
                                "smpl_mean_params.npz with 'pose' (144,), 'shape' (10,), "
                                "'cam' (3,))")
    try:
        with np.load(path) as data:
            found = {key: np.asarray(data[key], np.float32) for key in data.files}
    except Exception as err:  # zip/pickle errors: name the file, not a traceback
        raise ValueError(f"mean_params: {path!r} is not a readable .npz ({err})") from None
    result = {}
    for key, shape in MEAN_PARAM_SHAPES.items():
        if key not in found:
            raise ValueError(f"mean_params: {path!r} lacks {key!r}; expected keys "
                             f"{sorted(MEAN_PARAM_SHAPES)}, found {sorted(found)}")
        value = found[key].reshape(-1)
        if value.shape != shape:
            raise ValueError(f"mean_params: {path!r} key {key!r} has {value.size} values, "
                             f"expected {shape[0]}")
        result[key] = value
    return result


class SPINRegressor(nn.Module):
    """images (B, 3, 224, 224) -> rotmats (B, 24, 3, 3), betas (B, 10), cam (B, 3).

    Args:
        mean_params: {'pose', 'shape', 'cam'} arrays for the initial estimate, or None for
            zeros (a checkpoint's own `init_*` buffers then overwrite them on load).
    """

    def __init__(self, mean_params: dict | None = None):
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        # Top-level names, as SPIN's checkpoints store them.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.fc1 = nn.Linear(FEATURE_DIM + NUM_POSE_6D + NUM_BETAS + NUM_CAM, 1024)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(1024, NUM_POSE_6D)
        self.decshape = nn.Linear(1024, NUM_BETAS)
        self.deccam = nn.Linear(1024, NUM_CAM)
        for key, shape in MEAN_PARAM_SHAPES.items():
            value = (torch.zeros(shape) if mean_params is None
                     else torch.as_tensor(mean_params[key], dtype=torch.float32))
            self.register_buffer(BUFFER_FOR_KEY[key], value.reshape(1, -1).clone())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, 2048)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # SPIN's AvgPool2d(7) on the 7x7 map of a 224 crop: the global mean.
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor):
        feats = self.features(images)
        batch = images.shape[0]
        pose = self.init_pose.expand(batch, -1)
        shape = self.init_shape.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        for _ in range(NUM_ITERS):
            hidden = self.drop2(self.fc2(self.drop1(self.fc1(
                torch.cat([feats, pose, shape, cam], dim=1)))))
            pose = self.decpose(hidden) + pose
            shape = self.decshape(hidden) + shape
            cam = self.deccam(hidden) + cam
        return rot6d_to_rotmat(pose).reshape(batch, NUM_JOINTS, 3, 3), shape, cam
