"""GPU report for the reference CUDA machine (shared/GPU.md: H100/H200, torch 2.11, triton 3.6).

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_report.py 2>&1 | tee gpu_report.md

In under 8 minutes it:
1. measures the card: device-to-device copy bandwidth, fp32 (CUDA-core) and bf16 matmul rates;
2. checks parity against smplx on the GPU (vertices, joints, gradients), float32;
3. times smplx eager, torch.compile(smplx), hmr_fast's torch backend and hmr_fast's Triton
   kernels (exact fp32 and TF32) for B in 1, 64, 1024, 4096, 16384, forward and
   forward+backward, plus keypoint mode (return_verts=False with HMR's 19 keypoints);
4. times the discriminator if hmr_fast.models.discriminator exists;
and prints markdown tables with speed-ups over smplx eager and the physical floor (bytes over
measured bandwidth, FLOPs over measured fp32 and bf16 rates) beside each figure.

Timing: triton.testing.do_bench (median; warm-up first; it flushes L2 between calls), cycling
through several random input sets. It needs no SMPL file: the embedded procedural body,
written to npz for smplx. Every row is in its own try/except; failures are printed and the
report goes on. A time budget skips the remaining rows rather than overrunning.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import torch

BATCHES = (1, 64, 1024, 4096, 16384)
MODES = ("forward", "forward_backward")
NUM_VERTS = 6890
NUM_BETAS = 10
NUM_POSE_FEATURES = 207
SKIN_K = 4


# --------------------------------------------------------------------- pure-Python pieces


def smpl_cost(
    batch: int,
    mode: str,
    keypoints: bool = False,
    num_verts: int = NUM_VERTS,
    num_betas: int = NUM_BETAS,
    skin_k: int = SKIN_K,
    itemsize: int = 4,
):
    """(bytes, flops) an ideal fused SMPL must move and compute.

    Forward: read blend_dirs ((L + 207) x 3V) once, write the vertices (B x V x 3);
    2 (L + 207) 3V FLOPs of blend shapes + about 30 K FLOPs of skinning per vertex.
    Backward: read the vertex gradient, blend_dirs again, recompute the blend GEMM and do the
    transposed one (3x the forward's FLOPs). Keypoint mode skins about 130 vertices.
    """
    verts = 130 if keypoints else num_verts
    coeffs = num_betas + NUM_POSE_FEATURES
    model_bytes = coeffs * 3 * verts * itemsize
    out_bytes = batch * verts * 3 * itemsize if not keypoints else batch * 64 * 3 * itemsize
    flops = batch * (2 * coeffs * 3 * verts + 30 * skin_k * verts)
    if mode == "forward":
        return model_bytes + out_bytes, flops
    return 2 * model_bytes + 2 * out_bytes, 3 * flops


def floor_ms(nbytes: float, flops: float, bandwidth: float, rate: float) -> float:
    """Lower bound in ms: max(bytes / bandwidth, flops / rate) (bytes/s, FLOP/s)."""
    return 1e3 * max(nbytes / bandwidth, flops / rate)


def format_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 3 significant digits."""

    def cell(x):
        if isinstance(x, float):
            return f"{x:.3g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


class Budget:
    """Wall-clock budget; rows past it are skipped, not run."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


# ------------------------------------------------------------------------------ GPU pieces


def _bench(fn, warmup_ms=25, rep_ms=100) -> float:
    if _CPU_SMOKE:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


# --cpu-smoke: run every code path once on CPU with tiny batches (no timing claims).
_CPU_SMOKE = False


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _copy_bandwidth(n: int, device) -> float:
    """Device-to-device copy of n fp32 values, read + write bytes per second."""
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3)


def measure_card(device) -> dict:
    """Copy bandwidth (bytes/s), fp32 CUDA-core and bf16 tensor-core matmul rates (FLOP/s)."""
    out = {}
    n = 1 << 28  # 1 GiB of fp32
    out["bandwidth"] = _copy_bandwidth(n, device)
    size = 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    out["bf16"] = 2 * size**3 / (_bench(lambda: a @ b) * 1e-3)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = a.float(), b.float()
    out["fp32"] = 2 * size**3 / (_bench(lambda: a @ b) * 1e-3)
    torch.backends.cuda.matmul.allow_tf32 = prev
    return out


def _inputs(batch, device, sets=3):
    from hmr_fast.bench_cli import random_inputs

    return random_inputs(batch, sets=sets, device=device)


def _step(model, inputs, mode, keypoints=False, compiled=None):
    """One call per invocation, cycling through the input sets."""
    counter = [0]
    fn = compiled or model
    kwargs = {"return_verts": not keypoints}
    if mode == "forward":

        def run():
            counter[0] += 1
            with torch.no_grad():
                fn(**inputs[counter[0] % len(inputs)], **kwargs)

        return run
    leaves = [{k: v.clone().requires_grad_(True) for k, v in x.items()} for x in inputs]

    def run_backward():
        counter[0] += 1
        out = fn(**leaves[counter[0] % len(leaves)], **kwargs)
        loss = out.joints.sum()
        if out.vertices is not None:
            loss = loss + out.vertices.sum()
        if getattr(out, "keypoints", None) is not None:
            loss = loss + out.keypoints.sum()
        loss.backward()

    return run_backward


def build_models(device) -> dict:
    from hmr_fast import SMPL
    from hmr_fast.bench_cli import build_model, model_file

    path = model_file()  # the procedural body, written where smplx can read it
    models = {}
    builders = (
        ("smplx", lambda: build_model("smplx", path)),
        ("hmr_fast torch", lambda: SMPL(path, backend="torch")),
        ("hmr_fast triton", lambda: SMPL(path, backend="triton")),  # tf32x3 blend GEMMs
        ("hmr_fast triton ieee", lambda: SMPL(path, backend="triton", precision="ieee")),
        ("hmr_fast triton tf32", lambda: SMPL(path, backend="triton", precision="tf32")),
    )
    for name, build in builders:
        try:
            models[name] = build().to(device)
        except Exception as exc:
            print(f"- could not build {name}: {type(exc).__name__}: {exc}")
    return models


def parity(models: dict, device) -> list[list]:
    """Max abs differences vs smplx (B = 64, float32) of values and gradients."""
    rows = []
    ref_model = models.get("smplx")
    if ref_model is None:
        return rows
    x = {k: v.requires_grad_(True) for k, v in _inputs(64, device, sets=1)[0].items()}
    ref = ref_model(**x)
    w = torch.randn_like(ref.vertices)
    ref_grads = torch.autograd.grad(
        (ref.vertices * w).sum() + ref.joints.sum(), [x["betas"], x["body_pose"], x["transl"]]
    )
    for name in ("hmr_fast torch", "hmr_fast triton"):
        if name not in models:
            continue
        try:
            out = models[name](**x)
            grads = torch.autograd.grad(
                (out.vertices * w).sum() + out.joints.sum(),
                [x["betas"], x["body_pose"], x["transl"]],
            )
            rows.append(
                [
                    name,
                    (out.vertices - ref.vertices).abs().max().item(),
                    (out.joints - ref.joints).abs().max().item(),
                ]
                + [((g - r).abs().max() / r.abs().max()).item() for g, r in zip(grads, ref_grads)]
            )
        except Exception as exc:
            rows.append([name, f"FAILED {type(exc).__name__}: {exc}", "", "", "", ""])
    return rows


def smpl_rows(models, device, card, budget: Budget, batches, compile_smplx: bool) -> list[list]:
    rows = []
    impls = dict(models)
    compiled = {}
    for batch in batches:
        inputs = _inputs(batch, device)
        for mode in MODES:
            nbytes, flops = smpl_cost(batch, mode)
            fl32 = floor_ms(nbytes, flops, card["bandwidth"], card["fp32"])
            fl16 = floor_ms(nbytes, flops, card["bandwidth"], card["bf16"])
            base = None
            names = list(impls)
            if compile_smplx and "smplx" in impls:
                names.insert(1, "smplx compile")
            for name in names:
                if budget.left() < 20:
                    rows.append([batch, mode, name, "skipped (time budget)", "", "", ""])
                    continue
                try:
                    if name == "smplx compile":
                        if "smplx" not in compiled:
                            compiled["smplx"] = torch.compile(impls["smplx"], dynamic=False)
                        fn = _step(impls["smplx"], inputs, mode, compiled=compiled["smplx"])
                    else:
                        fn = _step(impls[name], inputs, mode)
                    fn()  # first call compiles / builds caches
                    _sync(device)
                    ms = _bench(fn)
                    if name == "smplx":
                        base = ms
                    speed = f"{base / ms:.2f}x" if base else ""
                    rows.append([batch, mode, name, ms, speed, fl32, fl16])
                except Exception as exc:
                    rows.append(
                        [
                            batch,
                            mode,
                            name,
                            f"FAILED {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}",
                            "",
                            "",
                            "",
                        ]
                    )
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            print(
                format_table(
                    ["B", "mode", "impl", "ms", "vs smplx", "floor fp32 ms", "floor bf16 ms"],
                    rows[-len(names) :],
                ),
                flush=True,
            )
    return rows


def keypoint_rows(device, card, budget: Budget, batches) -> list[list]:
    """return_verts=False with HMR's 19 keypoints: torch backend vs Triton kernels."""
    from hmr_fast import SMPL

    rows = []
    layers = {}
    for backend in ("torch", "triton"):
        try:
            layer = SMPL(backend=backend).to(device)
            layer.set_keypoint_regressor(layer.hmr_keypoint_regressor())
            layers[backend] = layer
        except Exception as exc:
            print(f"- keypoint mode {backend}: {type(exc).__name__}: {exc}")
    for batch in batches:
        inputs = _inputs(batch, device)
        for mode in MODES:
            nbytes, flops = smpl_cost(batch, mode, keypoints=True)
            fl32 = floor_ms(nbytes, flops, card["bandwidth"], card["fp32"])
            base = None
            for backend, layer in layers.items():
                if budget.left() < 15:
                    rows.append([batch, mode, backend, "skipped (time budget)", "", ""])
                    continue
                try:
                    fn = _step(layer, inputs, mode, keypoints=True)
                    fn()
                    ms = _bench(fn)
                    base = ms if backend == "torch" else base
                    rows.append(
                        [
                            batch,
                            mode,
                            f"hmr_fast {backend} keypoints",
                            ms,
                            f"{base / ms:.2f}x" if base else "",
                            fl32,
                        ]
                    )
                except Exception as exc:
                    rows.append(
                        [batch, mode, backend, f"FAILED {type(exc).__name__}: {exc}", "", ""]
                    )
    return rows


def discriminator_rows(device, budget: Budget, batches) -> list[list]:
    try:
        from hmr_fast.models.discriminator import Discriminator
    except ImportError:
        return []
    rows = []
    for batch in batches:
        pose = 0.5 * torch.randn(batch, 69, device=device)
        betas = torch.randn(batch, 10, device=device)
        base = None
        for backend in ("torch", "triton"):
            if budget.left() < 10:
                rows.append([batch, backend, "skipped (time budget)", "", ""])
                continue
            try:
                torch.manual_seed(0)
                disc = Discriminator(backend=backend).to(device)

                def fwd(disc=disc, pose=pose, betas=betas):
                    with torch.no_grad():
                        disc(pose, betas)

                def fwd_bwd(disc=disc, pose=pose, betas=betas):
                    p = pose.clone().requires_grad_(True)
                    disc(p, betas).sum().backward()

                fwd()
                fwd_bwd()
                ms_f, ms_b = _bench(fwd), _bench(fwd_bwd)
                if backend == "torch":
                    base = (ms_f, ms_b)
                speed = f"{base[0] / ms_f:.2f}x / {base[1] / ms_b:.2f}x" if base else ""
                rows.append([batch, backend, ms_f, ms_b, speed])
            except Exception as exc:
                rows.append([batch, backend, f"FAILED {type(exc).__name__}: {exc}", "", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-s", type=float, default=450.0)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile(smplx)")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="run every path once on CPU, batch 2 (checks the script only)",
    )
    args = parser.parse_args(argv)
    global _CPU_SMOKE
    _CPU_SMOKE = args.cpu_smoke
    if not torch.cuda.is_available() and not _CPU_SMOKE:
        print("gpu_report: no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    batches = [int(b) for b in args.batches.split(",")]
    import triton

    if _CPU_SMOKE:
        device, batches, args.no_compile = torch.device("cpu"), [2], True
        card = {"bandwidth": 1e11, "fp32": 1e12, "bf16": 1e12}
        print("# hmr-fast GPU report: CPU smoke run (numbers mean nothing)\n")
    else:
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        print(
            f"# hmr-fast GPU report: {props.name}, torch {torch.__version__}, triton "
            f"{triton.__version__}, {time.strftime('%Y-%m-%d')}\n"
        )
        card = measure_card(device)
    print(
        f"Measured: copy {card['bandwidth'] / 1e12:.2f} TB/s, fp32 matmul (no TF32) "
        f"{card['fp32'] / 1e12:.1f} TFLOP/s, bf16 matmul {card['bf16'] / 1e12:.0f} TFLOP/s\n"
    )
    models = build_models(device)

    sections = [
        (
            "## Parity vs smplx (B=64, fp32; grads: max abs diff / max abs)",
            [
                "impl",
                "verts max abs",
                "joints max abs",
                "grad betas",
                "grad body_pose",
                "grad transl",
            ],
            lambda: parity(models, device),
        ),
        (
            "## SMPL layer (ms, median)",
            ["B", "mode", "impl", "ms", "vs smplx", "floor fp32 ms", "floor bf16 ms"],
            lambda: smpl_rows(models, device, card, budget, batches, not args.no_compile),
        ),
        (
            "## Keypoint mode (return_verts=False, 19 HMR keypoints)",
            ["B", "mode", "impl", "ms", "vs torch backend", "floor fp32 ms"],
            lambda: keypoint_rows(device, card, budget, batches),
        ),
        (
            "## Discriminator (ms fwd, ms fwd+bwd)",
            ["B", "backend", "fwd ms", "fwd+bwd ms", "speed-up"],
            lambda: discriminator_rows(
                device, budget, [b for b in batches if b >= 64 or _CPU_SMOKE]
            ),
        ),
    ]
    for title, header, fn in sections:
        print(title, flush=True)
        try:
            rows = fn()
            print(format_table(header, rows) if rows else "(no rows)", "\n", flush=True)
        except Exception:
            print("FAILED:\n```\n" + traceback.format_exc() + "```\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
