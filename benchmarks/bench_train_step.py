"""One HMR training step (encoder + SMPL + discriminator + both optimiser steps), fused vs
unfused, with a per-range wall-clock breakdown in ``benchmark.extra_info["ranges_ms"]``.

On CUDA: the paper's setting, ResNet-50 at 224 px, batch 64, T = 3; "fused" = Triton SMPL and
discriminator, "unfused" = the torch backends. On CPU (labelled ``cpu-small``): ResNet-18 at
64 px, batch 8, torch backends only (the fused path needs CUDA).

Data come from an in-memory dataset of random images (no decoding), so the ``data`` range
measures batching and the host-to-device copy only. Ranges are nested where the work is:
``smpl`` is inside ``encoder`` (the model's forward), ``encoder_backward`` is the encoder's
backward pass, ``discriminator`` covers both discriminator forwards and its backward,
``optimizer`` both Adam steps. Run with `pytest --benchmark benchmarks/bench_train_step.py`.
"""

from __future__ import annotations

import pytest
import torch

from hmr_fast.data.collate import collate
from hmr_fast.train.build import build_discriminator, build_model
from hmr_fast.train.config import load_config
from hmr_fast.train.loop import Trainer
from hmr_fast.train.ranges import Ranges
from hmr_fast.train.sampling import StepSampler

CUDA = torch.cuda.is_available()
SETTING = (
    {"label": "gpu-paper", "backbone": "resnet50", "image_size": 224, "batch_size": 64}
    if CUDA
    else {"label": "cpu-small", "backbone": "resnet18", "image_size": 64, "batch_size": 8}
)


class RandomImages(torch.utils.data.Dataset):
    """Items shaped like KeypointDataset's, from a fixed random pool."""

    def __init__(self, n: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.img = torch.randn(n, 3, size, size, generator=g)
        kp = torch.rand(n, 19, 3, generator=g) * 2 - 1
        kp[..., 2] = 1.0
        self.kp2d = kp
        self.kp3d = torch.cat([torch.randn(n, 14, 3, generator=g) * 0.3, torch.ones(n, 14, 1)], -1)
        self.pose = torch.randn(n, 72, generator=g) * 0.2
        self.betas = torch.randn(n, 10, generator=g)

    def __len__(self):
        return len(self.img)

    def __getitem__(self, i):
        return {
            "img": self.img[i],
            "keypoints_2d": self.kp2d[i],
            "keypoints_3d": self.kp3d[i],
            "pose": self.pose[i],
            "betas": self.betas[i],
            "has_smpl": torch.tensor(1.0),
            "has_3d": torch.tensor(1.0),
            "index": torch.tensor(i),
        }


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_train_step(benchmark, fused):
    if fused and not CUDA:
        pytest.skip("the fused (Triton) path runs on CUDA only; CPU uses the torch backends")
    device = torch.device("cuda" if CUDA else "cpu")
    cfg = load_config(
        None,
        {
            "backbone": SETTING["backbone"],
            "image_size": SETTING["image_size"],
            "batch_size": SETTING["batch_size"],
            "fused": fused,
            "workers": 0,
        },
    )
    backend = "triton" if fused else "torch"
    torch.manual_seed(0)
    model = build_model(cfg, device, backend)
    disc = build_discriminator(device, backend)
    dataset = RandomImages(4 * cfg.batch_size, cfg.image_size)
    mocap = (torch.randn(1000, 72) * 0.2, torch.randn(1000, 10))
    ranges = Ranges(timed=True, device=device)
    trainer = Trainer(cfg, model, disc, dataset, mocap, device, ranges=ranges)
    sampler = StepSampler(len(dataset), cfg.batch_size, 0, 0, 10**9)

    def step():
        with ranges("data"):
            batch = collate([dataset[i] for i in sampler.indices(trainer.step)])
            real = trainer._mocap_batch(trainer.step)
        trainer.train_step(batch, real)
        trainer.step += 1
        if CUDA:
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: cuDNN autotune, Triton compilation
        step()
    ranges.reset()
    calls = [0]

    def counted():
        step()
        calls[0] += 1

    benchmark.pedantic(counted, rounds=5 if CUDA else 2, iterations=1, warmup_rounds=0)
    n = max(calls[0], 1)
    benchmark.extra_info.update(
        group=f"train step {SETTING['label']}",
        batch=cfg.batch_size,
        baseline=not fused,
        device=torch.cuda.get_device_name() if CUDA else "cpu",
        setting=SETTING["label"],
        backbone=cfg.backbone,
        image_size=cfg.image_size,
        ranges_ms={k: 1e3 * v / n for k, v in sorted(ranges.totals.items())},
    )
