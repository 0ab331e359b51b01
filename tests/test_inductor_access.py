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

The second test goes one step further, the way ``torch.compile`` does: AOTAutograd's
dispatcher over the registered ``triton_op``s (not the interpreter's opaque custom ops) on
fake CUDA tensors, which needs no GPU either. Each op must decompose into its kernels in
launch order, each kernel cloning exactly its outputs, for the layer's (global_orient,
body_pose) and for one (B, 72) pose; and the ops' host code (launch configurations for
sm_90, argument binding) runs as on an H100.
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


def _fake_cuda_target():
    """Without CUDA: a compile target for sm_90 (all the analysis asks the driver for), and
    an H100's capability and SM count for the launchers."""
    import types

    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    if torch.cuda.is_available():
        return

    class _Target:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    triton.runtime.driver.set_active(_Target())
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        multi_processor_count=132)


def _analyse() -> dict:
    """{variant name: (kernel name, sorted written args) or "ERROR: ..."} (subprocess side)."""
    import importlib
    import inspect
    import logging

    import torch
    import torch._higher_order_ops.triton_kernel_wrap as tkw

    _fake_cuda_target()
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
    result = _run_subprocess("analyse")
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


def _decompose() -> dict:
    """{case: [(kernel, sorted tensors_to_clone), ...] in graph order, plus output shapes}
    from AOTAutograd over the SMPL and discriminator triton_ops (subprocess side)."""
    import torch
    from torch._functorch.aot_autograd import aot_function
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    _fake_cuda_target()
    from hmr_fast.ops import discriminator_ops  # noqa: F401 (registers the disc ops)
    from hmr_fast.ops import smpl_triton as st
    from tests.test_smpl_triton import random_model, sparse_regressor

    assert not st.INTERPRETED
    plan = st.make_plan(random_model(120, dtype=torch.float32),
                        sparse_regressor(120, dtype=torch.float32), vertices=True)
    mode = FakeTensorMode()
    cuda = torch.device("cuda", 0)

    def fake(x):
        if isinstance(x, torch.Tensor):
            return mode.fake_tensor_converter.from_meta_and_device(mode, x.to("meta"), cuda)
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*[fake(v) for v in x])
        return x

    p = fake(plan)
    m = p.model
    consts = (m.v_template, p.blend_planar, m.joint_template, m.joint_shapedirs, m.skin_idx,
              m.skin_w, p.parent, p.depth, p.desc)

    def smpl(betas, root, body, transl, cam):
        verts, joints, kps, pj, pk, world, rel, coeffs = torch.ops.hmr_fast.smpl_fwd(
            betas, root, body, transl, cam, *consts, p.u_idx, p.vert_to_u, p.rout, p.ndepth,
            p.num_keypoints, True, "tf32x3")
        grads = torch.ops.hmr_fast.smpl_bwd(
            verts * 0 + 1, joints * 0 + 1, None, pj * 0 + 1, None, betas, root, body, cam,
            joints, kps, world, rel, coeffs, *consts, p.vert_to_u, p.rout, True, "tf32x3")
        return (verts, joints, pj) + tuple(grads)

    def disc(x, w1, b1, w2, b2, wh, bh):
        h2, scores = torch.ops.hmr_fast.disc_heads_fwd(x, w1, b1, w2, b2, wh, bh)
        return torch.ops.hmr_fast.disc_heads_bwd(x, w1, b1, w2, b2, wh, h2 * 0 + 1,
                                                 scores * 0 + 1)

    graphs = {}
    with mode:
        b = 5
        betas, transl, cam = (torch.randn(b, n, device=cuda) for n in (10, 3, 3))
        cases = {
            "pose pair": (smpl, (betas, torch.randn(b, 3, device=cuda),
                                 torch.randn(b, 69, device=cuda), transl, cam)),
            "one pose": (smpl, (betas, torch.randn(b, 72, device=cuda), None, transl, cam)),
            "discriminator": (disc, tuple(torch.randn(*s, device=cuda) for s in (
                (b, 23, 9), (32, 9), (32,), (32, 32), (32,), (23, 32), (23,)))),
        }
        for name, (fn, args) in cases.items():
            captured = []
            out = aot_function(fn, fw_compiler=lambda gm, _, c=captured: c.append(gm) or gm)(
                *args)
            kernels = [[kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__,
                        sorted(n.kwargs["tensors_to_clone"])]
                       for n in captured[0].graph.nodes
                       if "triton_kernel_wrapper_functional" in str(n.target)]
            graphs[name] = {"kernels": kernels, "shapes": [list(o.shape) for o in out]}
    return graphs


def test_compile_decomposes_the_ops_into_their_kernels_on_fake_cuda():
    graphs = _run_subprocess("decompose")
    smpl = ["_smpl_skeleton_fwd_kernel", "_smpl_vertex_fwd_kernel", "_smpl_readout_fwd_kernel",
            "_smpl_readout_bwd_kernel", "_smpl_vertex_bwd_rel_kernel",
            "_smpl_vertex_bwd_coef_kernel", "_smpl_skeleton_bwd_kernel"]
    for case, pair in (("pose pair", True), ("one pose", False)):
        kernels = graphs[case]["kernels"]
        assert [k for k, _ in kernels] == smpl, case
        for kernel, cloned in kernels:
            expected = EXPECTED_WRITES[kernel] - (set() if pair else {"gbody_ptr"})
            assert set(cloned) == expected, (case, kernel, cloned)
    # verts, joints, projected joints; grads of betas, pose, pose_body, transl, camera.
    assert graphs["pose pair"]["shapes"] == [[5, 120, 3], [5, 45, 3], [5, 45, 2], [5, 10],
                                             [5, 3], [5, 69], [5, 3], [5, 3]]
    assert graphs["one pose"]["shapes"][3:6] == [[5, 10], [5, 72], [0]]
    disc = graphs["discriminator"]
    assert [k for k, _ in disc["kernels"]] == ["_disc_heads_fwd_kernel", "_disc_heads_bwd_kernel"]
    for kernel, cloned in disc["kernels"]:
        assert set(cloned) == EXPECTED_WRITES[kernel], (kernel, cloned)
    assert disc["shapes"][0] == [5, 23, 9]  # the input gradient


def _run_subprocess(what: str) -> dict:
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__, what], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_decompose() if sys.argv[1:] == ["decompose"] else _analyse()))
