"""The paper's recipe (issue #16): initialisations, batch-norm momentum, edge padding, the
run length in epochs, the time-budgeted schedule, and a smoke run of the paper config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmr_fast.train.config import TrainConfig, apply_overrides, load_config
from hmr_fast.train.loop import ScheduleFit, run_length
from hmr_fast.train.step import lr_factor


def _xavier_bound(layer: torch.nn.Linear, gain: float = 1.0) -> float:
    fan_out, fan_in = layer.weight.shape
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def test_regressor_and_discriminator_start_as_the_original():
    """Regressor: Xavier-uniform FC layers, the last with variance scaling 0.01 fan-avg
    uniform (limit sqrt(3 * 0.01 / fan_avg)); discriminator: Xavier everywhere; zero biases."""
    from hmr_fast.models.discriminator import Discriminator
    from hmr_fast.models.hmr import HMR

    torch.manual_seed(0)
    model = HMR(backbone="resnet18", image_size=64, smpl_backend="torch")
    linears = [m for m in model.regressor if isinstance(m, torch.nn.Linear)]
    last = linears[-1]
    fan_avg = (last.weight.shape[0] + last.weight.shape[1]) / 2
    limits = [_xavier_bound(m) for m in linears[:-1]] + [math.sqrt(3 * 0.01 / fan_avg)]
    disc = Discriminator(backend="torch")
    d_linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    limits += [_xavier_bound(m) for m in d_linears]
    for layer, limit in zip(linears + d_linears, limits):
        w = layer.weight.detach()
        assert w.abs().max() <= limit
        # A uniform(-a, a) draw has standard deviation a / sqrt(3).
        assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0
    head_limit = math.sqrt(6.0 / (32 + 1))  # each joint's own 32 -> 1 layer
    assert disc.head_weight.abs().max() <= head_limit
    assert disc.head_weight.std().item() == pytest.approx(head_limit / math.sqrt(3), rel=0.15)
    assert torch.count_nonzero(disc.head_bias) == 0


def test_batch_norm_momentum_is_the_configs():
    from hmr_fast.train.build import build_model

    cfg = apply_overrides(TrainConfig(), {"backbone": "resnet18", "image_size": 64})
    model = build_model(cfg, torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == pytest.approx(0.003) for m in norms)
    # With momentum m, one training forward moves the running mean by m of the batch mean.
    bn = norms[0]
    before = bn.running_mean.clone()
    bn.train()
    x = torch.randn(4, bn.num_features, 5, 5) + 3.0
    bn(x)
    expected = (1 - 0.003) * before + 0.003 * x.mean((0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected)


def test_edge_padding_replicates_the_border():
    """A crop hanging over the image's corner: 'edge' equals numpy's edge padding of the image
    then an integer crop (an independent reference); 'zero' is black there."""
    from hmr_fast.data.augment import warp_image

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    m = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]])  # image (x, y) -> crop (x + 5, y + 7)
    edge = warp_image(image, m, 16, padding="edge")
    padded = np.pad(image, ((7, 0), (5, 0), (0, 0)), mode="edge")
    np.testing.assert_array_equal(edge, padded[:16, :16])
    zero = warp_image(image, m, 16, padding="zero")
    assert not zero[:7].any() and not zero[:, :5].any()
    np.testing.assert_array_equal(zero[7:, 5:], image[:9, :11])
    with pytest.raises(KeyError):
        warp_image(image, m, 16, padding="reflect")


def test_run_length_in_epochs():
    cfg = TrainConfig()
    assert cfg.steps is None
    # 55 passes over 1000 samples at 64 a step, rounded up.
    assert run_length(cfg, 1000) == math.ceil(55 * 1000 / 64)
    assert run_length(cfg, 1000, world_size=4) == math.ceil(55 * 1000 / 256)
    assert run_length(apply_overrides(cfg, {"steps": 7}), 1000) == 7


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_schedule_fits_a_time_budget():
    """1 s a step and a 100 s budget: after the warm-up and one measuring window the schedule
    ends where the budget (less its 3% margin) runs out, and a cosine decay reaches ~0
    there; on a machine fast enough the configured length stands."""
    clock = _Clock()
    fit = ScheduleFit(100.0, start_step=0, total=1000, warmup=20, every=50, clock=clock)
    end = 1000
    for step in range(1, 71):
        clock.t = float(step)
        end = fit.end(step, end)
        if step < 70:
            assert end == 1000, step
    assert end == 70 + math.floor(1.0 * (97.0 - 70.0))
    cfg = apply_overrides(TrainConfig(), {"lr_schedule": "cosine", "steps": 1000})
    assert lr_factor(cfg, end - 1, end) < 0.01 < lr_factor(cfg, end - 1, 1000)
    # Ten times faster: 1000 steps fit, the schedule keeps its length.
    clock, end = _Clock(), 1000
    fast = ScheduleFit(1000.0, start_step=0, total=1000, warmup=20, every=50, clock=clock)
    for step in range(1, 200):
        clock.t = 0.1 * step
        end = fast.end(step, end)
    assert end == 1000


def test_thread_governor_decisions():
    from hmr_fast.train.threads import cores_used_by_others, threads_for

    # (machine busy seconds, own seconds): 3 s of CPU in 2 s, 1 s of it ours -> 1 core others.
    assert cores_used_by_others((10.0, 4.0), (13.0, 5.0), 2.0) == pytest.approx(1.0)
    assert cores_used_by_others(None, (1.0, 1.0), 1.0) == 0.0
    assert threads_for(2, 2, 1.0, 2) == 1  # one core taken: one thread, no barrier waits
    assert threads_for(2, 2, 1.8, 2) == 1  # never below one
    assert threads_for(2, 2, 0.1, 1) == 2  # quiet again: back to what the run started with
    assert threads_for(2, 2, 0.35, 1) == 1  # in between: keep (hysteresis)
    assert threads_for(8, 4, 2.0, 4) == 4  # enough free cores: unchanged


def test_paper_config_smoke_run(tmp_path, monkeypatch):
    """The paper's config as shipped (ResNet-50 at 224 px, ImageNet weights from torch's hub
    cache, edge padding, epochs, weight decay 0, BN momentum 0.003) for two steps on
    synthetic data, so that the recipe cannot rot."""
    import torchvision

    from hmr_fast.data import synth, synth_mocap
    from hmr_fast.models.encoder import HUB_FILES
    from hmr_fast.train.run import train

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    weights = torchvision.models.resnet50().state_dict()
    torch.save(weights, hub / "checkpoints" / HUB_FILES["resnet50"][0])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert synth.main(["--out", str(tmp_path / "d"), "--n", "4", "--image-size", "64",
                       "--seed", "1", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert synth_mocap.main(["--out", str(tmp_path / "m.npz"), "--n", "50"]) == 0
    cfg = load_config("paper", {"data": [str(tmp_path / "d")], "mocap": str(tmp_path / "m.npz"),
                                "workers": 0, "batch_size": 2, "epochs": 1,
                                "out": str(tmp_path / "run"), "device": "cpu",
                                "log_images_every": 0})
    assert cfg.steps is None and cfg.pretrained == "hub" and cfg.crop_padding == "edge"
    messages = []
    summary = train(cfg, progress=False, log=messages.append)
    assert summary["step"] == summary["total_steps"] == 2  # 1 epoch of 4 samples at 2 a step
    assert not any("WARNING" in m for m in messages)
    assert np.isfinite(summary["last"]["loss"])
    # The encoder started from the hub file's weights (not random ones), and trained.
    state = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    conv = state["model"]["encoder.net.conv1.weight"]
    assert not torch.equal(conv, weights["conv1.weight"])
    assert torch.allclose(conv, weights["conv1.weight"], atol=1e-2)
