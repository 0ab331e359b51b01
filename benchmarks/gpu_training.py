"""Synthetic HMR training batches and a short training run, shared by the GPU tests
(tests/test_gpu_train.py, tests/test_gpu_compile.py) and the training-step breakdown of
benchmarks/gpu_report.py. No dataset, no files: random images and labels in the shapes
`hmr_fast.train.step.TrainStep` reads.
"""

from __future__ import annotations

import warnings

import torch


def synthetic_batch(batch: int, size: int, device, generator: torch.Generator,
                    num_iters: int = 3) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """(labelled batch, real mocap (pose (B*T, 72), betas (B*T, 10))) on `device`.

    Images (B, 3, S, S) ~ N(0, 1); 2D keypoints (B, 19, 3) in [-1, 1] with visibility 1;
    3D keypoints (B, 14, 4) with confidence 1; SMPL pose (B, 72) ~ N(0, 0.2), betas (B, 10);
    has_smpl = has_3d = 1. The real batch is batch * T samples, as the Trainer draws it.
    """
    kp2d = torch.rand(batch, 19, 3, generator=generator) * 2 - 1
    kp2d[..., 2] = 1.0
    kp3d = torch.cat([torch.randn(batch, 14, 3, generator=generator) * 0.3,
                      torch.ones(batch, 14, 1)], -1)
    values = {
        "img": torch.randn(batch, 3, size, size, generator=generator),
        "keypoints_2d": kp2d,
        "keypoints_3d": kp3d,
        "pose": torch.randn(batch, 72, generator=generator) * 0.2,
        "betas": torch.randn(batch, 10, generator=generator),
        "has_smpl": torch.ones(batch),
        "has_3d": torch.ones(batch),
    }
    real = (torch.randn(batch * num_iters, 72, generator=generator) * 0.2,
            torch.randn(batch * num_iters, 10, generator=generator))
    return ({k: v.to(device) for k, v in values.items()}, tuple(t.to(device) for t in real))


def train_config(backbone: str = "resnet18", image_size: int = 64, batch_size: int = 8,
                 dropout: float = 0.0):
    """A TrainConfig for these runs (T = 3, paper learning rates; dropout 0 by default so
    that two runs consume no random numbers and can be compared step by step)."""
    from hmr_fast.train.config import load_config

    return load_config(None, {"backbone": backbone, "image_size": image_size,
                              "batch_size": batch_size, "workers": 0,
                              "regressor_dropout": dropout})


def build_step(cfg, backend: str, device, seed: int = 0, ranges=None):
    """(TrainStep, model, discriminator) with both networks on `backend` ("triton" = fused,
    "torch" = unfused), initialised from `seed` (the same weights for either backend)."""
    from hmr_fast.train.build import build_discriminator, build_model
    from hmr_fast.train.distributed import DistInfo
    from hmr_fast.train.ranges import Ranges
    from hmr_fast.train.step import TrainStep

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # the procedural-body warning
        warnings.simplefilter("ignore", UserWarning)
        model = build_model(cfg, device, backend)
        disc = build_discriminator(device, backend)
    ranges = ranges if ranges is not None else Ranges()
    return TrainStep(cfg, model, disc, device, DistInfo(), ranges), model, disc
