"""`hmr-fast train`: adversarial HMR training (encoder + SMPL + pose/shape discriminator).

One step, as in the original HMR code:

1. encoder step: images -> T iterations of Theta. Losses on the final iteration: 2D keypoints
   (always) and, unless ``use_3d`` is off, SMPL parameters (masked by ``has_smpl``) and 3D
   joints (masked by ``has_3d``). Adversarial loss on the Thetas of *all* T iterations,
   concatenated, through the discriminator (whose weights this step does not update).
2. discriminator step: a real mocap batch (``batch_size * T`` samples) against the detached
   fakes of all T iterations.

Reproducibility: the data order is a pure function of (seed, step, rank) (``StepSampler``), and
a checkpoint stores the model, discriminator, both optimisers, the step and every global RNG
state, so that a run resumed on CPU with ``workers=0`` logs the same losses as an uninterrupted
one. Under ``torchrun`` each process trains on its own shard of every global batch (DDP); only
rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hmr_fast.data.formats import find_annotation_file  # noqa: F401  (also used by eval)
from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.config import (
    FIELD_TYPES,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    unknown_key_error,
)

# Config keys that define the network's shape: a checkpoint only fits a model built with the
# same values.
ARCH_KEYS = ("backbone", "image_size", "num_iters")


# --------------------------------------------------------------------------------------------
# process group / device


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str = "auto") -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (RANK / WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def resolve_device(pref: str, dist_info: DistInfo) -> torch.device:
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available")
    if pref.startswith("cuda:"):
        return torch.device(pref)
    return torch.device("cuda", dist_info.local_rank)


# --------------------------------------------------------------------------------------------
# timing / NVTX


class _TorchNvtx:
    """The ``nvtx`` package's two calls on torch's bindings (no-ops without CUDA)."""

    @staticmethod
    def push_range(name):
        if torch.cuda.is_available():
            torch.cuda.nvtx.range_push(name)

    @staticmethod
    def pop_range():
        if torch.cuda.is_available():
            torch.cuda.nvtx.range_pop()


class Ranges:
    """NVTX ranges around the parts of a step, optionally timed (wall clock, CUDA-synced).

    ``ranges("data")`` is a context manager; ``attach(module, name)`` opens the range around a
    submodule's forward through hooks (the SMPL layer lives inside the model's forward).
    """

    def __init__(self, timed: bool = False, device: torch.device | None = None):
        try:
            import nvtx
        except ImportError:  # optional at run time: fall back to torch's NVTX bindings
            nvtx = _TorchNvtx()
        self._nvtx = nvtx
        self.timed = timed
        self.sync = timed and device is not None and device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._open: dict[str, list[float]] = {}

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _start(self, name):
        self._nvtx.push_range(name)
        if self.timed:
            self._open.setdefault(name, []).append(self._now())

    def _stop(self, name):
        if self.timed:
            t0 = self._open[name].pop()
            self.totals[name] = self.totals.get(name, 0.0) + self._now() - t0
        self._nvtx.pop_range()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._start(name)
        try:
            yield
        finally:
            self._stop(name)

    def attach(self, module: torch.nn.Module | None, name: str) -> None:
        if module is None:
            return
        module.register_forward_pre_hook(lambda *_: self._start(name))
        module.register_forward_hook(lambda *_: self._stop(name))

    def reset(self) -> None:
        self.totals = {}


# --------------------------------------------------------------------------------------------
# data


class StepSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) pairs as a pure function of (seed, step, rank).

    The global batch of step s is positions ``s*G .. s*G+G-1`` (G = batch * world) of an
    endless stream of epochs, epoch e being ``default_rng([seed, stream, e]).permutation(N)``
    (or ``0..N-1`` with ``shuffle=False``, for datasets that shuffle inside, like
    MixedDataset); rank r takes positions ``r*batch ..`` of it (the DistributedSampler
    split). Starting at any step therefore gives exactly the batches an uninterrupted run
    would have seen. The epoch travels with the index so that the dataset keys its
    augmentation by it (``EpochIndexed``), also inside DataLoader workers.
    """

    def __init__(
        self, n, batch_size, seed, start_step, num_steps, rank=0, world=1, stream=0, shuffle=True
    ):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.batch, self.seed, self.stream = n, batch_size, seed, stream
        self.start, self.stop = start_step, num_steps
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.stream, epoch])
                self._perms[epoch] = rng.permutation(self.n)
            else:
                self._perms[epoch] = np.arange(self.n)
        return self._perms[epoch]

    def pairs(self, step: int) -> list[tuple[int, int]]:
        """(epoch, index) of this rank's samples at ``step``."""
        first = step * self.batch * self.world + self.rank * self.batch
        pos = np.arange(first, first + self.batch)
        return [(int(p // self.n), int(self._perm(int(p // self.n))[p % self.n])) for p in pos]

    def indices(self, step: int) -> list[int]:
        return [i for _, i in self.pairs(step)]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.pairs(step)

    def __len__(self):
        return max(0, self.stop - self.start)


class EpochIndexed(torch.utils.data.Dataset):
    """Wraps a dataset with ``set_epoch`` so that it is indexed by (epoch, index) pairs."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, pair):
        epoch, index = pair
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def per_dataset(values: list, n: int, name: str) -> list:
    """One value per --data entry: ``values`` empty (None each), one (shared) or n."""
    values = list(values)
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(
            f"{name}: give one value for all {n} data entries or one per entry, got "
            f"{len(values)} ({', '.join(map(str, values))})"
        )
    return values


def dataset_sources(cfg: TrainConfig) -> list[tuple[Path, Path, str | None]]:
    """(annotation npz, image root, cache dir or "auto" or None) of every --data entry.

    The image root is ``image_root`` (one for all or one per entry) or the entry's folder;
    the cache is used only when ``image_cache`` names it ("auto": each npz's ``X_cache/``).
    """
    roots = per_dataset(cfg.image_root, len(cfg.data), "image_root")
    caches = [None] * len(cfg.data)
    if cfg.image_cache == "auto":
        caches = ["auto"] * len(cfg.data)
    elif cfg.image_cache:
        caches = per_dataset(cfg.image_cache.split(","), len(cfg.data), "image_cache")
    out = []
    for d, root, cache in zip(cfg.data, roots, caches):
        npz = find_annotation_file(d)
        root = Path(root) if root else (Path(d) if Path(d).is_dir() else npz.parent)
        if not root.is_dir():
            raise FileNotFoundError(f"image root {root} (for data {d}) is not a directory")
        out.append((npz, root, (cache.strip() or None) if cache else None))
    return out


def build_train_dataset(cfg: TrainConfig):
    """KeypointDatasets of every --data entry, mixed 2D/3D by ``ratio_3d``."""
    from hmr_fast.data.augment import AugConfig
    from hmr_fast.data.datasets import KeypointDataset, MixedDataset, probe_image_root

    if not cfg.data:
        raise ValueError("no training data: pass --data DIR[,DIR...] (see `hmr-fast synth`)")
    sets_2d, sets_3d = [], []
    for npz, root, cache in dataset_sources(cfg):
        ds = KeypointDataset(
            npz,
            root,
            image_size=cfg.image_size,
            train=True,
            aug=AugConfig(flip_prob=cfg.flip_prob),
            cache_dir=cache,
            seed=cfg.seed,
        )
        probe_image_root(ds)
        (sets_3d if cfg.use_3d and _has_3d_labels(ds) else sets_2d).append(ds)
    if len(sets_2d) + len(sets_3d) == 1:
        return (sets_2d + sets_3d)[0]
    return MixedDataset(sets_2d, sets_3d, ratio_3d=cfg.ratio_3d, seed=cfg.seed)


def _has_3d_labels(ds) -> bool:
    """A dataset with any 3D joints or SMPL parameters goes in MixedDataset's 3D group."""
    return bool(ds.has_S) or bool(np.any(ds.ann["has_smpl"][ds.rows] > 0))


def invalid_rows_of(dataset) -> int:
    """Rows the dataset(s) dropped at construction (unusable centre / scale)."""
    if hasattr(dataset, "datasets_2d"):
        return sum(invalid_rows_of(d) for d in dataset.datasets_2d + dataset.datasets_3d)
    return int(getattr(dataset, "num_invalid_rows", 0))


def label_counts_of(dataset) -> dict:
    """Labels the dataset(s) removed as non-finite, summed: {reason: count}."""
    parts = dataset.datasets_2d + dataset.datasets_3d if hasattr(dataset, "datasets_2d") else [
        dataset
    ]
    total: dict = {}
    for d in parts:
        for k, v in getattr(d, "label_counts", {}).items():
            total[k] = total.get(k, 0) + int(v)
    return total


def build_mocap(cfg: TrainConfig):
    """(pose (M,72), betas (M,10)) float32 tensors of the mocap prior."""
    if not cfg.mocap:
        raise ValueError(
            "no mocap file: pass --mocap FILE (e.g. from `hmr-fast synth-mocap --out FILE`)"
        )
    path = Path(cfg.mocap)
    if not path.is_file():
        raise FileNotFoundError(f"mocap file not found: {path}")
    from hmr_fast.data.mocap import MocapDataset

    ds = MocapDataset([path])
    pose, betas = ds.pose.float(), ds.betas.float()
    return pose, betas


def collate(items: list[dict]) -> dict:
    """Stack a list of dataset items (tensors / numbers; strings kept as lists)."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(vals[0], (bool, int, float, np.number, np.bool_)):
            out[key] = torch.as_tensor(np.asarray(vals))
        else:
            out[key] = vals
    return out


# --------------------------------------------------------------------------------------------
# model


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


def split_fakes(thetas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Body pose (T*B, 69) and betas (T*B, 10) of every iteration's Theta, concatenated."""
    from hmr_fast.models.hmr import split_theta

    poses, betas = [], []
    for theta in thetas:
        _, pose, shape = split_theta(theta)
        poses.append(pose[:, 3:])
        betas.append(shape)
    return torch.cat(poses), torch.cat(betas)


# --------------------------------------------------------------------------------------------
# the trainer


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of both base learning rates at ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant or a cosine decay reaching 0 at ``steps``. A function of
    the step alone, so a resumed run follows the same schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return 1.0


def make_adam(params, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with L2 weight decay (as the original's), the fused kernel where torch has one
    (CPU and CUDA: ~10x faster than the per-tensor loop on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class Trainer:
    """Holds the networks, optimisers and data of one run; ``run()`` trains to ``cfg.steps``.

    ``model`` / ``discriminator`` may be any modules with HMR's / the discriminator's
    interface (tests use small stand-ins).
    """

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
        from hmr_fast import losses

        self.cfg, self.device = cfg, device
        self.dist = dist_info or DistInfo()
        self.losses = losses
        self.model, self.disc = model, discriminator
        self.dataset = dataset
        self.mocap_pose, self.mocap_betas = mocap
        self.ranges = ranges or Ranges()
        self.log = log
        self.step = 0
        self.skipped = 0
        # Theta_0 as built (the mocap mean), before training moves it: the mean-pose baseline
        # evaluation compares with, kept in every checkpoint so it never depends on whether
        # the mocap file is still where it was.
        init = getattr(model, "init_theta", None)
        self.initial_theta = None if init is None else init.detach().float().cpu().clone()
        self.e_opt = make_adam(model.parameters(), cfg.encoder_lr, cfg.encoder_weight_decay)
        self.d_opt = make_adam(discriminator.parameters(), cfg.disc_lr, cfg.disc_weight_decay)
        self.ranges.attach(getattr(model, "encoder", None), "backbone")
        self.ranges.attach(getattr(model, "smpl", None), "smpl")
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.model_ddp = DDP(model, device_ids=ids)
            self.disc_ddp = DDP(discriminator, device_ids=ids)
        else:
            self.model_ddp, self.disc_ddp = model, discriminator
        self.amp = cfg.amp

    # ---- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "format": "hmr-fast/1",
            "model": self.model.state_dict(),
            "discriminator": self.disc.state_dict(),
            "encoder_optimizer": self.e_opt.state_dict(),
            "discriminator_optimizer": self.d_opt.state_dict(),
            "step": self.step,
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
        self.skipped = int(state.get("skipped", 0))
        if self.dist.is_main:
            ckpt.set_rng_state(state["rng"])
        else:  # other ranks: fresh but deterministic streams
            _seed_everything(self.cfg.seed * 1000003 + self.dist.rank * 7919 + self.step)

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

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: dict, real: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """One encoder + one discriminator update; returns the logged loss values (floats)."""
        cfg, L, R = self.cfg, self.losses, self.ranges
        dev = self.device
        factor = lr_factor(cfg, self.step)
        for opt, base in ((self.e_opt, cfg.encoder_lr), (self.d_opt, cfg.disc_lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        images = batch["img"].to(dev, non_blocking=True)
        kp2d = batch["keypoints_2d"].to(dev, non_blocking=True)
        self.model.train()
        self.disc.train()
        # -- encoder step
        with self._autocast():
            with R("encoder"):
                out = self.model_ddp(images)
            with R("losses"):
                terms = {"kp_2d": L.keypoint_2d_loss(out["keypoints_2d"].float(), kp2d)}
                if cfg.use_3d:
                    has_smpl = batch["has_smpl"].to(dev).float()
                    has_3d = batch["has_3d"].to(dev).float()
                    terms["smpl"] = L.smpl_param_loss(
                        out["rotmats"].float(),
                        out["betas"].float(),
                        batch["pose"].to(dev).float(),
                        batch["betas"].to(dev).float(),
                        has_smpl,
                    )
                    terms["joints_3d"] = L.joints_3d_loss(
                        out["keypoints_3d"][:, :14].float(),
                        batch["keypoints_3d"].to(dev).float(),
                        has_3d,
                    )
                fake_pose, fake_betas = split_fakes([t.float() for t in out["thetas"]])
            with R("discriminator"):
                self.disc.requires_grad_(False)
                try:
                    d_fake_enc = self.disc(fake_pose, fake_betas)
                finally:
                    self.disc.requires_grad_(True)
            with R("losses"):
                terms["adv"] = L.encoder_adversarial_loss(d_fake_enc.float())
                weights = {
                    "kp_2d": cfg.keypoint_weight,
                    "smpl": cfg.smpl_weight,
                    "joints_3d": cfg.joints_3d_weight,
                    "adv": cfg.adversarial_weight,
                }
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

    # ---- the loop -------------------------------------------------------------------------

    def run(
        self, out_dir: Path, writer=None, progress: bool = True, time_limit: float | None = None
    ) -> dict:
        """Train from ``self.step`` to ``cfg.steps`` (or until ``time_limit`` seconds have
        passed; a checkpoint is then written at the step reached)."""
        cfg, dist_info = self.cfg, self.dist
        from hmr_fast.data.datasets import MixedDataset

        sampler = StepSampler(
            len(self.dataset),
            cfg.batch_size,
            cfg.seed,
            self.step,
            cfg.steps,
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
                total=cfg.steps,
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
        t_start = time.perf_counter()
        try:
            it = iter(loader)
            while self.step < cfg.steps:
                with self.ranges("data"):
                    batch = next(it)
                    real = self._mocap_batch(self.step)
                self.skipped += _batch_skipped(batch)
                rec = self.train_step(batch, real)
                self.step += 1
                n_images += len(batch["img"]) * dist_info.world_size
                if not all(math.isfinite(v) for v in rec.values()):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {rec}")
                if dist_info.is_main:
                    now = time.perf_counter()
                    ips = n_images / max(now - t_last, 1e-9)
                    last = {"step": self.step, **rec, "skipped": self.skipped}
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
                out_of_time = time_limit is not None and _agree(
                    time.perf_counter() - t_start > time_limit, dist_info, self.device
                )
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or out_of_time:
                    if dist_info.is_main:
                        metrics_file.flush()
                        ckpt.save_checkpoint(
                            self.state_dict(), ckpt_dir, self.step, keep=cfg.keep_checkpoints
                        )
                if out_of_time:
                    break
        finally:
            if bar is not None:
                bar.close()
            if metrics_file is not None:
                metrics_file.close()
        elapsed = time.perf_counter() - t_start
        steps_done = self.step - start_step
        return {
            "step": self.step,
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


def _agree(flag: bool, dist_info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision, so that every process stops at the same step."""
    if not dist_info.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)  # NCCL broadcasts device tensors only
    dist.broadcast(t, 0)
    return bool(t.item())


def _batch_skipped(batch: dict) -> int:
    """Bad rows the dataset skipped while producing this batch (0 if it does not report)."""
    val = batch.get("skipped")
    if val is None:
        return 0
    if isinstance(val, torch.Tensor):
        return int(val.sum())
    return int(np.sum(val))


def _seed_everything(seed: int) -> None:
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# entry points


def _truncate_metrics(path: Path, step: int) -> None:
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


def train(
    cfg: TrainConfig,
    resume: bool | str = False,
    progress: bool = True,
    log=None,
    time_limit: float | None = None,
    from_scratch_reason: str | None = None,
) -> dict:
    """Train according to ``cfg``; returns a summary dict (step, last metrics, paths, ...).

    ``resume``: False (refuse to reuse an --out that already holds checkpoints), True (newest
    complete checkpoint in ``cfg.out``) or a checkpoint path. ``from_scratch_reason``: why a
    run without ``pretrained`` weights is deliberate (printed instead of the warning).
    """
    dist_info = setup_distributed(cfg.device)
    device = resolve_device(cfg.device, dist_info)
    say = (log or print) if dist_info.is_main else (lambda *a, **k: None)
    out_dir = Path(cfg.out)
    ckpt_dir = out_dir / "checkpoints"
    state, source, passed_over = None, None, []
    if resume:
        source = (
            ckpt.resolve_checkpoint(resume, passed_over)
            if isinstance(resume, (str, Path))
            else ckpt.latest_checkpoint(ckpt_dir, passed_over)
        )
        if source is None:
            raise FileNotFoundError(
                f"--resume: no complete checkpoint in {ckpt_dir}"
                + (f" ({ckpt.skipped_message(passed_over)})" if passed_over else "")
            )
        state = ckpt.load_checkpoint(source)
        if dist_info.is_main:
            ckpt.remove_partial_files(ckpt_dir)
    elif dist_info.is_main and ckpt.list_checkpoints(ckpt_dir):
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --out"
        )
    for d in cfg.data:
        if not Path(d).exists():
            raise FileNotFoundError(f"data directory not found: {d}")
    if cfg.mocap and not Path(cfg.mocap).is_file():
        raise FileNotFoundError(f"mocap file not found: {cfg.mocap}")
    if dist_info.is_main:  # a read-only --out fails here, named, not after the first steps
        from hmr_fast.data.fileio import check_writable

        check_writable(ckpt_dir / "ckpt.pt", "run directory's checkpoints")

    _seed_everything(cfg.seed + dist_info.rank)
    backend = backends_for(cfg, device)
    if device.type == "cpu":
        say("hmr-fast train: on CPU: SMPL and discriminator use the torch backends")
    elif not cfg.fused:
        say("hmr-fast train: --no-fused: SMPL and discriminator use the torch backends")
    else:
        say("hmr-fast train: fused path: Triton SMPL and discriminator")
    if cfg.amp:
        say(f"hmr-fast train: bf16 autocast on {device.type} (SMPL, Theta, losses in fp32)")
    if not cfg.pretrained and not resume:
        say("hmr-fast train: encoder from random weights: " + (from_scratch_reason or (
            "WARNING: the paper starts from an ImageNet-pretrained ResNet-50; pass "
            "--pretrained FILE (torchvision's weights) or --pretrained hub (torch's hub "
            "cache). Nothing is downloaded.")))
    dataset = build_train_dataset(cfg)
    mocap = build_mocap(cfg)
    model = build_model(cfg, device, backend)
    disc = build_discriminator(device, backend)
    trainer = Trainer(cfg, model, disc, dataset, mocap, device, dist_info, log=say)
    if state is not None:
        trainer.load_state_dict(state, source)
        for path, reason in passed_over:  # never fall back to an older one silently
            say(f"hmr-fast train: --resume: skipped the newer checkpoint {path}: {reason}")
        say(f"hmr-fast train: resumed from {source} at step {trainer.step}")
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out_dir / "metrics.jsonl", trainer.step)
        ckpt.atomic_save_text(out_dir / "config.yaml", _to_yaml(cfg))
    writer = None
    if dist_info.is_main and cfg.log_images_every >= 0:
        writer = _make_writer(out_dir / "tb")
    say(
        f"hmr-fast train: {cfg.backbone} {cfg.image_size}px T={cfg.num_iters}, "
        f"{len(dataset)} samples, batch {cfg.batch_size} x {dist_info.world_size} process(es), "
        f"device {device}, steps {trainer.step}->{cfg.steps}, out {out_dir}"
    )
    try:
        summary = trainer.run(out_dir, writer=writer, progress=progress, time_limit=time_limit)
    finally:
        if writer is not None:
            writer.close()
    summary.update(out=str(out_dir), device=str(device), backend=backend)
    last = ckpt.list_checkpoints(ckpt_dir)
    summary["checkpoint"] = str(last[-1][1]) if last else None
    summary["invalid_rows"] = invalid_rows_of(dataset)
    summary["unlabelled"] = label_counts_of(dataset)
    if summary["skipped"] or summary["invalid_rows"] or any(summary["unlabelled"].values()):
        lost = summary["unlabelled"]
        say(
            f"hmr-fast train: skipped bad data: {summary['invalid_rows']} annotation rows with "
            f"a non-finite or non-positive centre/scale (dropped), {summary['skipped']} "
            "unreadable or truncated images (replaced by other rows); non-finite labels "
            f"removed: {lost.get('invalid_joints_2d', 0)} 2D joints, "
            f"{lost.get('invalid_joints_3d', 0)} 3D joints, "
            f"{lost.get('invalid_smpl_rows', 0)} SMPL rows"
        )
    say(
        f"hmr-fast train: done at step {summary['step']} "
        f"({summary['images_per_s']:.1f} images/s); checkpoint {summary['checkpoint']}"
    )
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


def _make_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(path))


def _to_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# CLI flag -> config key (flags without a value set booleans).
FLAG_KEYS = {
    "data": "data",
    "mocap": "mocap",
    "steps": "steps",
    "batch_size": "batch_size",
    "backbone": "backbone",
    "image_size": "image_size",
    "seed": "seed",
    "ckpt_every": "ckpt_every",
    "out": "out",
    "workers": "workers",
    "lr": "encoder_lr",
    "disc_lr": "disc_lr",
    "log_images_every": "log_images_every",
    "num_iters": "num_iters",
    "pretrained": "pretrained",
    "device": "device",
    "image_root": "image_root",
    "image_cache": "image_cache",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hmr-fast train",
        description="Train HMR. Defaults: hmr_fast/configs/default.yaml (the paper's).",
        allow_abbrev=False,
    )
    p.add_argument("--config", help="YAML file overriding the defaults")
    p.add_argument("--data", help="NPZ|DIR[,...]: annotation .npz files or folders holding one")
    p.add_argument(
        "--image-root",
        help="DIR[,DIR...]: folder(s) imgname is relative to, one for all --data or one each "
        "(default: each --data entry's folder)",
    )
    p.add_argument(
        "--image-cache",
        help="pre-cropped caches (hmr-fast cache-data): auto (each npz's X_cache/) or "
        "DIR[,DIR...] one per --data entry; default: none",
    )
    p.add_argument("--mocap", help="mocap .npz for the discriminator (hmr-fast synth-mocap)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--backbone", help="resnet50 | resnet34 | resnet18")
    p.add_argument("--image-size", type=int)
    p.add_argument("--num-iters", type=int, help="T, iterative feedback steps")
    p.add_argument("--pretrained", help="torchvision ImageNet weights file for the backbone, or "
                   "'hub' for torchvision's file in torch's hub cache (nothing is downloaded)")
    p.add_argument("--seed", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--out", help="run directory (metrics.jsonl, checkpoints/, tb/)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from the newest checkpoint in --out (or from the given file)",
    )
    p.add_argument("--fused", dest="fused", action="store_true", default=None)
    p.add_argument("--no-fused", dest="fused", action="store_false")
    p.add_argument("--no-3d", dest="use_3d", action="store_false", default=None)
    p.add_argument("--amp", action="store_true", default=None)
    p.add_argument("--workers", type=int)
    p.add_argument("--lr", type=float, help="encoder learning rate")
    p.add_argument("--disc-lr", type=float, help="discriminator learning rate")
    p.add_argument("--log-images-every", type=int)
    p.add_argument("--device", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    """Parsed args and the config overrides they imply. Unknown flags: ValueError + hints."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [a for a in parser._option_string_actions if a.startswith("--")]
        bad = unknown[0].split("=")[0]
        raise unknown_key_error(bad, flags, "option")
    overrides = {}
    for flag, key in FLAG_KEYS.items():
        val = getattr(args, flag)
        if val is not None:
            overrides[key] = val
    for key in ("fused", "use_3d", "amp"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in FIELD_TYPES:
            raise unknown_key_error(key, FIELD_TYPES)
        overrides[key] = value
    return args, overrides


def config_for(args: argparse.Namespace, overrides: dict) -> TrainConfig:
    """The run's config; on --resume the checkpoint's config is the base, so that its
    backbone, data, ... need not be repeated (an explicit, different backbone is an error)."""
    cfg = load_config(args.config, overrides)
    if not args.resume:
        return cfg
    ckpt_dir = Path(cfg.out) / "checkpoints"
    target = (
        ckpt.resolve_checkpoint(args.resume)
        if isinstance(args.resume, str)
        else ckpt.latest_checkpoint(ckpt_dir)
    )
    if target is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {ckpt_dir}")
    base = config_from_dict(ckpt.load_checkpoint(target)["config"])
    if args.config:
        base = apply_overrides(base, _yaml_mapping(args.config))
    return apply_overrides(base, overrides)


def _yaml_mapping(path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return yaml.safe_load(path.read_text()) or {}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        cfg = config_for(args, overrides)
        train(cfg, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"hmr-fast train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
