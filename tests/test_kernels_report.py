"""`hmr-fast kernels-report`: every Triton kernel variant compiles ahead of time for sm_90a
and sm_80 (no GPU needed), one well-formed line per variant."""

import os
import pathlib
import re
import subprocess
import sys

from hmr_fast.ops import compile_report

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\S+) regs=(\d+) spills=(\d+) smem=(\d+) mma=(yes|no)$")


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
    expected = [v["name"] for _, v in compile_report.iter_variants()]
    assert any(n.startswith("smpl_vertex_fwd") for n in expected)
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (arch, err[-3000:])
        lines = out.strip().splitlines()
        parsed = {}
        for line in lines:
            m = LINE.match(line)
            assert m, (arch, line)
            parsed[m.group(1)] = m.groups()[1:]
        assert sorted(parsed) == sorted(expected), arch
        for name, (regs, spills, smem, _mma) in parsed.items():
            assert 0 < int(regs) <= 255 and int(smem) >= 0, (arch, name)
            # Target: no spills in the SMPL kernels' default (non-TF32) variants.
            if name.startswith("smpl_") and "tf32" not in name and arch == "sm_90a":
                assert int(spills) == 0, (arch, name, spills)
        # The TF32 blend-shape GEMM must run on tensor cores; the exact-fp32 one cannot.
        assert parsed["smpl_vertex_fwd_fp32_tf32"][3] == "yes", arch
        assert parsed["smpl_vertex_fwd_fp32_ieee"][3] == "no", arch


def test_report_fails_on_a_broken_variant(monkeypatch, capsys):
    broken = dict(name="broken", fn=lambda: None, signature={}, constexprs={}, num_warps=4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(compile_report, "iter_variants", lambda: iter([("x", broken)]))
    assert compile_report.main(["--arch", "sm_80"]) == 1
    assert "broken FAILED" in capsys.readouterr().err
