"""One training step: the losses and the two optimiser updates, as in the original HMR code.

1. encoder step: images -> T iterations of Theta. Losses on the final iteration: 2D keypoints
   (always) and, unless ``use_3d`` is off, SMPL parameters (masked by ``has_smpl``) and 3D
   joints (masked by ``has_3d``). Adversarial loss on the Thetas of *all* T iterations,
   concatenated, through the discriminator (whose weights this step does not update).
2. discriminator step: a real mocap batch (``batch_size * T`` samples) against the detached
   fakes of all T iterations.

The learning rates follow ``lr_factor``, a function of the step and the schedule's length
alone, so that a resumed run follows the same schedule.
"""

from __future__ import annotations

import contextlib
import math

import torch

from hmr_fast import losses as L
from hmr_fast.train.config import TrainConfig
from hmr_fast.train.distributed import DistInfo
from hmr_fast.train.ranges import Ranges


def lr_factor(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    """Multiplier of both base learning rates at ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant or a cosine decay reaching 0 at ``total`` (default
    ``cfg.steps``; the loop passes the schedule's length, which a time budget may shorten)."""
    total = cfg.steps if total is None else total
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, total - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return 1.0


def make_adam(params, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with L2 weight decay (the paper's recipe uses 0: the original code builds L2
    regularisers but never adds them to a loss), the fused kernel where torch has one (CPU
    and CUDA: ~10x faster than the per-tensor loop on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def split_fakes(thetas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Body pose (T*B, 69) and betas (T*B, 10) of every iteration's Theta, concatenated."""
    from hmr_fast.models.hmr import split_theta

    poses, betas = [], []
    for theta in thetas:
        _, pose, shape = split_theta(theta)
        poses.append(pose[:, 3:])
        betas.append(shape)
    return torch.cat(poses), torch.cat(betas)


class TrainStep:
    """The networks' optimisers and one ``__call__`` = one encoder + one discriminator update.

    ``model`` / ``discriminator`` may be any modules with HMR's / the discriminator's
    interface (tests use small stand-ins).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        discriminator: torch.nn.Module,
        device: torch.device,
        dist_info: DistInfo,
        ranges: Ranges,
    ):
        self.cfg, self.device, self.dist, self.ranges = cfg, device, dist_info, ranges
        self.model, self.disc = model, discriminator
        self.e_opt = make_adam(model.parameters(), cfg.encoder_lr, cfg.encoder_weight_decay)
        self.d_opt = make_adam(discriminator.parameters(), cfg.disc_lr, cfg.disc_weight_decay)
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.model_ddp = DDP(model, device_ids=ids)
            self.disc_ddp = DDP(discriminator, device_ids=ids)
        else:
            self.model_ddp, self.disc_ddp = model, discriminator

    def weights(self) -> dict:
        """Each encoder loss term's lambda."""
        cfg = self.cfg
        return {"kp_2d": cfg.keypoint_weight, "smpl": cfg.smpl_weight,
                "joints_3d": cfg.joints_3d_weight, "adv": cfg.adversarial_weight}

    def _autocast(self):
        if self.cfg.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def supervised_terms(self, out: dict, batch: dict) -> dict:
        """The unweighted losses against the labels: 2D keypoints, and unless ``use_3d`` is
        off SMPL parameters and 3D joints (final iteration)."""
        dev = self.device
        terms = {"kp_2d": L.keypoint_2d_loss(
            out["keypoints_2d"].float(), batch["keypoints_2d"].to(dev, non_blocking=True))}
        if self.cfg.use_3d:
            terms["smpl"] = L.smpl_param_loss(
                out["rotmats"].float(),
                out["betas"].float(),
                batch["pose"].to(dev).float(),
                batch["betas"].to(dev).float(),
                batch["has_smpl"].to(dev).float(),
            )
            terms["joints_3d"] = L.joints_3d_loss(
                out["keypoints_3d"][:, :14].float(),
                batch["keypoints_3d"].to(dev).float(),
                batch["has_3d"].to(dev).float(),
            )
        return terms

    def __call__(self, batch: dict, real: tuple[torch.Tensor, torch.Tensor], lr_scale: float
                 ) -> dict:
        """One encoder + one discriminator update at ``lr_scale`` x the base learning rates;
        returns the logged loss values (floats, averaged over processes)."""
        cfg, R = self.cfg, self.ranges
        for opt, base in ((self.e_opt, cfg.encoder_lr), (self.d_opt, cfg.disc_lr)):
            for group in opt.param_groups:
                group["lr"] = base * lr_scale
        images = batch["img"].to(self.device, non_blocking=True)
        self.model.train()
        self.disc.train()
        # -- encoder step
        with self._autocast():
            with R("encoder"):
                out = self.model_ddp(images)
            with R("losses"):
                terms = self.supervised_terms(out, batch)
                fake_pose, fake_betas = split_fakes([t.float() for t in out["thetas"]])
            with R("discriminator"):
                self.disc.requires_grad_(False)
                try:
                    d_fake_enc = self.disc(fake_pose, fake_betas)
                finally:
                    self.disc.requires_grad_(True)
            with R("losses"):
                terms["adv"] = L.encoder_adversarial_loss(d_fake_enc.float())
                weights = self.weights()
                e_loss = sum(weights[k] * v for k, v in terms.items())
        with R("encoder_backward"):
            self.e_opt.zero_grad(set_to_none=True)
            e_loss.backward()
        with R("optimizer"):
            self.e_opt.step()
        # -- discriminator step: one forward over [real; fake] (one DDP forward per backward)
        with R("discriminator"):
            real_pose, real_betas = real
            n_real = len(real_pose)
            with self._autocast():
                d_out = self.disc_ddp(
                    torch.cat([real_pose[:, 3:], fake_pose.detach()]),
                    torch.cat([real_betas, fake_betas.detach()]),
                ).float()
                d_loss = cfg.disc_weight * L.discriminator_loss(d_out[:n_real], d_out[n_real:])
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
        with R("optimizer"):
            self.d_opt.step()
        values = torch.stack(
            [e_loss.detach(), d_loss.detach()] + [t.detach().float() for t in terms.values()]
        )
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
            values /= self.dist.world_size
        values = values.double().cpu().tolist()
        rec = {"loss": values[0], "d_loss": values[1]}
        rec.update({f"loss_{k}": v for k, v in zip(terms, values[2:])})
        return rec
