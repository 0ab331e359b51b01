"""`hmr-fast bench`: the SMPL layer against smplx on the same model file, as a table.

The cases here are shared with the pytest-benchmark suite (benchmarks/bench_smpl.py). Timing
is interleaved (every implementation once per round, rounds repeated) so that both sides see
the same machine state, and inputs cycle through several random sets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

IMPLEMENTATIONS = ("smplx", "hmr_fast")
MODES = ("forward", "forward_backward")


def model_file(model_path: str | None = None) -> str:
    """The model file both sides load: the user's, or the procedural body written to a
    pickle (smplx reads only pickles)."""
    if model_path:
        return model_path
    from hmr_fast.body.procedural import write_procedural_model

    path = Path(tempfile.gettempdir()) / f"hmr_fast_bench_{os.getuid()}" / "SMPL_NEUTRAL.pkl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_procedural_model(path)
    return str(path)


def build_model(impl: str, path: str, backend: str = "torch") -> torch.nn.Module:
    if impl == "smplx":
        import contextlib
        import io

        import smplx

        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas warning
            return smplx.SMPL(path)
    from hmr_fast import SMPL

    return SMPL(path, backend=backend)


def random_inputs(batch: int, sets: int = 4, dtype=torch.float32, device="cpu") -> list[dict]:
    """Several independent input sets, poses up to about 1 rad per joint."""
    return [{"betas": torch.randn(batch, 10, dtype=dtype, device=device),
             "body_pose": 0.6 * torch.randn(batch, 69, dtype=dtype, device=device),
             "global_orient": torch.randn(batch, 3, dtype=dtype, device=device),
             "transl": torch.randn(batch, 3, dtype=dtype, device=device)}
            for _ in range(sets)]


def step(model: torch.nn.Module, inputs: list[dict], mode: str) -> Callable[[], None]:
    """One call of the case; each call takes the next input set."""
    counter = [0]
    if mode == "forward":
        def run():
            counter[0] += 1
            with torch.no_grad():
                model(**inputs[counter[0] % len(inputs)])
        return run
    if mode != "forward_backward":
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    leaves = [{k: v.clone().requires_grad_(True) for k, v in x.items()} for x in inputs]

    def run_backward():
        counter[0] += 1
        out = model(**leaves[counter[0] % len(leaves)])
        (out.vertices.sum() + out.joints.sum()).backward()
    return run_backward


def interleaved_medians(fns: dict[str, Callable[[], None]], rounds: int,
                        warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, timed alternately round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hmr-fast bench", description=__doc__)
    parser.add_argument("--model-path", default=None, help="SMPL file (default: procedural)")
    parser.add_argument("--batch", default="1,64,512", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import smplx  # noqa: F401  (the reference; an optional dependency)
    except ImportError:
        print("hmr-fast bench: needs smplx, the reference it compares with: "
              "pip install 'hmr-fast[bench]'", file=sys.stderr)
        return 2
    path = model_file(args.model_path)
    models = {impl: build_model(impl, path) for impl in IMPLEMENTATIONS}
    print(f"# SMPL forward on CPU: {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"model {path}")
    print("| batch | mode | smplx ms | hmr_fast ms | smplx samples/s | hmr_fast samples/s "
          "| speed-up |")
    print("|---|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batch.split(",")]:
        inputs = random_inputs(batch)
        for mode in MODES:
            rounds = max(5, args.rounds // (4 if batch >= 512 else 1))
            med = interleaved_medians({i: step(m, inputs, mode) for i, m in models.items()},
                                      rounds)
            print(f"| {batch} | {mode} | {med['smplx'] * 1e3:.2f} | {med['hmr_fast'] * 1e3:.2f} "
                  f"| {batch / med['smplx']:.0f} | {batch / med['hmr_fast']:.0f} "
                  f"| {med['smplx'] / med['hmr_fast']:.2f}x |", flush=True)
    return 0
