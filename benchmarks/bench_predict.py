"""`hmr-fast predict` end to end (decode, crop, network, SMPL, npz; no rendering) on a folder
of 640x480 JPEGs, fp32 and bf16, and the network alone in torch and onnxruntime.

Run with `pytest --benchmark benchmarks/bench_predict.py`. The weights are random ones in
SPIN's released format (tests/test_pretrained.py): SPIN's architecture and cost, not its
accuracy. The bf16 rows also report how far bf16's outputs are from fp32's on the same crops.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hmr_fast.predict import main as predict_main
from hmr_fast.pretrained import load_pretrained
from tests.test_pretrained import save_spin_checkpoint

NUM_IMAGES = 64
BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_bench")
    ckpt = root / "model_checkpoint.pt"
    save_spin_checkpoint(ckpt, seed=1)
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((480, 640, 3)) * 255).astype(np.uint8), (0, 0), 3)
    for i in range(NUM_IMAGES):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.roll(base, 7 * i, axis=1),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root, ckpt, folder


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_end_to_end(benchmark, setup, precision):
    root, ckpt, folder = setup
    args = [str(folder), "--checkpoint", str(ckpt), "--out", str(root / f"out_{precision}"),
            "--no-render", "--no-progress", "--bbox", "100,50,200,300",
            "--batch-size", str(BATCH)] + (["--bf16"] if precision == "bf16" else [])
    benchmark.group = f"predict end to end, {NUM_IMAGES} JPEGs 640x480, incl. model load"
    benchmark.extra_info.update(batch=NUM_IMAGES, group=benchmark.group,
                                baseline=precision == "fp32")
    assert benchmark.pedantic(predict_main, args=(args,), rounds=3, iterations=1) == 0
    if precision == "bf16":
        ref = np.load(root / "out_fp32" / "000.npz") if (root / "out_fp32").exists() else None
        got = np.load(root / "out_bf16" / "000.npz")
        if ref is not None:
            err = float(np.abs(got["joints_2d"] - ref["joints_2d"]).max())
            benchmark.extra_info["bf16_joints_2d_max_px_vs_fp32"] = err
            print(f"bf16 vs fp32 joints_2d max difference {err:.2f} px")


@pytest.mark.parametrize("engine", ["torch-fp32", "torch-bf16", "onnxruntime-fp32"])
def test_network_alone(benchmark, setup, tmp_path, engine):
    _, ckpt, _ = setup
    model = load_pretrained(ckpt).to(memory_format=torch.channels_last)
    images = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    benchmark.group = f"network alone (ResNet-50 + IEF + SMPL), batch {BATCH}"
    benchmark.extra_info.update(batch=BATCH, group=benchmark.group,
                                baseline=engine == "torch-fp32")
    if engine.startswith("onnxruntime"):
        onnxruntime = pytest.importorskip("onnxruntime")
        from hmr_fast.export import export_onnx

        path = export_onnx(model, tmp_path / "hmr.onnx", 224)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        feed = {"images": images.numpy()}
        benchmark.pedantic(session.run, args=(None, feed), rounds=5, iterations=1,
                           warmup_rounds=1)
        return
    x = images.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                     enabled=engine == "torch-bf16"):
            return model(x)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
