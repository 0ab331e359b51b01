"""hmr_fast.SMPL against smplx.SMPL on the same model file, CPU, batch 1/64/512, forward
(no_grad) and forward+backward. Run with `pytest --benchmark benchmarks/bench_smpl.py`.

The Triton row runs the kernels under the interpreter on CPU: a smoke test of the fused
path, never a speed claim.
"""

from __future__ import annotations

import pytest
import torch

from hmr_fast.bench_cli import build_model, model_file, random_inputs, step


@pytest.fixture(scope="module")
def models():
    path = model_file()
    return {impl: build_model(impl, path) for impl in ("smplx", "hmr_fast")}


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("batch", [1, 64, 512])
@pytest.mark.parametrize("impl", ["smplx", "hmr_fast"])
def test_smpl_cpu(benchmark, models, impl, batch, mode):
    benchmark.group = f"smpl cpu {mode} B={batch}"
    benchmark.extra_info.update(batch=batch, group=benchmark.group, baseline=impl == "smplx")
    benchmark(step(models[impl], random_inputs(batch), mode))


def test_smpl_triton_interpreter_smoke(benchmark):
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    model = build_model("hmr_fast", model_file(), backend="triton")
    benchmark.group = "smpl triton-interpreter smoke (not a speed claim)"
    benchmark.extra_info.update(batch=2, group=benchmark.group)
    out = model(**random_inputs(2, sets=1)[0])
    assert torch.isfinite(out.vertices).all()
    benchmark(step(model, random_inputs(2, sets=1), "forward"))
