"""HMR forward (T = 3) + all training losses, resnet18 at 224 px, batch 8, CPU, torch SMPL.
Run with `pytest --benchmark benchmarks/bench_hmr.py`.

"forward_losses" builds the autograd graph but does not run backward; "train_step" also runs
backward through the encoder (the encoder-side cost of one optimisation step, without the
optimiser update).
"""

from __future__ import annotations

import pytest
import torch

from hmr_fast.losses import (
    encoder_adversarial_loss,
    joints_3d_loss,
    keypoint_2d_loss,
    smpl_param_loss,
)
from hmr_fast.models.discriminator import Discriminator
from hmr_fast.models.hmr import HMR, split_theta
from hmr_fast.train.config import TrainConfig

BATCH, SIZE = 8, 224


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    model = HMR(backbone="resnet18", image_size=SIZE, smpl_backend="torch").train()
    return model, Discriminator(backend="torch")


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    kp2d = torch.rand(BATCH, 19, 3, generator=g) * 2 - 1
    kp2d[..., 2] = (kp2d[..., 2] > -0.5).float()
    joints = torch.randn(BATCH, 14, 4, generator=g)
    joints[..., 3] = 1.0
    return {
        "images": torch.randn(BATCH, 3, SIZE, SIZE, generator=g),
        "keypoints_2d": kp2d,
        "pose": torch.randn(BATCH, 72, generator=g) * 0.3,
        "betas": torch.randn(BATCH, 10, generator=g),
        "has_smpl": torch.arange(BATCH) % 2 == 0,
        "joints_3d": joints,
        "has_3d": torch.arange(BATCH) % 2 == 0,
    }


def _step(model, disc, batch, backward):
    w = TrainConfig()  # the loss weights' one source

    def run():
        model.zero_grad(set_to_none=True)
        out = model(batch["images"])
        fakes = [split_theta(t) for t in out["thetas"]]
        d_fake = disc(
            torch.cat([pose[:, 3:] for _, pose, _ in fakes]),
            torch.cat([betas for _, _, betas in fakes]),
        )
        loss = (
            w.keypoint_weight * keypoint_2d_loss(out["keypoints_2d"], batch["keypoints_2d"])
            + w.smpl_weight
            * smpl_param_loss(
                out["rotmats"], out["betas"], batch["pose"], batch["betas"], batch["has_smpl"]
            )
            + w.joints_3d_weight
            * joints_3d_loss(out["keypoints_3d"][:, :14], batch["joints_3d"], batch["has_3d"])
            + w.adversarial_weight * encoder_adversarial_loss(d_fake)
        )
        if backward:
            loss.backward()
        return loss

    return run


@pytest.mark.parametrize("mode", ["forward_losses", "train_step"])
def test_hmr_resnet18_cpu(benchmark, nets, mode):
    model, disc = nets
    benchmark.group = f"hmr resnet18 {SIZE}px T=3 cpu {mode}"
    benchmark.extra_info.update(batch=BATCH, group=benchmark.group)
    loss = benchmark(_step(model, disc, _batch(), backward=mode == "train_step"))
    assert torch.isfinite(loss)
