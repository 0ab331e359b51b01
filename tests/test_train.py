"""`hmr-fast train`: exact resume, SIGKILL recovery, DDP on gloo, clear errors, logging.

A tiny setup (ResNet-18 at 64 px, batch 4, 16 synthetic images, workers=0) on CPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.cli import main
from hmr_fast.train.config import load_config
from hmr_fast.train.run import train
from hmr_fast.train.sampling import StepSampler
from hmr_fast.train.step import lr_factor

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from hmr_fast.data import synth, synth_mocap

    root = tmp_path_factory.mktemp("train_data")
    assert synth.main(["--out", str(root / "synth"), "--n", "16", "--image-size", "64",
                       "--seed", "3", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert synth_mocap.main(["--out", str(root / "mocap.npz"), "--n", "300"]) == 0
    return root


def _args(data, out, steps, *extra):
    return ["--data", str(data / "synth"), "--mocap", str(data / "mocap.npz"),
            "--backbone", "resnet18", "--image-size", "64", "--batch-size", "4",
            "--workers", "0", "--steps", str(steps), "--out", str(out), "--seed", "5",
            "--log-images-every", "0", "--no-progress", "--device", "cpu", *extra]  # fmt: skip


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sampler_is_a_function_of_seed_and_step():
    full = StepSampler(10, 4, seed=1, start_step=0, num_steps=8)
    late = StepSampler(10, 4, seed=1, start_step=5, num_steps=8)
    assert list(full)[5:] == list(late)
    # Every epoch is a permutation; ranks split each global batch without overlap.
    idx = [i for b in StepSampler(10, 5, 2, 0, 2) for _, i in b]
    assert sorted(idx) == list(range(10))
    r0 = StepSampler(12, 3, 0, 0, 2, rank=0, world=2)
    r1 = StepSampler(12, 3, 0, 0, 2, rank=1, world=2)
    both = [i for a, b in zip(r0, r1) for i in a + b]
    assert sorted(i for _, i in both) == list(range(12))


def test_resume_is_exact(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # A warm-up + cosine schedule: the resumed run must pick it up at the right step too.
    sched = ("--ckpt-every", "2", "--set", "lr_schedule=cosine", "--set", "warmup_steps=2")
    assert main(_args(data, straight, 5, *sched)) == 0
    assert main(_args(data, split, 3, *sched)) == 0
    # Simulate a kill after step 3: the resume starts from the step-2 checkpoint and must
    # drop the logged step 3 before redoing it.
    (split / "checkpoints" / ckpt.checkpoint_name(3)).unlink()
    # The resumed run repeats nothing but --out: the rest comes from the checkpoint.
    assert main(["--resume", "--out", str(split), "--steps", "5", "--no-progress"]) == 0
    a, b = _metrics(straight), _metrics(split)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4, 5]
    keys = ["loss", "d_loss", "loss_kp_2d", "loss_smpl", "loss_joints_3d", "loss_adv"]
    for ma, mb in zip(a, b):
        for k in keys:
            assert np.isfinite(ma[k])
            assert ma[k] == pytest.approx(mb[k], rel=1e-6, abs=1e-7), (ma["step"], k)
    # The losses do change from step to step (the comparison is not vacuous).
    assert len({round(m["loss"], 6) for m in a}) > 1
    # Same weights at the end.
    wa = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight / "checkpoints"))
    wb = ckpt.load_checkpoint(ckpt.latest_checkpoint(split / "checkpoints"))
    for k, v in wa["model"].items():
        assert torch.allclose(v.float(), wb["model"][k].float(), atol=1e-6), k
    assert wa["step"] == wb["step"] == 5
    assert wa["config"]["backbone"] == "resnet18"
    # The last update (step index 4 of 5) ran at the cosine-decayed rate.
    cfg = load_config(None, wa["config"])
    for opt, base in (("encoder_optimizer", cfg.encoder_lr), ("discriminator_optimizer",
                                                             cfg.disc_lr)):
        want = base * lr_factor(cfg, 4)
        assert 0 < want < base
        assert wa[opt]["param_groups"][0]["lr"] == pytest.approx(want)
    for key in ("encoder_optimizer", "discriminator_optimizer", "discriminator", "rng", "sampler"):
        assert key in wa


def test_sigkill_then_resume(data, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hmr_fast.train", *_args(data, out, 500, "--ckpt-every", "2")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ckpt.list_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        time.sleep(0.7)  # let it get somewhere past the checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    found = ckpt.latest_checkpoint(out / "checkpoints")
    assert found is not None
    k = ckpt.load_checkpoint(found)["step"]
    assert k >= 2 and k % 2 == 0
    assert main(["--resume", "--out", str(out), "--steps", str(k + 2), "--no-progress"]) == 0
    steps = [m["step"] for m in _metrics(out)]
    assert steps == list(range(1, k + 3))  # no gap, no duplicate past the checkpoint
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_backbone_mismatch_is_a_clear_error(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data, out, 1)) == 0
    rc = main(["--resume", "--out", str(out), "--backbone", "resnet34", "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "backbone" in err and "resnet18" in err and "resnet34" in err
    assert len(err) < 600  # one message, not a state_dict dump
    cfg = load_config(None, {"backbone": "resnet34", "out": str(out), "data": [str(data / "synth")],
                             "mocap": str(data / "mocap.npz"), "device": "cpu"})  # fmt: skip
    with pytest.raises(ValueError, match="backbone='resnet18'"):
        train(cfg, resume=True, progress=False)


def test_missing_paths_raise_filenotfound(data, tmp_path):
    cfg = load_config(None, {"data": [str(tmp_path / "no_such_dir")], "out": str(tmp_path / "o"),
                             "mocap": str(data / "mocap.npz")})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        train(cfg, progress=False)
    cfg = load_config(None, {"data": [str(data / "synth")], "out": str(tmp_path / "o"),
                             "mocap": str(tmp_path / "nomocap.npz")})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nomocap.npz"):
        train(cfg, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        train(load_config(None, {"out": str(tmp_path / "empty")}), resume=True, progress=False)


def test_out_with_checkpoints_needs_resume(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(_args(data, out, 1)) == 0
    assert main(_args(data, out, 2)) == 2
    assert "--resume" in capsys.readouterr().err


def test_unknown_flag_suggests(capsys):
    assert main(["--bakbone", "resnet18"]) == 2
    assert "--backbone" in capsys.readouterr().err


def test_no_3d_and_skipped_rows_and_images(data, tmp_path):
    # A copy of the data with one image missing: it is replaced and counted.
    broken = tmp_path / "broken"
    shutil.copytree(data / "synth", broken)
    images = sorted((broken / "images").iterdir())
    for p in images[:3]:
        p.unlink()
    out = tmp_path / "no3d"
    args = _args(data, out, 4, "--no-3d", "--log-images-every", "2")
    args[args.index("--data") + 1] = str(broken)
    assert main(args) == 0
    m = _metrics(out)
    assert len(m) == 4
    assert "loss_smpl" not in m[0] and "loss_joints_3d" not in m[0]
    assert m[-1]["skipped"] > 0
    # TensorBoard got scalars and mesh images.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert any("meshes" in t for t in acc.Tags()["images"])


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent /
                    "torchrun").exists(), reason="torchrun not installed")  # fmt: skip
def test_ddp_two_processes_gloo(data, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--standalone",
           "--nproc_per_node", "2", "-m", "hmr_fast.train",
           *_args(data, out, 2, "--batch-size", "2")]  # fmt: skip
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    m = _metrics(out)
    assert [x["step"] for x in m] == [1, 2]  # rank 0 only logs
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [2]
    assert all(np.isfinite(x["loss"]) for x in m)


def test_amp_runs_bf16_autocast_on_cpu(data, tmp_path, capsys):
    # Step 1's loss comes from the same weights and batch in both runs: only the precision
    # of the autocast region differs, so the values are close but not equal.
    assert main(_args(data, tmp_path / "fp32", 1)) == 0
    assert main(_args(data, tmp_path / "bf16", 1, "--amp")) == 0
    assert "bf16 autocast on cpu" in capsys.readouterr().out
    full, half = _metrics(tmp_path / "fp32")[0], _metrics(tmp_path / "bf16")[0]
    assert np.isfinite(half["loss"]) and np.isfinite(half["d_loss"])
    assert half["loss_kp_2d"] != full["loss_kp_2d"]
    np.testing.assert_allclose(half["loss_kp_2d"], full["loss_kp_2d"], rtol=0.05)


def test_ranges_time_blocks_and_submodules():
    from hmr_fast.train.ranges import Ranges

    r = Ranges(timed=True)
    lin = torch.nn.Linear(3, 3)
    r.attach(lin, "inner")
    with r("outer"):
        time.sleep(0.01)
        lin(torch.zeros(2, 3))
    assert set(r.totals) == {"outer", "inner"}
    assert r.totals["outer"] >= 0.01 and 0 <= r.totals["inner"] <= r.totals["outer"]
    r.reset()
    assert r.totals == {}


def test_image_roots_apart_from_annotations(data, tmp_path, capsys):
    """`import-data --out elsewhere` then `train --data X.npz --image-root R`: the images are
    not next to the npz; with several datasets, one root each."""
    from hmr_fast.data.formats import load_annotations, save_annotations

    ann = load_annotations(data / "synth" / "annotations.npz")
    keep = {k: v for k, v in ann.items() if k not in ("has_part", "has_S")}
    ann_dir = tmp_path / "annotations"
    a = save_annotations(ann_dir / "a.npz", **keep)
    b = save_annotations(ann_dir / "b.npz", **{k: v[:8] for k, v in keep.items()})
    out = tmp_path / "run"
    args = _args(data, out, 1)
    args[args.index("--data") + 1] = f"{a},{b}"
    assert main(args) == 2  # images are not next to the npz files
    err = capsys.readouterr().err
    assert "--image-root" in err and str(ann_dir) in err
    root = str(data / "synth")
    shutil.rmtree(out, ignore_errors=True)
    assert main(args + ["--image-root", f"{root},{root}"]) == 0
    assert _metrics(out)[-1]["skipped"] == 0
    shutil.rmtree(out)
    assert main(args + ["--image-root", f"{root},{root},{root}"]) == 2
    assert "one per entry" in capsys.readouterr().err
    assert main(args + ["--image-root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_resume_names_the_checkpoint_it_skipped(data, tmp_path):
    out = tmp_path / "run"
    assert main(_args(data, out, 1)) == 0
    bad = out / "checkpoints" / ckpt.checkpoint_name(2)
    bad.write_bytes(b"\x80 a checkpoint cut short")
    cfg = load_config(None, {"out": str(out), "data": [str(data / "synth")], "steps": 2,
                             "mocap": str(data / "mocap.npz"), "device": "cpu",
                             "backbone": "resnet18", "image_size": 64, "batch_size": 4,
                             "workers": 0, "log_images_every": 0})  # fmt: skip
    said = []
    train(cfg, resume=True, progress=False, log=said.append)
    skipped = [m for m in said if "skipped the newer checkpoint" in m]
    assert len(skipped) == 1 and str(bad) in skipped[0]
    assert any("resumed from" in m and ckpt.checkpoint_name(1) in m for m in said)


def test_dataset_sources_pair_roots_and_caches_with_each_entry(data, tmp_path):
    from hmr_fast.train.data import dataset_sources

    synth = data / "synth"
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    shutil.copy(synth / "annotations.npz", a)
    shutil.copy(synth / "annotations.npz", b)
    cfg = load_config(None, {"data": [str(a), str(b)]})
    assert dataset_sources(cfg) == [(a, tmp_path, None), (b, tmp_path, None)]
    cfg = load_config(None, {"data": [str(a), str(b)], "image_root": str(synth),
                             "image_cache": "auto"})  # fmt: skip
    assert dataset_sources(cfg) == [(a, synth, "auto"), (b, synth, "auto")]
    cfg = load_config(None, {"data": [str(a), str(b)], "image_root": f"{synth},{tmp_path}",
                             "image_cache": "c1,"})  # fmt: skip
    assert dataset_sources(cfg) == [(a, synth, "c1"), (b, tmp_path, None)]
    cfg = load_config(None, {"data": [str(a), str(b)], "image_cache": "c1,c2,c3"})
    with pytest.raises(ValueError, match="image_cache: give one value"):
        dataset_sources(cfg)


def test_unwritable_run_directory_is_named_before_training(data, tmp_path, capsys):
    """A run directory that cannot be created (a file is in the way; a read-only folder fails
    the same way but root, as tests often run, ignores permissions): exit 2, the path named,
    before any step; nothing written."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    assert main(_args(data, blocker / "run", 1)) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and str(blocker) in err
    assert blocker.read_text() == "a file, not a folder"


def test_config_yaml_is_written_atomically(data, tmp_path):
    out = tmp_path / "run"
    assert main(_args(data, out, 1)) == 0
    assert (out / "config.yaml").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_overfits_one_batch(data, tmp_path, monkeypatch):
    """Four images, every step the same four crops (no zoom/shift jitter, no flips, no
    dropout, no adversarial term, a higher learning rate): the 2D keypoint loss falls at least
    10x, so model, losses and optimiser are wired together right."""
    import functools

    from hmr_fast.data import augment, synth

    monkeypatch.setattr(augment, "AugConfig", functools.partial(
        augment.AugConfig, zoom_min=1.0, zoom_max=1.0, trans_max=0.0))

    root = tmp_path / "four"
    assert synth.main(["--out", str(root), "--n", "4", "--image-size", "64", "--seed", "4",
                       "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "run"
    assert main(["--data", str(root), "--mocap", str(data / "mocap.npz"),
                 "--backbone", "resnet18", "--image-size", "64",
                 "--batch-size", "4", "--workers", "0", "--steps", "120", "--out", str(out),
                 "--seed", "5", "--log-images-every", "0", "--no-progress", "--device", "cpu",
                 "--lr", "1e-3", "--no-3d", "--set", "flip_prob=0",
                 "--set", "regressor_dropout=0", "--set", "adversarial_weight=0"]) == 0
    losses = [m["loss_kp_2d"] for m in _metrics(out)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"2D keypoint loss {first:.4f} -> {last:.4f}")
    assert last * 10 <= first, f"2D keypoint loss {first:.4f} -> {last:.4f}: not 10x lower"


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="needs CUDA or the Triton interpreter")
def test_two_steps_on_the_triton_backends(data, tmp_path, monkeypatch):
    """The fused path (Triton SMPL and discriminator; the interpreter without CUDA) through
    the real trainer: two steps, finite losses, and the same first-step loss as the torch
    backends within fp32 tolerance."""
    from hmr_fast.train import run

    out_torch, out_triton = tmp_path / "torch", tmp_path / "triton"
    assert main(_args(data, out_torch, 2)) == 0
    monkeypatch.setattr(run, "backends_for", lambda cfg, device: "triton")
    assert main(_args(data, out_triton, 2)) == 0
    fused, plain = _metrics(out_triton), _metrics(out_torch)
    assert len(fused) == 2 and all(np.isfinite(m["loss"]) for m in fused)
    assert fused[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4, abs=1e-5)


def test_baseline_theta_is_stored_in_the_checkpoint(data, tmp_path):
    """The mean-pose baseline is the Theta_0 training started from (the mocap mean), read from
    the checkpoint: moving the mocap file away does not change it."""
    import torch

    from hmr_fast.eval.protocols import mean_theta
    from hmr_fast.models.hmr import initial_theta
    from hmr_fast.train.build import load_trained_model

    mocap = tmp_path / "mocap.npz"
    shutil.copy(data / "mocap.npz", mocap)
    args = _args(data, tmp_path / "run", 3, "--lr", "1e-2")
    args[args.index("--mocap") + 1] = str(mocap)
    assert main(args) == 0
    expected = initial_theta(mocap)
    model, cfg = load_trained_model(tmp_path / "run")
    assert not torch.equal(model.init_theta.detach().cpu(), expected), "Theta_0 was trained"
    torch.testing.assert_close(mean_theta(model, cfg.mocap), expected)
    mocap.unlink()
    torch.testing.assert_close(mean_theta(model, cfg.mocap), expected)


def test_training_from_scratch_warns_unless_told_why(data, tmp_path, capsys):
    assert main(_args(data, tmp_path / "a", 1)) == 0
    assert "WARNING: the paper starts from an ImageNet-pretrained" in capsys.readouterr().out
    train(load_config(None, {"data": [str(data / "synth")], "mocap": str(data / "mocap.npz"),
                             "backbone": "resnet18", "image_size": 64, "batch_size": 4,
                             "workers": 0, "steps": 1, "out": str(tmp_path / "b"),
                             "log_images_every": 0, "device": "cpu"}),
          progress=False, from_scratch_reason="a test says why")
    printed = capsys.readouterr().out
    assert "a test says why" in printed and "WARNING" not in printed
