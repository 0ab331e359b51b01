"""GPU report for the reference CUDA machine (shared/GPU.md: H100/H200, torch 2.11, triton 3.6):
parity-gated SMPL timings, keypoint mode, the discriminator and an HMR training step.

benchmarks/gpu_check.sh runs it in two stages (one process each, so a crash in one does not
stop the other) after the compile report and `pytest -m gpu`:

    PYTHONPATH=$PWD python3 benchmarks/gpu_report.py --sections env,card,parity,smpl,keypoints \\
        --out report.md
    PYTHONPATH=$PWD python3 benchmarks/gpu_report.py --sections disc,train --out report.md
    python3 benchmarks/gpu_report.py --cpu-smoke      # every path once on CPU; numbers mean nothing

Nothing needs installing: run from the repository root with it on PYTHONPATH (no editable
install). smplx is optional (its rows then say "smplx not installed").

Sections (markdown, appended to --out as each finishes, and printed):
* env: date, GPU, driver/CUDA, torch, triton, python, smplx, nvtx.
* card: measured copy bandwidth and fp32 / bf16 matmul rates (for the floors).
* parity: the GATE. Each implementation is compared with a float64 reference
  (benchmarks/gpu_parity.py: values within 2e-5 m fp32, gradients of every input within
  1e-4 relative) at odd batch sizes (1, 37), axis-angle and rotation-matrix input, full and
  keypoint mode. An implementation that fails or raises is never timed: its rows say
  "refused". An implementation not checked is refused too (the gate is closed by default).
* smpl: ms per call, B = 1, 64, 4096, 16384, forward and forward+backward, for smplx eager,
  smplx torch.compile'd, hmr_fast triton (tf32x3, the CUDA default), hmr_fast triton ieee and
  hmr_fast's torch backend; hmr_fast layers with check_inputs=False (no host sync), plus
  tf32x3 with the default check_inputs=True (its rows against the unchecked ones are the
  check's cost: a cat, a sum and a host sync per call). Three
  timings, because each hides something:
    - "loop": back-to-back calls, one sync at the end, wall clock per call (throughput with
      the host's launch overhead; warm L2). The honest figure at small B.
    - "do_bench": triton.testing.do_bench median, L2 flushed before each call (a cold-cache
      GPU time; at small B it hides host overhead behind the flush).
    - "graph": forward replayed from a CUDA graph (no host overhead at all; B <= 64 only).
  Compiled smplx: one graph per (batch, mode): torch._dynamo.reset() before each, dynamic=False,
  so the recompile limit never sends a batch back to eager; the row reports how many graphs
  dynamo built and is refused if its output differs from eager smplx beyond the budget.
* keypoints: return_verts=False with HMR's 19 keypoints and rotation-matrix input (HMR's call).
* disc: the discriminator, torch vs fused Triton (parity-gated), forward and forward+backward.
* train: one HMR training step (ResNet-50, 224 px, batch 64, T = 3), unfused (torch) vs fused
  (Triton SMPL + discriminator): wall-clock step time and the NVTX-range breakdown
  (hmr_fast.train.ranges, timed mode); fused is refused if its first-step losses differ.

The floor beside each SMPL figure is max(bytes / measured bandwidth, FLOPs / measured rate).
A time budget (--budget-s) skips the remaining rows rather than overrunning.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch

BATCHES = (1, 64, 4096, 16384)
PARITY_BATCHES = (1, 37)
MODES = ("forward", "forward_backward")
SECTIONS = ("env", "card", "parity", "smpl", "keypoints", "disc", "train")
NUM_VERTS = 6890
NUM_BETAS = 10
NUM_POSE_FEATURES = 207
SKIN_K = 4
GRAPH_MAX_BATCH = 64
# torch.compile backend of the "smplx compiled" rows (the CPU tests use dynamo's "eager").
COMPILE_BACKEND = "inductor"
SMPLX = "smplx eager"
SMPLX_COMPILED = "smplx compiled"
HMR_IMPLS = {
    # name: SMPL(...) keyword arguments
    "hmr_fast triton tf32x3": {"backend": "triton", "precision": None},
    "hmr_fast triton ieee": {"backend": "triton", "precision": "ieee"},
    "hmr_fast torch": {"backend": "torch", "precision": None},
}
# Timed beside an unchecked twin with the default check_inputs=True, which measures what the
# input check costs on CUDA (a cat, a sum and one host sync per call; issue 12). Not
# parity-checked again: the check changes no value, so the twin's gate decides.
CHECKED_IMPLS = {"hmr_fast triton tf32x3, check_inputs=True": "hmr_fast triton tf32x3"}


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
        return str(x).replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_int_list(text: str) -> list[int]:
    """"1,64, 4096" -> [1, 64, 4096]; every entry a positive integer."""
    values = [int(t) for t in text.split(",") if t.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_sections(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"sections: unknown {unknown}; choose from {SECTIONS}")
    return names


def priority_order(batches) -> list[int]:
    """The order batches are measured in: the issue's targets first (B = 4096, then 1), so
    that a time budget running out skips the least important rows."""
    return sorted(batches, key=lambda b: (b != 4096, b != 1, b))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_report.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sections", type=parse_sections, default=list(SECTIONS),
                        help=f"comma-separated, from {','.join(SECTIONS)}")
    parser.add_argument("--batches", type=parse_int_list, default=list(BATCHES))
    parser.add_argument("--parity-batches", type=parse_int_list, default=list(PARITY_BATCHES))
    parser.add_argument("--disc-batches", type=parse_int_list, default=[384, 4096, 16384])
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="wall-clock budget; rows past it are skipped")
    parser.add_argument("--train-steps", type=int, default=5, help="timed steps per backend")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile(smplx)")
    parser.add_argument("--out", default=None, help="append the markdown here too")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="every path once on CPU at tiny sizes (checks the script only)")
    return parser


class Budget:
    """Wall-clock budget; rows past it are skipped, not run."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Report:
    """Markdown written as it is produced: printed, and appended (flushed) to `path`, so
    that a crash or a timeout keeps everything finished before it."""

    def __init__(self, path: str | None = None):
        self.path = path

    def write(self, text: str = "") -> None:
        print(text, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text + "\n")

    def table(self, header: list[str], rows: list[list]) -> None:
        self.write((format_table(header, rows) if rows else "(no rows)") + "\n")


class Gate:
    """Which implementations passed parity. Closed by default: an implementation with no
    record, or with any failed check, may not be timed."""

    def __init__(self):
        self._failures: dict[str, list[str]] = {}

    def record(self, name: str, ok: bool, reason: str = "") -> None:
        failures = self._failures.setdefault(name, [])
        if not ok:
            failures.append(reason or "failed")

    def allowed(self, name: str) -> bool:
        return name in self._failures and not self._failures[name]

    def refusal(self, name: str) -> str:
        if name not in self._failures:
            return "refused: parity not checked"
        return "refused: failed parity (" + "; ".join(self._failures[name])[:200] + ")"

    def names(self) -> list[str]:
        return list(self._failures)


def failure_cell(exc: BaseException) -> str:
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"FAILED {type(exc).__name__}: {first}"


# ------------------------------------------------------------------------------ GPU pieces

# --cpu-smoke: run every code path once on CPU with tiny sizes (no timing claims).
_CPU_SMOKE = False


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loop(fn: Callable[[], object], device, min_s: float = 0.05, repeats: int = 3) -> float:
    """ms per call of back-to-back calls (one sync per loop): includes the host's launch
    overhead wherever the GPU waits for it, and runs with a warm L2."""
    fn()
    _sync(device)
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s / 4 or n >= 4096 or _CPU_SMOKE:
            break
        n *= 4
    per_call = []
    for _ in range(1 if _CPU_SMOKE else repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        per_call.append((time.perf_counter() - start) / n)
    return 1e3 * statistics.median(per_call)


def time_do_bench(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """triton.testing.do_bench's median in ms (L2 flushed before each call)."""
    if _CPU_SMOKE:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def time_cuda_graph(fn: Callable[[], object], device) -> float:
    """ms per replay of `fn` captured in a CUDA graph (static inputs): GPU time without any
    host overhead."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need CUDA")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_loop(graph.replay, device)


def _copy_bandwidth(n: int, device) -> float:
    """Device-to-device copy of n fp32 values, read + write bytes per second."""
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = time_do_bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3)


def measure_card(device) -> dict:
    """Copy bandwidth (bytes/s), fp32 CUDA-core and bf16 tensor-core matmul rates (FLOP/s)."""
    if _CPU_SMOKE:
        return {"bandwidth": 1e11, "fp32": 1e12, "bf16": 1e12}
    out = {"bandwidth": _copy_bandwidth(1 << 28, device)}  # 1 GiB of fp32
    size = 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    out["bf16"] = 2 * size**3 / (time_do_bench(lambda: a @ b) * 1e-3)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a, b = a.float(), b.float()
        out["fp32"] = 2 * size**3 / (time_do_bench(lambda: a @ b) * 1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return out


def input_sets(batch: int, device, sets: int = 3, pose2rot: bool = True,
               keys=("betas", "body_pose", "global_orient", "transl"), seed: int = 0) -> list:
    """Several independent random input sets (cycled through, so that no call sees the
    previous call's inputs in cache)."""
    from benchmarks.gpu_parity import make_inputs

    gen = torch.Generator().manual_seed(seed + batch)
    out = []
    for _ in range(sets):
        x = make_inputs(batch, torch.float32, device, pose2rot, gen)
        out.append({k: x[k] for k in keys})
    return out


def make_step(fn, inputs: list[dict], mode: str, **kwargs) -> Callable[[], None]:
    """One call per invocation, cycling through the input sets. forward_backward: a loss over
    every float output (vertices, joints, keypoints) with dense weights, as a training loss
    would (a `.sum()` would hand the backward expanded gradients)."""
    counter = [0]
    if mode == "forward":

        def run():
            counter[0] += 1
            with torch.no_grad():
                fn(**inputs[counter[0] % len(inputs)], **kwargs)

        return run
    if mode != "forward_backward":
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    leaves = [{k: v.clone().requires_grad_(True) for k, v in x.items()} for x in inputs]
    weights: dict = {}

    def run_backward():
        counter[0] += 1
        out = fn(**leaves[counter[0] % len(leaves)], **kwargs)
        loss = 0
        for name in ("vertices", "joints", "keypoints"):
            value = getattr(out, name, None)
            if value is None:
                continue
            if name not in weights:
                weights[name] = torch.randn_like(value)
            loss = loss + (value * weights[name]).sum()
        loss.backward()

    return run_backward


# ----------------------------------------------------------------------- implementations


def model_path() -> str:
    from hmr_fast.bench_cli import model_file

    return model_file()  # the procedural body, written where smplx can read it


def build_smplx(path: str, device):
    from hmr_fast.bench_cli import build_model

    return build_model("smplx", path).to(device)


def build_hmr(path: str, device, keypoints: bool, check_inputs: bool = False, **kwargs):
    import warnings

    from hmr_fast import SMPL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return SMPL(path, check_inputs=check_inputs,
                    keypoint_regressor="hmr" if keypoints else None, **kwargs).to(device)


def build_impls(device, report: Report) -> tuple[dict, dict, object]:
    """({name: full-mode module}, {name: module with HMR's keypoint regressor}, reference
    layer). Missing smplx is reported, not fatal."""
    path = model_path()
    full, kp = {}, {}
    try:
        full[SMPLX] = build_smplx(path, device)
    except ImportError:
        full[SMPLX] = None  # its rows say so
        report.write(f"- {SMPLX}: smplx not installed")
    except Exception as exc:
        report.write(f"- {SMPLX}: could not build: {failure_cell(exc)}")
    for name, kwargs in HMR_IMPLS.items():
        checked = [c for c, twin in CHECKED_IMPLS.items() if twin == name]
        try:
            full[name] = build_hmr(path, device, False, **kwargs)
            kp[name] = build_hmr(path, device, True, **kwargs)
            for c in checked:
                full[c] = build_hmr(path, device, False, check_inputs=True, **kwargs)
                kp[c] = build_hmr(path, device, True, check_inputs=True, **kwargs)
        except Exception as exc:
            report.write(f"- {name}: could not build: {failure_cell(exc)}")
    reference = build_hmr(path, device, True, backend="torch")
    return full, kp, reference


def parity_section(full: dict, kp: dict, reference, gate: Gate, device, batches,
                   checker=None) -> list[list]:
    """Check every implementation against the float64 reference and record the gate.

    hmr_fast: the timed (no-regressor) module in full mode, and the keypoint module in full
    and keypoint mode, axis-angle and rotation-matrix input, every input's gradient. smplx:
    full mode, axis-angle (what is timed), vertices and joints, no camera.
    `checker` defaults to gpu_parity.check_parity (tests pass a fake).
    """
    from benchmarks import gpu_parity as gp

    check = checker or gp.check_parity
    rows = []
    for name in list(full) + [n for n in kp if n not in full]:
        if name in full and full[name] is None:  # not installed: nothing to check or time
            continue
        if name in CHECKED_IMPLS:  # gated by its unchecked twin
            continue
        cases = []
        for batch in batches:
            if name == SMPLX:
                cases.append((full[name], batch, True, True, gp.SMPLX_OUTPUTS, gp.SMPLX_INPUTS))
                continue
            for pose2rot in (True, False):
                if name in full:
                    cases.append((full[name], batch, pose2rot, True, gp.OUTPUTS, gp.INPUTS))
                if name in kp:
                    for return_verts in (True, False):
                        cases.append((kp[name], batch, pose2rot, return_verts, gp.OUTPUTS,
                                      gp.INPUTS))
        for module, batch, pose2rot, return_verts, outputs, grads in cases:
            gen = torch.Generator().manual_seed(1000 + batch)
            x = gp.make_inputs(batch, torch.float32, device, pose2rot, gen)
            label = [name, batch, "axis-angle" if pose2rot else "rotmat",
                     "full" if return_verts else "keypoints",
                     "yes" if getattr(module, "keypoint_regressor", None) is not None else "no"]
            # hmr_fast layers are their own reference's buffers (with or without the
            # keypoint regressor, as timed); smplx is compared on vertices and joints.
            ref_layer = reference if name == SMPLX else module
            try:
                result = check(module, ref_layer, x, pose2rot=pose2rot,
                               return_verts=return_verts, outputs=outputs, grad_inputs=grads)
            except Exception as exc:  # a crash in the checker itself also closes the gate
                gate.record(name, False, failure_cell(exc))
                rows.append(label + ["", "", failure_cell(exc)])
                continue
            reason = f"B={batch} {label[2]} {label[3]}: " + "; ".join(result.failures)
            gate.record(name, result.ok, reason)
            rows.append(label + [max(result.value_err.values(), default=float("nan")),
                                 max(result.grad_rel.values(), default=float("nan")),
                                 "ok" if result.ok else "FAILED: " + "; ".join(result.failures)])
    return rows


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compile_smplx(model, step_fn_factory, eager_check: Callable[[object], str | None]):
    """A fresh torch.compile of smplx for one (batch, mode): (compiled module, graphs built,
    failure or None). torch._dynamo.reset() first: every (batch, mode) gets its own cache,
    so the recompile limit can never send a large batch back to eager under the compiled
    label."""
    torch._dynamo.reset()
    before = _graph_count()
    compiled = torch.compile(model, dynamic=False, backend=COMPILE_BACKEND)
    step = step_fn_factory(compiled)
    step()  # compiles
    graphs = _graph_count() - before
    return compiled, step, graphs, eager_check(compiled)


def smpl_section(full: dict, gate: Gate, device, card: dict, budget: Budget, batches,
                 compile_smplx_rows: bool, report: Report) -> list[list]:
    """The timing table (see the module docstring for the three timings)."""
    from benchmarks import gpu_parity as gp

    rows = []
    names = list(full)
    if SMPLX in full and compile_smplx_rows:
        names.insert(names.index(SMPLX) + 1, SMPLX_COMPILED)
    for batch in priority_order(batches):
        inputs = input_sets(batch, device)
        for mode in MODES:
            nbytes, flops = smpl_cost(batch, mode)
            fl32 = floor_ms(nbytes, flops, card["bandwidth"], card["fp32"])
            fl16 = floor_ms(nbytes, flops, card["bandwidth"], card["bf16"])
            base = base_compiled = None
            block = []
            for name in names:
                label = name
                gate_name = SMPLX if name == SMPLX_COMPILED else CHECKED_IMPLS.get(name, name)
                if full.get(gate_name, 0) is None:
                    block.append([batch, mode, name, "smplx not installed", "", "", "", "", fl32,
                                  fl16])
                    continue
                if not gate.allowed(gate_name):
                    block.append([batch, mode, name, gate.refusal(gate_name), "", "", "", "", fl32,
                                  fl16])
                    continue
                # A compile takes tens of seconds: start one only with room for it.
                if budget.left() < (45 if name == SMPLX_COMPILED else 15):
                    block.append([batch, mode, name, "skipped (time budget)", "", "", "", "", fl32,
                                  fl16])
                    continue
                try:
                    if name == SMPLX_COMPILED:
                        eager = full[SMPLX]
                        check_x = {k: v.clone() for k, v in inputs[0].items()}

                        def eager_check(compiled, eager=eager, check_x=check_x):
                            with torch.no_grad():
                                a, b = compiled(**check_x), eager(**check_x)
                            err = max((a.vertices - b.vertices).abs().max().item(),
                                      (a.joints - b.joints).abs().max().item())
                            return None if err <= gp.TOL32_M else f"differs from eager: {err:.3g}"

                        model, fn, graphs, problem = compile_smplx(
                            eager, lambda m, x=inputs, md=mode: make_step(m, x, md), eager_check)
                        label = f"{name} ({COMPILE_BACKEND}, dynamic=False, {graphs} graph" \
                                f"{'s' if graphs != 1 else ''})"
                        if problem:
                            block.append([batch, mode, label, f"refused: {problem}", "", "", "",
                                          "", fl32, fl16])
                            continue
                    else:
                        model = full[name]
                        fn = make_step(model, inputs, mode)
                        fn()  # first call: builds plans / compiles kernels
                    loop_ms = time_loop(fn, device)
                    bench_ms = time_do_bench(fn)
                    graph_ms = ""
                    if mode == "forward" and batch <= GRAPH_MAX_BATCH and device.type == "cuda":
                        static = {k: v.clone() for k, v in inputs[0].items()}

                        def forward_static(model=model, static=static):
                            with torch.no_grad():
                                model(**static)

                        try:
                            graph_ms = time_cuda_graph(forward_static, device)
                        except Exception as exc:
                            graph_ms = f"n/a ({type(exc).__name__})"
                    if name == SMPLX:
                        base = loop_ms
                    elif name == SMPLX_COMPILED:
                        base_compiled = loop_ms
                    speed = f"{base / loop_ms:.2f}x" if base else ""
                    speed_c = f"{base_compiled / loop_ms:.2f}x" if base_compiled else ""
                    block.append([batch, mode, label, loop_ms, bench_ms, graph_ms, speed, speed_c,
                                  fl32, fl16])
                except Exception as exc:
                    block.append([batch, mode, label, failure_cell(exc), "", "", "", "", fl32,
                                  fl16])
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            rows += block
            print(format_table(SMPL_HEADER, block), flush=True)
    torch._dynamo.reset()
    return sorted(rows, key=lambda r: (r[0], MODES.index(r[1])))  # stable: impl order kept


SMPL_HEADER = ["B", "mode", "impl", "loop ms", "do_bench ms (L2 flushed)", "graph ms",
               "vs smplx eager (loop)", "vs smplx compiled (loop)", "floor fp32 ms",
               "floor bf16 ms"]


def keypoint_section(kp: dict, gate: Gate, device, card: dict, budget: Budget,
                     batches) -> list[list]:
    """return_verts=False, HMR's 19 keypoints, rotation-matrix input, no transl or camera
    (HMR's own call; it projects outside the layer)."""
    rows = []
    for batch in priority_order(batches):
        inputs = input_sets(batch, device, pose2rot=False,
                            keys=("betas", "body_pose", "global_orient"))
        for mode in MODES:
            nbytes, flops = smpl_cost(batch, mode, keypoints=True)
            fl32 = floor_ms(nbytes, flops, card["bandwidth"], card["fp32"])
            base = None
            for name, module in kp.items():
                gate_name = CHECKED_IMPLS.get(name, name)
                if not gate.allowed(gate_name):
                    rows.append([batch, mode, name, gate.refusal(gate_name), "", "", fl32])
                    continue
                if budget.left() < 10:
                    rows.append([batch, mode, name, "skipped (time budget)", "", "", fl32])
                    continue
                try:
                    fn = make_step(module, inputs, mode, return_verts=False, pose2rot=False)
                    fn()
                    loop_ms, bench_ms = time_loop(fn, device), time_do_bench(fn)
                    if name == "hmr_fast torch":
                        base = loop_ms
                    rows.append([batch, mode, name, loop_ms, bench_ms,
                                 f"{base / loop_ms:.2f}x" if base else "", fl32])
                except Exception as exc:
                    rows.append([batch, mode, name, failure_cell(exc), "", "", fl32])
    return sorted(rows, key=lambda r: (r[0], MODES.index(r[1])))


def disc_section(device, budget: Budget, batches, gate: Gate) -> list[list]:
    """Discriminator torch vs triton (same weights); triton is timed only if its outputs and
    gradients (input and parameters) agree with torch's within 4e-5 / 1e-4 relative (twice
    the fp32 budget of tests/test_discriminator.py for each against float64)."""
    from hmr_fast.models.discriminator import Discriminator

    rows = []
    torch.manual_seed(0)
    discs = {"torch": Discriminator(backend="torch").to(device)}
    try:
        discs["triton"] = Discriminator(backend="triton").to(device)
        discs["triton"].load_state_dict(discs["torch"].state_dict())
    except Exception as exc:
        gate.record("disc triton", False, failure_cell(exc))
    gate.record("disc torch", True)
    if "triton" in discs:
        gen = torch.Generator().manual_seed(7)
        pose = (0.5 * torch.randn(37, 69, generator=gen)).to(device)
        betas = torch.randn(37, 10, generator=gen).to(device)
        results = {}
        try:
            for backend, disc in discs.items():
                p = pose.clone().requires_grad_(True)
                out = disc(p, betas)
                w = torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(device)
                grads = torch.autograd.grad((out * w).sum(), [p, *disc.parameters()])
                results[backend] = (out.detach(), grads)
            (o_t, g_t), (o_f, g_f) = results["torch"], results["triton"]
            err = ((o_f - o_t).abs().max() / o_t.abs().max()).item()
            grad_err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                           for a, b in zip(g_f, g_t))
            ok = err <= 4e-5 and grad_err <= 1e-4
            gate.record("disc triton", ok, f"output rel {err:.3g}, grad rel {grad_err:.3g}")
        except Exception as exc:
            gate.record("disc triton", False, failure_cell(exc))
    for batch in batches:
        gen = torch.Generator().manual_seed(batch)
        pose = (0.5 * torch.randn(batch, 69, generator=gen)).to(device)
        betas = torch.randn(batch, 10, generator=gen).to(device)
        base = None
        for backend, disc in discs.items():
            name = f"disc {backend}"
            if not gate.allowed(name):
                rows.append([batch, backend, gate.refusal(name), "", "", "", ""])
                continue
            if budget.left() < 10:
                rows.append([batch, backend, "skipped (time budget)", "", "", "", ""])
                continue
            try:

                def fwd(disc=disc, pose=pose, betas=betas):
                    with torch.no_grad():
                        disc(pose, betas)

                def fwd_bwd(disc=disc, pose=pose, betas=betas):
                    p = pose.clone().requires_grad_(True)
                    disc(p, betas).sum().backward()

                fwd()
                fwd_bwd()
                loop_f, loop_b = time_loop(fwd, device), time_loop(fwd_bwd, device)
                bench_f, bench_b = time_do_bench(fwd), time_do_bench(fwd_bwd)
                if backend == "torch":
                    base = (loop_f, loop_b)
                speed = f"{base[0] / loop_f:.2f}x / {base[1] / loop_b:.2f}x" if base else ""
                rows.append([batch, backend, loop_f, loop_b, bench_f, bench_b, speed])
            except Exception as exc:
                rows.append([batch, backend, failure_cell(exc), "", "", "", ""])
    return rows


DISC_HEADER = ["B", "backend", "fwd loop ms", "fwd+bwd loop ms", "fwd do_bench ms",
               "fwd+bwd do_bench ms", "speed-up fwd / fwd+bwd (loop)"]


def train_section(device, budget: Budget, steps: int, report: Report) -> tuple[list, list]:
    """One HMR training step, unfused (torch backends) then fused (Triton SMPL and
    discriminator), from the same weights on the same synthetic batches; (header, rows).

    Per backend: 2 warm-up steps (the first one's losses are the gate: fused must match
    unfused within 1e-3 relative), then `steps` steps with the ranges untimed (wall clock
    per step, one sync per step), then `steps` with Ranges(timed=True) (a sync at each range
    edge) for the breakdown. NVTX ranges are pushed in both phases (nvtx package, or torch's
    bindings without it), so an nsys capture of this run shows them.
    """
    from benchmarks.gpu_training import build_step, synthetic_batch, train_config
    from hmr_fast.train.ranges import Ranges

    if _CPU_SMOKE:
        cfg, batch, size, steps = train_config("resnet18", 64, 2, 0.5), 2, 64, 1
    else:
        cfg, batch, size = train_config("resnet50", 224, 64, 0.5), 64, 224
    try:
        import nvtx  # noqa: F401

        source = "nvtx package"
    except ImportError:
        source = "torch.cuda.nvtx (nvtx package not installed)"
    report.write(f"Setting: {cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}, "
                 f"T = {cfg.num_iters}, dropout {cfg.regressor_dropout}; NVTX: {source}; "
                 f"{steps} timed steps per phase.\n")
    gen_seed = 11
    results, first_losses = {}, {}
    for backend in ("torch", "triton"):
        name = "unfused (torch)" if backend == "torch" else "fused (triton)"
        if budget.left() < 20:
            results[name] = "skipped (time budget)"
            continue
        try:
            ranges = Ranges(timed=False, device=device)
            step, model, disc = build_step(cfg, backend, device, seed=0, ranges=ranges)
            ranges.attach(model.encoder, "backbone")
            ranges.attach(model.smpl, "smpl")
            gen = torch.Generator().manual_seed(gen_seed)
            data = [synthetic_batch(batch, size, device, gen) for _ in range(3)]
            first_losses[name] = step(*data[0], 1.0)
            step(*data[1], 1.0)
            _sync(device)
            start = time.perf_counter()
            for i in range(steps):
                step(*data[i % len(data)], 1.0)
                _sync(device)
            step_ms = 1e3 * (time.perf_counter() - start) / steps
            ranges.timed, ranges.sync = True, device.type == "cuda"
            ranges.reset()
            for i in range(steps):
                step(*data[i % len(data)], 1.0)
            results[name] = (step_ms, {k: 1e3 * v / steps for k, v in ranges.totals.items()})
            del step, model, disc
        except Exception as exc:
            results[name] = failure_cell(exc)
            report.write(f"```\n{traceback.format_exc()[-2000:]}\n```")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    fused, unfused = "fused (triton)", "unfused (torch)"
    if fused in first_losses and unfused in first_losses:
        a, b = first_losses[fused], first_losses[unfused]
        bad = {k: (a[k], b[k]) for k in b if abs(a[k] - b[k]) > 1e-3 * abs(b[k]) + 1e-6}
        if bad:
            results[fused] = f"refused: first-step losses differ from unfused: {bad}"
        report.write(f"First-step losses: unfused {b}; fused {a}.\n")
    keys = sorted({k for r in results.values() if isinstance(r, tuple) for k in r[1]})
    rows = []
    for name, r in results.items():
        if not isinstance(r, tuple):
            rows.append([name, r] + [""] * (len(keys) + 1))
            continue
        step_ms, ranges_ms = r
        share = (ranges_ms.get("smpl", 0.0) + ranges_ms.get("discriminator", 0.0)) / step_ms
        rows.append([name, step_ms] + [ranges_ms.get(k, 0.0) for k in keys]
                    + [f"{100 * share:.1f}%"])
    header = ["step", "ms per step (untimed ranges)"] + [f"{k} ms" for k in keys] + [
        "(smpl + discriminator) / step"]
    return header, rows


def env_lines(device) -> list[str]:
    import importlib
    import importlib.metadata

    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- host: {platform.node()}, {os.cpu_count()} CPUs, "
             f"python {platform.python_version()}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs")
    else:
        lines.append("- GPU: CUDA not available (no GPU section measures anything)")
    lines.append(f"- torch {torch.__version__} (CUDA {torch.version.cuda}), cuDNN "
                 f"{torch.backends.cudnn.version()}")
    for pkg in ("triton", "smplx", "nvtx", "numpy"):
        try:
            mod = importlib.import_module(pkg)
        except ImportError:
            lines.append(f"- {pkg}: not installed")
            continue
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = getattr(mod, "__version__", "(version unknown)")
        lines.append(f"- {pkg} {version} ({os.path.dirname(mod.__file__ or '')})")
    try:  # driver and clocks, as the card reports them (left as they are)
        import subprocess

        query = "name,driver_version,clocks.sm,clocks.max.sm,power.limit,persistence_mode"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0 and smi.stdout.strip():
            lines.append(f"- nvidia-smi ({query}): {smi.stdout.strip()}")
    except (OSError, subprocess.SubprocessError):
        pass
    lines.append(f"- TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}, "
                 f"TORCHINDUCTOR_COMPILE_THREADS="
                 f"{os.environ.get('TORCHINDUCTOR_COMPILE_THREADS', '')!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    global _CPU_SMOKE
    _CPU_SMOKE = args.cpu_smoke
    report = Report(args.out)
    cuda = torch.cuda.is_available()
    if _CPU_SMOKE:
        # Must be set before the kernels are first imported (they are, lazily, below).
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
        args.batches, args.parity_batches, args.disc_batches = [2], [1], [4]
        args.no_compile = True
    else:
        device = torch.device("cuda" if cuda else "cpu")
    sections = args.sections
    if "env" in sections:
        report.write("### Environment\n")
        report.write("\n".join(env_lines(device)) + "\n")
    measured = [s for s in sections if s != "env"]
    if not measured:
        return 0
    if not cuda and not _CPU_SMOKE:
        report.write(f"### {', '.join(measured)}\n\nskipped: CUDA not available, nothing "
                     "measured (run on a GPU machine; `--cpu-smoke` checks the code paths)\n")
        return 0
    if _CPU_SMOKE:
        report.write("**CPU smoke run: every path once at tiny sizes; the numbers mean "
                     "nothing.**\n")
    budget = Budget(args.budget_s)
    gate = Gate()
    card = {"bandwidth": float("nan"), "fp32": float("nan"), "bf16": float("nan")}
    status = 0

    def run(title, fn):
        nonlocal status
        report.write(f"### {title}\n")
        try:
            fn()
        except Exception:
            status = 1
            report.write("FAILED:\n```\n" + traceback.format_exc()[-3000:] + "```\n")

    full, kp, reference = {}, {}, None
    if any(s in sections for s in ("parity", "smpl", "keypoints")):

        def build():
            nonlocal full, kp, reference
            full, kp, reference = build_impls(device, report)
            names = [n for n, m in full.items() if m is not None]
            names += [f"{n} (keypoint layer)" for n in kp]
            report.write("Implementations: " + ", ".join(names) + "\n")

        run("Implementations", build)
    if "card" in sections:

        def card_fn():
            card.update(measure_card(device))
            report.write(f"Measured: copy {card['bandwidth'] / 1e12:.2f} TB/s, fp32 matmul "
                         f"(no TF32) {card['fp32'] / 1e12:.1f} TFLOP/s, bf16 matmul "
                         f"{card['bf16'] / 1e12:.0f} TFLOP/s\n")

        run("Card", card_fn)
    if "parity" in sections and reference is not None:
        run("Parity gate (float64 reference; fp32 budgets 2e-5 m, gradients 1e-4 relative)",
            lambda: report.table(
                ["impl", "B", "pose input", "mode", "keypoint regressor", "max value err",
                 "max grad rel err", "status"],
                parity_section(full, kp, reference, gate, device, args.parity_batches)))
        report.write("Gate: " + ", ".join(
            f"{n}: {'pass' if gate.allowed(n) else 'FAIL'}" for n in gate.names()) + "\n")
    if "smpl" in sections:
        run("SMPL layer, full mesh (ms per call; check_inputs=False unless named)",
            lambda: report.table(SMPL_HEADER, smpl_section(
                full, gate, device, card, budget, args.batches, not args.no_compile, report)))
    if "keypoints" in sections:
        run("Keypoint mode (return_verts=False, 19 HMR keypoints, rotation matrices)",
            lambda: report.table(
                ["B", "mode", "impl", "loop ms", "do_bench ms", "vs torch backend (loop)",
                 "floor fp32 ms"],
                keypoint_section(kp, gate, device, card, budget, args.batches)))
    if "disc" in sections:
        run("Discriminator (parity-gated: triton vs torch)",
            lambda: report.table(DISC_HEADER, disc_section(device, budget, args.disc_batches,
                                                           gate)))
    if "train" in sections:
        run("HMR training step, fused vs unfused (NVTX ranges, timed mode)",
            lambda: report.table(*train_section(device, budget, args.train_steps, report)))
    return status


if __name__ == "__main__":
    # Runs from a checkout with no install: the repository root (for hmr_fast and
    # benchmarks.gpu_parity) goes first on the path.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
