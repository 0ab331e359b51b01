"""Compile the fused SMPL kernels the GPU tests launch, one process per precision in parallel,
so that `pytest -m gpu` finds them in Triton's on-disk cache.

Triton compiles each (kernel, constexprs, launch specialisation) on first launch, in the
launching thread: the GPU tests' matrix (3 precisions x B in 1, 37, 4096 x full/keypoint x
axis-angle/rotation matrices, forward and backward) is over a hundred compiles, one after
another. Run as three processes they share the machine's cores; the cache is safe to fill
concurrently (Triton writes each entry with an atomic rename). benchmarks/gpu_check.sh runs
this before pytest; the tests do not depend on it.

    PYTHONPATH=$PWD python3 benchmarks/gpu_warm.py            # all precisions, in parallel
    PYTHONPATH=$PWD python3 benchmarks/gpu_warm.py --precision ieee --batches 1,37
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PRECISIONS = ("tf32x3", "ieee", "fp64")


def cases(batches) -> list[tuple[int, bool, bool]]:
    """(batch, pose2rot, return_verts) the tests launch."""
    return [(b, p, v) for b in batches for p in (True, False) for v in (True, False)]


def warm(precision: str, batches) -> int:
    import warnings

    import torch

    from benchmarks.gpu_parity import make_inputs
    from hmr_fast import SMPL

    if not torch.cuda.is_available():
        print(f"{precision}: no CUDA, nothing to compile")
        return 0
    dtype = torch.float64 if precision == "fp64" else torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layer = SMPL(backend="triton", dtype=dtype, keypoint_regressor="hmr",
                     precision=None if precision == "fp64" else precision).to("cuda")
    start = time.perf_counter()
    for batch, pose2rot, return_verts in cases(batches):
        x = make_inputs(batch, dtype, "cuda", pose2rot, torch.Generator().manual_seed(batch))
        leaves = {k: v.requires_grad_(True) for k, v in x.items()}
        out = layer(**leaves, pose2rot=pose2rot, return_verts=return_verts)
        loss = sum((t * t).sum() for t in (out.vertices, out.joints, out.keypoints,
                                            out.projected_joints, out.projected_keypoints)
                   if t is not None)
        loss.backward()
    torch.cuda.synchronize()
    print(f"{precision}: {len(cases(batches))} cases in {time.perf_counter() - start:.1f} s",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="one precision in this process (default: all, in parallel)")
    parser.add_argument("--batches", default="1,37,4096")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.precision:
        return warm(args.precision, batches)
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--precision", p,
                               "--batches", args.batches]) for p in PRECISIONS]
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
