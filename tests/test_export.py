"""hmr-fast export: one ONNX graph from crops to rotmats/betas/cam/vertices/joints, dynamic N,
onnxruntime parity with torch; torch.export of the same module."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import hmr_fast
from hmr_fast.export import OUTPUT_NAMES, main
from tests.test_pretrained import save_spin_checkpoint

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def spin_checkpoint(tmp_path_factory):
    return save_spin_checkpoint(tmp_path_factory.mktemp("spin") / "model_checkpoint.pt", seed=40)


@pytest.fixture(scope="module")
def exported(spin_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "hmr.onnx"
    assert main(["--checkpoint", str(spin_checkpoint), "--out", str(out)]) == 0
    return out


def crops(batch: int, seed: int, size: int = 224) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_reproduces_torch(spin_checkpoint, exported, batch):
    onnx.checker.check_model(str(exported))
    model = hmr_fast.load_pretrained(spin_checkpoint)
    images = crops(batch, seed=batch)
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {"images": images.numpy()})
    with torch.no_grad():
        want = model(images)
    for name, value in zip(OUTPUT_NAMES, got):
        assert value.shape == tuple(want[name].shape), name
        err = np.abs(value - want[name].numpy()).max()
        assert err <= 1e-4, f"{name}: onnxruntime vs torch {err:.3g}"


def test_export_leaves_only_the_file_and_keeps_the_model_in_eval(exported):
    assert sorted(os.listdir(exported.parent)) == ["hmr.onnx"]
    assert os.stat(exported).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_errors_exit_nonzero(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "x.onnx")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_torch_export_of_the_same_module(spin_checkpoint):
    model = hmr_fast.load_pretrained(spin_checkpoint)
    images = crops(2, seed=7)
    program = torch.export.export(model, (crops(2, seed=8),))
    with torch.no_grad():
        got, want = program.module()(images), model(images)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
