"""`hmr-fast demo-job` (`make demo`): the whole pipeline on a fresh machine, CPU only.

1. synthesise a training set, a held-out set and a mocap file (``hmr_fast.data.synth*``);
2. train HMR from scratch for a few minutes (ResNet-18 at low resolution: no downloads);
3. evaluate on the held-out images: MPJPE and PA-MPJPE beside the mean-pose baseline (every
   sample predicted as Theta_0, the mean of the mocap poses);
4. render a few predictions over their crops to PNG.

``--tiny`` shrinks every stage to a smoke test of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hmr_fast.train.config import CONFIG_DIR

JOB_CONFIG = CONFIG_DIR / "demo_job.yaml"  # the job's settings; training's: demo.yaml


def job_settings(tiny: bool = False) -> dict:
    """The job's settings from ``configs/demo_job.yaml`` (``--tiny``: its ``tiny`` section
    over them): budget_minutes, eval_minutes, target_reduction, synthesis, train."""
    import yaml

    settings = yaml.safe_load(JOB_CONFIG.read_text())
    small = settings.pop("tiny")
    settings["train"] = {}
    if tiny:
        settings["budget_minutes"] = small["budget_minutes"]
        settings["synthesis"] = {**settings["synthesis"], **small["synthesis"]}
        settings["train"] = dict(small["train"])
    return settings


def _log(msg: str) -> None:
    print(f"[demo-job] {msg}", flush=True)


def synthesise(out: Path, s: dict, seed: int, progress: bool = True) -> dict:
    """Training set, held-out set and mocap file under ``out`` (``s``: the ``synthesis``
    settings); returns their paths."""
    from hmr_fast.data import synth, synth_mocap

    paths = {"train": out / "synth_train", "test": out / "synth_test", "mocap": out / "mocap.npz"}
    # Rendered larger than the training crop: a crop (the body's box x 1.2) then shrinks
    # instead of stretching a few pixels of limb into a blur.
    size = str(s["render_size"])
    jobs = (
        ("train", ["--n", str(s["n_train"]), "--seed", str(seed)]),
        ("test", ["--n", str(s["n_test"]), "--seed", str(seed + 1000)]),
    )
    for name, extra in jobs:
        if not _dataset_ready(paths[name]):
            t0 = time.perf_counter()
            quiet = [] if progress else ["--no-progress"]
            spread = ["--pose-spread", str(s["pose_spread"])]
            rc = synth.main(
                ["--out", str(paths[name]), "--image-size", size, *s["args"], *spread, *extra,
                 *quiet]
            )  # fmt: skip
            if rc:
                raise RuntimeError(f"hmr-fast synth failed for {paths[name]} (exit {rc})")
            _log(f"synthesised {name} set ({extra[1]} images) in {time.perf_counter() - t0:.0f}s")
    if not paths["mocap"].is_file():
        rc = synth_mocap.main(
            ["--out", str(paths["mocap"]), "--n", str(s["n_mocap"]), "--seed", str(seed + 2000),
             "--spread", str(s["pose_spread"])]
        )  # fmt: skip
        if rc:
            raise RuntimeError(f"hmr-fast synth-mocap failed (exit {rc})")
    return paths


def _cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 and up); else bf16 is emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _dataset_ready(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.npz"))


def run(
    out: Path,
    tiny: bool = False,
    seed: int = 0,
    minutes: float | None = None,
    steps: int | None = None,
    progress: bool = True,
    lr: float | None = None,
) -> dict:
    """The demo job; returns the numbers it reached. ``minutes`` overrides the training time
    budget (by default what the job's budget leaves after synthesis and for evaluation)."""
    import cv2
    import torch

    from hmr_fast.data.datasets import KeypointDataset
    from hmr_fast.data.formats import find_annotation_file
    from hmr_fast.demo import model_faces, overlay_batch
    from hmr_fast.eval.protocols import evaluate
    from hmr_fast.train.build import load_trained_model
    from hmr_fast.train.config import load_config
    from hmr_fast.train.run import train

    job = job_settings(tiny)
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    paths = synthesise(out, job["synthesis"], seed, progress)

    run_dir = out / "run"
    if minutes is None:
        spent = (time.perf_counter() - t_start) / 60.0
        minutes = max(0.5, job["budget_minutes"] - job["eval_minutes"] - spent)
    overrides = {
        **job["train"],
        "data": [str(paths["train"])],
        "mocap": str(paths["mocap"]),
        "seed": seed,
        "out": str(run_dir),
        "device": "cpu",
        "minutes": minutes,
    }
    if steps is not None:
        overrides["steps"] = steps
    if lr is not None:
        overrides["encoder_lr"] = lr
    cfg = load_config("demo", overrides)
    if cfg.amp and not _cpu_has_fast_bf16():
        cfg = load_config("demo", {**overrides, "amp": False})  # emulated bf16 is slower
    resume = any((run_dir / "checkpoints").glob("ckpt_*.pt"))
    _log(
        f"training {cfg.backbone} at {cfg.image_size}px, batch {cfg.batch_size}, up to "
        f"{cfg.steps} steps in {cfg.minutes:.1f} min (metrics: {run_dir / 'metrics.jsonl'})"
    )
    summary = train(cfg, resume=resume, progress=progress,
                    from_scratch_reason="on purpose in the demo: a small ResNet-18 learns its "
                    "64 px synthetic crops in minutes (a full run starts from ImageNet weights)")
    _log(
        f"trained {summary['step']} steps (schedule {summary['schedule_steps']} of "
        f"{summary['total_steps']}) at {summary['images_per_s']:.0f} images/s; "
        f"checkpoint {summary['checkpoint']}"
    )

    model, cfg = load_trained_model(summary["checkpoint"], "cpu")
    npz = find_annotation_file(paths["test"])
    test = KeypointDataset(npz, paths["test"], image_size=cfg.image_size, train=False,
                           padding=cfg.crop_padding)
    from hmr_fast.eval.protocols import mean_theta

    res = evaluate(
        "synth",
        model,
        test,
        batch_size=64,
        progress=progress,
        theta0=mean_theta(model, paths["mocap"]),
    )
    base = res["mean_pose_pa_mpjpe"]
    reduction = 1.0 - res["pa_mpjpe"] / base if base > 0 else 0.0
    res.update(
        steps=summary["step"], images_per_s=summary["images_per_s"], pa_mpjpe_reduction=reduction,
        schedule_steps=summary["schedule_steps"], train_minutes=cfg.minutes,
        target_reduction=job["target_reduction"],
    )

    # A few predictions over their crops.
    batch = [test[i] for i in range(min(4, len(test)))]
    images = torch.stack([b["img"] for b in batch])
    with torch.no_grad():
        pred = model(images, return_verts=True)
    panels = overlay_batch(images, pred["vertices"], pred["cam"], model_faces(model))
    pngs = []
    for i, panel in enumerate(panels):
        panel = cv2.resize(panel, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        path = out / f"prediction_{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        pngs.append(str(path))
    res["pngs"] = pngs
    res["seconds"] = time.perf_counter() - t_start
    (out / "demo_results.json").write_text(json.dumps(res, indent=2, default=float) + "\n")

    print()
    print(f"held-out synthetic set: {res['num_samples']} images, 14 LSP joints, mm")
    print(f"{'':<22}{'MPJPE':>10}{'PA-MPJPE':>12}")
    print(f"{'mean-pose baseline':<22}{res['mean_pose_mpjpe']:>10.1f}{base:>12.1f}")
    print(f"{'HMR (this run)':<22}{res['mpjpe']:>10.1f}{res['pa_mpjpe']:>12.1f}")
    print(
        f"PA-MPJPE {100 * reduction:.1f}% below the baseline (target >= "
        f"{100 * job['target_reduction']:.0f}%), {summary['step']} steps, "
        f"{res['seconds'] / 60:.1f} min in all"
    )
    print("renders: " + ", ".join(pngs))
    print(f"results: {out / 'demo_results.json'}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast demo-job", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="work directory (reused if present)")
    p.add_argument("--tiny", action="store_true", help="a few-second smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, help="training time budget (default: what the "
                   "job's budget in configs/demo_job.yaml leaves after synthesis)")
    p.add_argument("--steps", type=int, help="training steps (upper bound)")
    p.add_argument("--lr", type=float, help="encoder learning rate")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when the 40%% PA-MPJPE target is missed"
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    res = run(
        Path(args.out),
        args.tiny,
        args.seed,
        args.minutes,
        args.steps,
        progress=not args.no_progress,
        lr=args.lr,
    )
    if not args.tiny and res["pa_mpjpe_reduction"] < res["target_reduction"]:
        print(
            f"[demo-job] TARGET NOT MET: PA-MPJPE {100 * res['pa_mpjpe_reduction']:.1f}% below "
            f"the baseline, target {100 * res['target_reduction']:.0f}% (train longer: "
            "--minutes)",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
