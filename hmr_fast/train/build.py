"""The networks of a config, and a trained model from its checkpoint.

Evaluation, the demo and prediction import ``load_trained_model`` from here without
importing the training loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.config import TrainConfig, apply_overrides, config_from_dict

# Config keys that define the network's shape: a checkpoint only fits a model built with the
# same values.
ARCH_KEYS = ("backbone", "image_size", "num_iters")


def backends_for(cfg: TrainConfig, device: torch.device) -> str:
    """'triton' for the fused path on CUDA, 'torch' otherwise."""
    return "triton" if cfg.fused and device.type == "cuda" else "torch"


def build_model(cfg: TrainConfig, device: torch.device, backend: str = "torch"):
    """HMR with the config's backbone / image size / T, on ``device``."""
    from hmr_fast.models.hmr import HMR

    if cfg.pretrained and cfg.pretrained != "hub" and not Path(cfg.pretrained).is_file():
        raise FileNotFoundError(f"pretrained weights not found: {cfg.pretrained}")
    mean_params = cfg.mocap if cfg.mocap and Path(cfg.mocap).is_file() else None
    model = HMR(
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        num_iters=cfg.num_iters,
        mean_params=mean_params,
        image_size=cfg.image_size,
        smpl_backend=backend,
        dropout=cfg.regressor_dropout,
    )
    for module in model.modules():  # torchvision builds its batch norms with momentum 0.1
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = cfg.bn_momentum
    return model.to(device)


def build_discriminator(device: torch.device, backend: str = "torch"):
    from hmr_fast.models.discriminator import Discriminator

    return Discriminator(backend=backend).to(device)


def load_trained_model(checkpoint, device="cpu", backend: str = "torch"):
    """(model in eval mode, its TrainConfig) from a checkpoint file or run directory."""
    path = ckpt.resolve_checkpoint(checkpoint)
    state = ckpt.load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    # Theta_0 and the backbone are in the weights: neither file is needed at inference.
    build_cfg = apply_overrides(cfg, {"mocap": None, "pretrained": None})
    device = torch.device(device)
    model = build_model(build_cfg, device, backend)
    ckpt.load_model_weights(model, state["model"], "model", path)
    # The mean-pose baseline's Theta_0 as training built it (None in older checkpoints).
    model.initial_theta = state.get("initial_theta")
    model.eval()
    return model, cfg
