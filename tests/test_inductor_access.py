"""What torch.compile believes each Triton kernel writes, for every variant the launchers use.

Under inductor the ops are ``torch.library.triton_op``s, and inductor decides which tensors
a kernel mutates by reading its TTIR (``torch._higher_order_ops.triton_kernel_wrap``). If
that analysis missed a store, inductor could reuse or reorder a buffer the kernel still
writes: wrong without an error. If it fails, it falls back to "every input is written"
(correct, but every input then gets cloned). So for each entry of ``AOT_VARIANTS`` the
analysis must find exactly the tensors the host launchers allocate as the kernel's outputs
(the table below, read from ``hmr_fast/ops/smpl_triton.py`` and
``hmr_fast/ops/discriminator_ops.py``).

The analysis needs real ``@triton.jit`` kernels and a compile target, not a GPU: it runs in
a subprocess without ``TRITON_INTERPRET``, and without CUDA it answers for sm_90.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# kernel -> the pointer arguments its launcher passes as outputs (everything else is read).
# The skeleton backward writes gbody_ptr only in its POSE_PAIR variants (one (B, J*S) pose
# gradient otherwise goes to groot_ptr alone).
EXPECTED_WRITES = {
    "_smpl_skeleton_fwd_kernel": {"coeffs_ptr", "world_ptr", "rel_ptr"},
    "_smpl_vertex_fwd_kernel": {"verts_ptr"},
    "_smpl_readout_fwd_kernel": {"joints_ptr", "kps_ptr", "pj_ptr", "pk_ptr"},
    "_smpl_readout_bwd_kernel": {"gfk_ptr", "gu_ptr", "gcam_ptr", "gtr_ptr"},
    "_smpl_vertex_bwd_rel_kernel": {"grel_ptr", "gtr_ptr"},
    "_smpl_vertex_bwd_coef_kernel": {"gcoef_ptr"},
    "_smpl_skeleton_bwd_kernel": {"gbetas_ptr", "groot_ptr", "gbody_ptr", "gtransl_ptr"},
    "_disc_heads_fwd_kernel": {"h2_ptr", "score_ptr"},
    "_disc_heads_bwd_kernel": {"dx_ptr", "partial_ptr"},
}
_TORCH_DTYPES = {"fp32": "float32", "fp64": "float64", "fp16": "float16", "bf16": "bfloat16",
                 "i32": "int32", "i64": "int64", "i1": "bool"}


def _analyse() -> dict:
    """{variant name: (kernel name, sorted written args) or "ERROR: ..."} (subprocess side)."""
    import importlib
    import inspect
    import logging

    import torch
    import torch._higher_order_ops.triton_kernel_wrap as tkw
    import triton
    from triton.backends.compiler import GPUTarget

    if not torch.cuda.is_available():
        class _Target:  # only the compile target is asked for
            def get_current_target(self):
                return GPUTarget("cuda", 90, 32)

        triton.runtime.driver.set_active(_Target())
    fallbacks = []

    class _Catch(logging.Handler):  # the analysis logs its "assume everything" fallback
        def emit(self, record):
            fallbacks.append(record.getMessage())

    tkw.log.addHandler(_Catch(level=logging.WARNING))
    result = {}
    for module in ("smpl_fwd", "smpl_bwd", "discriminator"):
        for v in importlib.import_module(f"hmr_fast.kernels.{module}").AOT_VARIANTS:
            kwargs = {}
            for name, kind in v["signature"].items():
                if kind == "constexpr":
                    kwargs[name] = v["constexprs"][name]
                elif kind.startswith("*"):
                    kwargs[name] = torch.empty(4, dtype=getattr(torch, _TORCH_DTYPES[kind[1:]]))
                else:
                    kwargs[name] = 7
            before = len(fallbacks)
            try:
                if hasattr(tkw, "identify_accessed_tensors"):  # torch >= 2.12
                    access = tkw.identify_accessed_tensors(v["fn"], kwargs, {})
                    written = [d.name for d in access.read_writes.writes]
                else:  # older torch (2.11 on the GPU machines); some take no TMA argument
                    identify = tkw.identify_mutated_tensors
                    extra = ({},) if len(inspect.signature(identify).parameters) >= 3 else ()
                    written = list(identify(v["fn"], kwargs, *extra))
            except Exception as exc:  # noqa: BLE001 (reported per variant)
                result[v["name"]] = f"ERROR: {type(exc).__name__}: {exc}"
                continue
            if len(fallbacks) > before:
                result[v["name"]] = "ERROR: analysis fell back: " + fallbacks[-1]
                continue
            tensors = {k for k, val in kwargs.items() if isinstance(val, torch.Tensor)}
            result[v["name"]] = [v["fn"].__name__, sorted(set(written) & tensors),
                                 bool(v["constexprs"].get("POSE_PAIR", True))]
    return result


def test_inductor_sees_exactly_each_kernels_outputs():
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) >= 50, sorted(result)  # every SMPL and discriminator variant
    problems = []
    for name, got in sorted(result.items()):
        if isinstance(got, str):
            problems.append(f"{name}: {got}")
            continue
        kernel, written, pose_pair = got
        expected = EXPECTED_WRITES[kernel] - (set() if pose_pair else {"gbody_ptr"})
        if set(written) != expected:
            problems.append(f"{name} ({kernel}): inductor sees writes to {written}, the "
                            f"launcher's outputs are {sorted(expected)}")
    assert not problems, "\n".join(problems)
    assert {got[0] for got in result.values()} == set(EXPECTED_WRITES)


if __name__ == "__main__":
    print(json.dumps(_analyse()))
