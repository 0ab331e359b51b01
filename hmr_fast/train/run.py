"""``train(cfg)``: one training run set up, checked, trained and summarised.

The pieces, one job a file: ``config`` (every setting), ``distributed`` (process group),
``data`` (datasets and mocap), ``build`` (networks), ``step`` (losses and the two updates),
``loop`` (logging, checkpoints, time budget), ``checkpoint`` (atomic files, exact resume),
``cli`` (``hmr-fast train``).
"""

from __future__ import annotations

from pathlib import Path

from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.build import backends_for, build_discriminator, build_model
from hmr_fast.train.config import TrainConfig, render_yaml
from hmr_fast.train.data import (
    build_mocap,
    build_train_dataset,
    invalid_rows_of,
    label_counts_of,
    skipped_data_message,
)
from hmr_fast.train.distributed import finish, resolve_device, setup_distributed
from hmr_fast.train.loop import Trainer, seed_everything, truncate_metrics
from hmr_fast.train.threads import thread_advice

PRETRAINED_WARNING = (
    "WARNING: the paper starts from an ImageNet-pretrained ResNet-50; pass --pretrained FILE "
    "(torchvision's weights) or --pretrained hub (torch's hub cache). Nothing is downloaded."
)


def train(
    cfg: TrainConfig,
    resume: bool | str = False,
    progress: bool = True,
    log=None,
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

    seed_everything(cfg.seed + dist_info.rank)
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
        say("hmr-fast train: encoder from random weights: "
            + (from_scratch_reason or PRETRAINED_WARNING))
    if device.type == "cpu":
        advice = thread_advice()
        if advice:
            say("hmr-fast train: " + advice)
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
        truncate_metrics(out_dir / "metrics.jsonl", trainer.step)
        ckpt.atomic_save_text(out_dir / "config.yaml", render_yaml(cfg))
    writer = None
    if dist_info.is_main and cfg.log_images_every >= 0:
        writer = _make_writer(out_dir / "tb")
    say(
        f"hmr-fast train: {cfg.backbone} {cfg.image_size}px T={cfg.num_iters}, "
        f"{len(dataset)} samples, batch {cfg.batch_size} x {dist_info.world_size} process(es), "
        f"device {device}, steps {trainer.step}->{trainer.total_steps}"
        + ("" if cfg.steps else f" ({cfg.epochs:g} epochs)")
        + (f", time budget {cfg.minutes:g} min" if cfg.minutes else "")
        + f", out {out_dir}"
    )
    try:
        summary = trainer.run(out_dir, writer=writer, progress=progress)
    finally:
        if writer is not None:
            writer.close()
    summary.update(out=str(out_dir), device=str(device), backend=backend)
    last = ckpt.list_checkpoints(ckpt_dir)
    summary["checkpoint"] = str(last[-1][1]) if last else None
    summary["invalid_rows"] = invalid_rows_of(dataset)
    summary["unlabelled"] = label_counts_of(dataset)
    message = skipped_data_message(
        summary["invalid_rows"], summary["skipped"], summary["unlabelled"])
    if message:
        say("hmr-fast train: " + message)
    shortened = ""
    if summary["schedule_steps"] < summary["total_steps"]:
        shortened = (f"; the time budget shortened the schedule to {summary['schedule_steps']} "
                     f"of {summary['total_steps']} steps")
    say(
        f"hmr-fast train: done at step {summary['step']} "
        f"({summary['images_per_s']:.1f} images/s{shortened}); checkpoint "
        f"{summary['checkpoint']}"
    )
    finish(dist_info)
    return summary


def _make_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(path))
