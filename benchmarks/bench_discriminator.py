"""Discriminator forward+backward on one training step's worth of samples: 3 x 64 fakes
(every IEF iteration's Theta of a batch of 64) and 3 x 64 mocap reals, through the LSGAN
discriminator loss. Run with `pytest --benchmark benchmarks/bench_discriminator.py`.

Cases: the batched torch heads (baseline), the per-head loop of the original graph, and the
fused Triton heads; for the whole discriminator ("full", dominated by the 736-1024-1024
full-pose MLP) and for the shared embedding + 23 heads alone ("heads", the part the backends
differ in). On a CPU-only machine the Triton case runs in Triton's interpreter: a
smoke test of the fused path, never a speed claim.
"""

from __future__ import annotations

import os

import pytest
import torch

from hmr_fast.losses import discriminator_loss, encoder_adversarial_loss
from hmr_fast.models.discriminator import Discriminator

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
FAKES, REALS = 3 * 64, 3 * 64


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    pose = (torch.randn(FAKES + REALS, 69, generator=g) * 0.4).to(DEVICE)
    betas = torch.randn(FAKES + REALS, 10, generator=g).to(DEVICE)
    return pose, betas


def _step(disc, pose, betas):
    """One discriminator update's compute plus the encoder's adversarial gradient."""

    def run():
        disc.zero_grad(set_to_none=True)
        fake_pose = pose[:FAKES].detach().requires_grad_()
        scores = disc(torch.cat([fake_pose, pose[FAKES:]]), betas)
        loss = discriminator_loss(scores[FAKES:], scores[:FAKES])
        loss = loss + encoder_adversarial_loss(scores[:FAKES])
        loss.backward()
        if CUDA:
            torch.cuda.synchronize()
        return loss

    return run


def _heads_step(disc, pose):
    """Embedding + heads only: forward, and backward from random output gradients."""
    from hmr_fast.models.discriminator import body_pose_to_rotmats

    rot = body_pose_to_rotmats(pose).detach()
    g = torch.Generator().manual_seed(1)
    grad_h2 = torch.randn(rot.shape[0], 23, 32, generator=g).to(DEVICE)
    grad_s = torch.randn(rot.shape[0], 23, generator=g).to(DEVICE)

    def run():
        disc.zero_grad(set_to_none=True)
        x = rot.requires_grad_()
        h2, scores = disc.joint_embeddings(x)
        torch.autograd.backward([h2, scores], [grad_h2, grad_s])
        if CUDA:
            torch.cuda.synchronize()
        return scores.detach().sum()

    return run


@pytest.mark.parametrize("part", ["full", "heads"])
@pytest.mark.parametrize("backend", ["torch", "loop", "triton"])
def test_discriminator_fwd_bwd(benchmark, backend, part):
    interpreted = backend == "triton" and not CUDA
    if interpreted and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton backend needs CUDA or TRITON_INTERPRET=1")
    torch.manual_seed(0)
    disc = Discriminator(backend=backend).to(DEVICE)
    pose, betas = _inputs()
    device = "triton-interpreter smoke-only (not a speed claim)" if interpreted else DEVICE.type
    benchmark.group = f"discriminator {part} fwd+bwd {FAKES}+{REALS} {device}"
    benchmark.extra_info.update(
        batch=FAKES + REALS, group=benchmark.group, baseline=backend == "torch"
    )
    run = _step(disc, pose, betas) if part == "full" else _heads_step(disc, pose)
    loss = benchmark(run)
    assert torch.isfinite(loss)
    grads = [disc.embed1.weight.grad, disc.embed2.weight.grad, disc.head_weight.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
