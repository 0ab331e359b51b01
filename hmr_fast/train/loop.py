"""The training loop: data, steps, logging, checkpoint cadence, resuming and the time budget.

Reproducibility: the data order is a pure function of (seed, step, rank) (``StepSampler``), and
a checkpoint stores the model, discriminator, both optimisers, the step, the schedule's length
and every global RNG state, so that a run resumed on CPU with ``workers=0`` logs the same
losses as an uninterrupted one. Under ``torchrun`` each process trains on its own shard of
every global batch (DDP); only rank 0 logs and writes checkpoints.

A time budget (``minutes``) ends the run in time *and* keeps the learning-rate schedule whole:
after a short warm-up the loop measures its steps per second and, when the last step cannot
be reached within the budget, shortens the schedule to the steps that fit, so that a cosine
decay still reaches 0 on a machine half as fast (``ScheduleFit``).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hmr_fast.data.collate import collate
from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.build import ARCH_KEYS
from hmr_fast.train.config import TrainConfig
from hmr_fast.train.distributed import DistInfo, agree, broadcast_int
from hmr_fast.train.ranges import Ranges
from hmr_fast.train.sampling import EpochIndexed, StepSampler, batch_skipped
from hmr_fast.train.step import TrainStep, lr_factor
from hmr_fast.train.threads import ThreadGovernor


def run_length(cfg: TrainConfig, num_samples: int, world_size: int = 1) -> int:
    """Steps of a run: ``steps``, or ``epochs`` passes over ``num_samples`` at the global
    batch (``batch_size`` x processes), rounded up."""
    if cfg.steps is not None:
        return int(cfg.steps)
    return max(1, math.ceil(cfg.epochs * num_samples / (cfg.batch_size * world_size)))


class ScheduleFit:
    """Fits the schedule's length to a time budget from the measured speed.

    The speed is measured from step ``warmup`` of this process on (the first steps pay for
    allocations and caches) and re-estimated every ``every`` steps; the schedule's end is
    the step reachable within the budget with ``margin`` of it kept for the final checkpoint
    and timing noise, never beyond the configured length.
    """

    def __init__(self, budget_s: float, start_step: int, total: int, warmup: int = 20,
                 every: int = 50, margin: float = 0.03, clock=time.perf_counter):
        self.budget, self.total = budget_s, total
        self.warmup, self.every, self.margin = warmup, every, margin
        self.clock = clock
        self.t0 = clock()
        self.first = start_step
        self.mark: tuple[int, float] | None = None

    def due(self, step: int) -> bool:
        """Whether ``end`` looks at the clock after ``step`` (the warm-up's last step, then
        every ``every`` steps): a function of the step alone, so every process agrees."""
        done = step - self.first - self.warmup
        return done >= 0 and done % self.every == 0

    def end(self, step: int, current_end: int) -> int:
        """The schedule's end to use after ``step`` (``current_end`` if not re-estimated)."""
        if not self.due(step):
            return current_end
        now = self.clock()
        if step - self.first == self.warmup:
            self.mark = (step, now)
            return current_end
        rate = (step - self.mark[0]) / max(now - self.mark[1], 1e-9)
        left = self.budget * (1.0 - self.margin) - (now - self.t0)
        return int(min(self.total, max(step + 1, step + math.floor(rate * max(left, 0.0)))))


class Trainer:
    """Holds the networks, optimisers and data of one run; ``run()`` trains to the end of the
    schedule (``run_length``, possibly shortened by a time budget)."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        discriminator: torch.nn.Module,
        dataset,
        mocap: tuple[torch.Tensor, torch.Tensor],
        device: torch.device,
        dist_info: DistInfo | None = None,
        ranges: Ranges | None = None,
        log=print,
    ):
        self.cfg, self.device = cfg, device
        self.dist = dist_info or DistInfo()
        self.dataset = dataset
        self.mocap_pose, self.mocap_betas = mocap
        self.ranges = ranges or Ranges()
        self.log = log
        self.step = 0
        self.skipped = 0
        self.total_steps = run_length(cfg, len(dataset), self.dist.world_size)
        self.schedule_steps = self.total_steps  # where the lr schedule ends (a budget may
        # shorten it)
        # Theta_0 as built (the mocap mean), before training moves it: the mean-pose baseline
        # evaluation compares with, kept in every checkpoint so it never depends on whether
        # the mocap file is still where it was.
        init = getattr(model, "init_theta", None)
        self.initial_theta = None if init is None else init.detach().float().cpu().clone()
        self.step_fn = TrainStep(cfg, model, discriminator, device, self.dist, self.ranges)
        self.ranges.attach(getattr(model, "encoder", None), "backbone")
        self.ranges.attach(getattr(model, "smpl", None), "smpl")

    model = property(lambda self: self.step_fn.model)
    disc = property(lambda self: self.step_fn.disc)
    e_opt = property(lambda self: self.step_fn.e_opt)
    d_opt = property(lambda self: self.step_fn.d_opt)

    # ---- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "format": "hmr-fast/1",
            "model": self.model.state_dict(),
            "discriminator": self.disc.state_dict(),
            "encoder_optimizer": self.e_opt.state_dict(),
            "discriminator_optimizer": self.d_opt.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "schedule_steps": self.schedule_steps,
            "skipped": self.skipped,
            "rng": ckpt.rng_state(),
            # The data order is a function of (seed, step): the sampler resumes at `step`.
            "sampler": {"seed": self.cfg.seed, "position": self.step},
            "config": self.cfg.to_dict(),
            "initial_theta": self.initial_theta,
        }

    def load_state_dict(self, state: dict, source="checkpoint") -> None:
        saved = state.get("config", {})
        for key in ARCH_KEYS:
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(
                    f"{source} was trained with {key}={saved[key]!r} but this run uses "
                    f"{key}={getattr(self.cfg, key)!r}; pass --{key.replace('_', '-')} "
                    f"{saved[key]} (or start a new --out)"
                )
        ckpt.load_model_weights(self.model, state["model"], "model", source)
        ckpt.load_model_weights(self.disc, state["discriminator"], "discriminator", source)
        self.e_opt.load_state_dict(state["encoder_optimizer"])
        self.d_opt.load_state_dict(state["discriminator_optimizer"])
        if state.get("initial_theta") is not None:
            self.initial_theta = state["initial_theta"]
        self.step = int(state["step"])
        # A schedule a time budget shortened stays short when the run resumes with the same
        # length; a run resumed with another length (--steps) follows that one.
        if state.get("total_steps") == self.total_steps and "schedule_steps" in state:
            self.schedule_steps = int(state["schedule_steps"])
        self.skipped = int(state.get("skipped", 0))
        if self.dist.is_main:
            ckpt.set_rng_state(state["rng"])
        else:  # other ranks: fresh but deterministic streams
            seed_everything(self.cfg.seed * 1000003 + self.dist.rank * 7919 + self.step)
    # ---- one step -------------------------------------------------------------------------

    def _mocap_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.mocap_pose)
        sampler = StepSampler(
            n,
            self.cfg.batch_size * self.cfg.num_iters,
            self.cfg.seed,
            step,
            step + 1,
            self.dist.rank,
            self.dist.world_size,
            stream=1,
        )
        idx = torch.as_tensor(sampler.indices(step))
        return (
            self.mocap_pose[idx].to(self.device, non_blocking=True),
            self.mocap_betas[idx].to(self.device, non_blocking=True),
        )
    def train_step(self, batch: dict, real: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """One encoder + one discriminator update at this step's learning rates."""
        return self.step_fn(batch, real, lr_factor(self.cfg, self.step, self.schedule_steps))

    # ---- the loop -------------------------------------------------------------------------

    def run(self, out_dir: Path, writer=None, progress: bool = True) -> dict:
        """Train from ``self.step`` to the end of the schedule. A time budget (``minutes``)
        ends the run in time: the schedule is fitted to the measured speed (``ScheduleFit``),
        and the run stops at the limit regardless, with a checkpoint at the step reached."""
        cfg, dist_info = self.cfg, self.dist
        time_limit = None if cfg.minutes is None else 60.0 * cfg.minutes
        fit = None if time_limit is None else ScheduleFit(
            time_limit, self.step, self.total_steps)
        from hmr_fast.data.datasets import MixedDataset

        sampler = StepSampler(
            len(self.dataset),
            cfg.batch_size,
            cfg.seed,
            self.step,
            self.total_steps,
            dist_info.rank,
            dist_info.world_size,
            # MixedDataset shuffles inside and keeps the 2D/3D ratio exact over runs of
            # consecutive indices: read it sequentially.
            shuffle=not isinstance(self.dataset, MixedDataset),
        )
        loader = torch.utils.data.DataLoader(
            EpochIndexed(self.dataset),
            batch_sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # Own generator: creating the iterator must not consume the global torch RNG.
            generator=torch.Generator().manual_seed(cfg.seed * 100003 + self.step),
            persistent_workers=False,
        )
        metrics_path = out_dir / "metrics.jsonl"
        ckpt_dir = out_dir / "checkpoints"
        bar = None
        if dist_info.is_main and progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.schedule_steps,
                initial=self.step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                mininterval=1.0,
                file=sys.stderr,
            )
        metrics_file = open(metrics_path, "a") if dist_info.is_main else None
        last, t_last, n_images = {}, time.perf_counter(), 0
        start_step = self.step
        # Shared CPU: fewer threads while other processes are busy (one process per machine).
        governor = ThreadGovernor(self.log) if (
            self.device.type == "cpu" and not dist_info.enabled) else None
        t_start = time.perf_counter()
        try:
            it = iter(loader)
            while self.step < self.schedule_steps:
                with self.ranges("data"):
                    batch = next(it)
                    real = self._mocap_batch(self.step)
                self.skipped += batch_skipped(batch)
                lr_scale = lr_factor(cfg, self.step, self.schedule_steps)
                rec = self.step_fn(batch, real, lr_scale)
                self.step += 1
                n_images += len(batch["img"]) * dist_info.world_size
                if not all(math.isfinite(v) for v in rec.values()):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {rec}")
                if dist_info.is_main:
                    now = time.perf_counter()
                    ips = n_images / max(now - t_last, 1e-9)
                    last = {"step": self.step, **rec, "lr_scale": lr_scale,
                            "skipped": self.skipped}
                    metrics_file.write(json.dumps(last) + "\n")
                    metrics_file.flush()
                    if writer is not None:
                        for k, v in rec.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/images_per_s", ips, self.step)
                        if cfg.log_images_every and self.step % cfg.log_images_every == 0:
                            self._log_images(writer, batch)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            loss=f"{rec['loss']:.3f}", d=f"{rec['d_loss']:.3f}", img_s=f"{ips:.0f}"
                        )
                    if now - t_last > 5.0:
                        t_last, n_images = now, 0
                if governor is not None:
                    governor.poll()
                if fit is not None and fit.due(self.step):  # a collective only when due
                    end = broadcast_int(fit.end(self.step, self.schedule_steps), dist_info,
                                        self.device)
                    if end != self.schedule_steps:
                        if dist_info.is_main and bar is not None:
                            bar.total = end
                        self.schedule_steps = end
                out_of_time = time_limit is not None and agree(
                    time.perf_counter() - t_start > time_limit, dist_info, self.device
                )
                finished = self.step >= self.schedule_steps
                if self.step % cfg.ckpt_every == 0 or finished or out_of_time:
                    if dist_info.is_main:
                        metrics_file.flush()
                        ckpt.save_checkpoint(
                            self.state_dict(), ckpt_dir, self.step, keep=cfg.keep_checkpoints
                        )
                if out_of_time:
                    break
        finally:
            if governor is not None:
                torch.set_num_threads(governor.requested)
            if bar is not None:
                bar.close()
            if metrics_file is not None:
                metrics_file.close()
        elapsed = time.perf_counter() - t_start
        steps_done = self.step - start_step
        return {
            "step": self.step,
            "schedule_steps": self.schedule_steps,
            "total_steps": self.total_steps,
            "last": last,
            "skipped": self.skipped,
            "seconds": elapsed,
            "images_per_s": steps_done * cfg.batch_size * dist_info.world_size / max(elapsed, 1e-9),
        }

    @torch.no_grad()
    def _log_images(self, writer, batch: dict, n: int = 4) -> None:
        """Predicted meshes drawn over the first ``n`` inputs (TensorBoard)."""
        from hmr_fast.demo import model_faces, overlay_batch

        images = batch["img"][:n].to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(images, return_verts=True)
        finally:
            self.model.train(was_training)
        grid = overlay_batch(images, out["vertices"], out["cam"], model_faces(self.model))
        writer.add_images("train/meshes", grid, self.step, dataformats="NHWC")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    ckpt.atomic_save_text(path, "".join(s + "\n" for s in keep))
