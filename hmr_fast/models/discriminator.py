"""HMR's factorized adversarial prior (Kanazawa et al. 2018, Sec. 3.3), 1,807,619 parameters.

Structure, exactly as the original TensorFlow model:

* the 23 non-root joint rotations, each a flattened 3x3 matrix (9-D), go through a shared
  embedding 9 → 32 → 32 with a ReLU after each layer (the original's 1x1 convolutions);
* 23 per-joint linear heads 32 → 1 (stored as one weight (23, 32) and one bias (23,));
* a full-pose branch on the concatenated embeddings: 736 → 1024 → ReLU → 1024 → ReLU → 1;
* a shape branch on the betas: 10 → 10 → ReLU → 5 → ReLU → 1.

Output (B, 25): the 23 joint scores, then the full-pose score, then the shape score.

Backends for the embedding + heads (the rest is plain nn.Linear): "torch" (batched matmuls),
"triton" (one fused kernel launch forward, one backward; CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1), "auto" (triton for CUDA tensors, torch otherwise) and "loop" (one head at
a time like the original graph; a slow reference). All share the same parameters and
state_dict.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hmr_fast.body.constants import NUM_BODY_JOINTS
from hmr_fast.ops import discriminator_ops as ops
from hmr_fast.ops.reference import rodrigues

NUM_BETAS = 10
NUM_OUTPUTS = NUM_BODY_JOINTS + 2  # 23 joints, full pose, shape
BACKENDS = ("auto", "torch", "triton", "loop")

_HEADS = {
    "torch": ops.disc_heads_torch,
    "triton": ops.disc_heads_triton,
    "loop": ops.disc_heads_loop_reference,
}


def body_pose_to_rotmats(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 69) axis-angle or (B, 23, 3, 3) rotation matrices -> (B, 23, 9) flattened rows."""
    b = body_pose.shape[0]
    if body_pose.dim() == 2:
        return rodrigues(body_pose.reshape(-1, 3)).reshape(b, NUM_BODY_JOINTS, 9)
    return body_pose.reshape(b, NUM_BODY_JOINTS, 9)


def _check_inputs(body_pose, betas) -> None:
    for name, t in (("body_pose", body_pose), ("betas", betas)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    pose_ok = (body_pose.dim() == 2 and body_pose.shape[1] == NUM_BODY_JOINTS * 3) or (
        body_pose.dim() == 4 and tuple(body_pose.shape[1:]) == (NUM_BODY_JOINTS, 3, 3)
    )
    if not pose_ok:
        raise ValueError(
            f"body_pose must have shape (B, {NUM_BODY_JOINTS * 3}) (axis-angle) or "
            f"(B, {NUM_BODY_JOINTS}, 3, 3) (rotation matrices), got {tuple(body_pose.shape)}"
        )
    if betas.dim() != 2 or betas.shape[1] != NUM_BETAS:
        raise ValueError(f"betas must have shape (B, {NUM_BETAS}), got {tuple(betas.shape)}")
    if betas.shape[0] != body_pose.shape[0]:
        raise ValueError(
            f"body_pose and betas must have the same batch size, got {body_pose.shape[0]} "
            f"and {betas.shape[0]}"
        )
    if betas.device != body_pose.device:
        raise ValueError(
            f"body_pose and betas must be on the same device, got {body_pose.device} "
            f"and {betas.device}"
        )


class Discriminator(nn.Module):
    """HMR's discriminator. forward(body_pose (B,69) or (B,23,3,3), betas (B,10)) -> (B,25)."""

    def __init__(self, backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.embed1 = nn.Linear(9, 32)
        self.embed2 = nn.Linear(32, 32)
        self.head_weight = nn.Parameter(torch.empty(NUM_BODY_JOINTS, 32))
        self.head_bias = nn.Parameter(torch.empty(NUM_BODY_JOINTS))
        self.full_pose = nn.Sequential(
            nn.Linear(NUM_BODY_JOINTS * 32, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1),
        )
        self.shape = nn.Sequential(
            nn.Linear(NUM_BETAS, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original's initialisation (akanazawa/hmr src/models.py Discriminator_separable_
        rotations: slim layers' defaults): Xavier-uniform weights, zero biases; each joint's
        head as its own fully connected 32 -> 1 layer."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        fan_in, fan_out = self.head_weight.shape[1], 1
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.head_weight, -bound, bound)
        nn.init.zeros_(self.head_bias)

    def resolve_backend(self, device: torch.device) -> str:
        if self.backend == "auto":
            return "triton" if device.type == "cuda" else "torch"
        return self.backend

    def joint_embeddings(self, rotmats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rotmats (B, 23, 9) -> (embeddings (B, 23, 32), joint scores (B, 23))."""
        backend = self.resolve_backend(rotmats.device)
        if backend == "triton":
            ops.check_triton_device(rotmats)
        return _HEADS[backend](
            rotmats,
            self.embed1.weight,
            self.embed1.bias,
            self.embed2.weight,
            self.embed2.bias,
            self.head_weight,
            self.head_bias,
        )

    def _check_like_parameters(self, body_pose: torch.Tensor, betas: torch.Tensor) -> None:
        weight = self.embed1.weight
        if body_pose.device != weight.device:
            raise ValueError(
                f"body_pose must be on the discriminator's device {weight.device}, got "
                f"{body_pose.device}"
            )
        if torch.is_autocast_enabled(body_pose.device.type):
            return
        for name, t in (("body_pose", body_pose), ("betas", betas)):
            if t.dtype != weight.dtype:
                raise TypeError(
                    f"{name} must have the discriminator's dtype {weight.dtype} (or run under "
                    f"autocast), got {t.dtype}"
                )

    def forward(self, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """body_pose (B, 69) axis-angle or (B, 23, 3, 3); betas (B, 10) -> scores (B, 25)."""
        _check_inputs(body_pose, betas)
        self._check_like_parameters(body_pose, betas)
        rotmats = body_pose_to_rotmats(body_pose)
        embeddings, joint_scores = self.joint_embeddings(rotmats)
        full = self.full_pose(embeddings.reshape(rotmats.shape[0], -1))
        shape = self.shape(betas)
        return torch.cat([joint_scores, full, shape], 1)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
