"""`hmr-fast kernels-report`: every Triton kernel variant compiles ahead of time for sm_90a
and sm_80 (no GPU needed), one well-formed line per variant."""

import os
import pathlib
import re
import subprocess
import sys

import torch

from hmr_fast.ops import compile_report, smpl_triton

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(\S+) regs=(\d+) spills=(\d+) smem=(\d+) mma=(yes|no) mma_op=(wgmma|mma\.sync|none)$"
)
CAPABILITY = {"sm_90a": 90, "sm_80": 80}


def test_report_both_arches():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    # Both arches at once: each is a minute of single-threaded compilation.
    procs = {
        arch: subprocess.Popen(
            [sys.executable, "-m", "hmr_fast.ops.compile_report", "--arch", arch],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arch in ("sm_90a", "sm_80")
    }
    variants = [v for _, v in compile_report.iter_variants()]
    assert any(v["name"].startswith("smpl_vertex_fwd") for v in variants)
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (arch, err[-3000:])
        expected = [v["name"] for v in variants if compile_report.launched_on(v, CAPABILITY[arch])]
        lines = out.strip().splitlines()
        parsed = {}
        for line in lines:
            m = LINE.match(line)
            assert m, (arch, line)
            parsed[m.group(1)] = m.groups()[1:]
        assert sorted(parsed) == sorted(expected), arch
        suffix = f"_sm{CAPABILITY[arch]}"
        for name, (regs, spills, smem, mma, mma_op) in parsed.items():
            assert 0 < int(regs) <= 255 and int(smem) >= 0, (arch, name)
            assert (mma == "yes") == (mma_op != "none"), (arch, name)
            if not name.startswith("smpl_"):
                continue
            # Every SMPL variant the launchers use on this arch is spill-free.
            assert int(spills) == 0, (arch, name, spills)
            # The blend-shape GEMMs: TF32 precisions on tensor cores (wgmma on sm_90a, the
            # default tf32x3 path included), exact fp32 ("ieee") and fp64 on CUDA cores.
            if "_vertex_" in name and "_fp32_" in name:
                assert name.endswith(suffix), (arch, name)
                if "_tf32" in name:
                    assert mma_op == ("wgmma" if arch == "sm_90a" else "mma.sync"), (arch, name)
                else:
                    assert mma == "no", (arch, name)
        # What the default fp32 CUDA path launches: tensor cores, wgmma on sm_90a.
        _, prec = smpl_triton.select_dot_precision(torch.float32, "cuda")
        want = "wgmma" if arch == "sm_90a" else "mma.sync"
        for name in (
            f"smpl_vertex_fwd_fp32_{prec}{suffix}",
            f"smpl_vertex_bwd_rel_fp32_{prec}_verts{suffix}",
            f"smpl_vertex_bwd_rel_fp32_{prec}_kp{suffix}",
            f"smpl_vertex_bwd_coef_fp32_{prec}_verts{suffix}",
            f"smpl_vertex_bwd_coef_fp32_{prec}_kp{suffix}",
        ):
            assert parsed[name][4] == want, (arch, name, parsed[name])


def test_report_fails_on_a_broken_variant(monkeypatch, capsys):
    broken = dict(name="broken", fn=lambda: None, signature={}, constexprs={}, num_warps=4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(compile_report, "iter_variants", lambda: iter([("x", broken)]))
    assert compile_report.main(["--arch", "sm_80"]) == 1
    assert "broken FAILED" in capsys.readouterr().err
