"""`hmr-fast kernels-report`: every Triton kernel variant compiles ahead of time for sm_90a
and sm_80 (no GPU needed), one well-formed line per variant, under the pinned Triton and
under triton 3.6 (torch 2.11's, what the GPU machines run); with HMR_FAST_AOT_BATCHES also
the signatures Triton specialises at launch for those B, full and keypoint mode.

Triton 3.6 runs from a triton-only environment: ``$HMR_FAST_TRITON36`` (its python) or
/tmp/t36/bin/python, made with ``python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install
triton==3.6.0``; without one that test skips. Compilations are cached (Triton's cache and
the report's ptxas cache), so only the first run is slow."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from hmr_fast.ops import compile_report, smpl_triton

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(\S+) regs=(\d+) spills=(\d+) smem=(\d+) mma=(yes|no) mma_op=(wgmma|mma\.sync|none)$"
)
CAPABILITY = {"sm_90a": 90, "sm_80": 80}
# The launch-specialised signatures multiply the compilations by about four: on this
# 2-core machine a cold cache takes tens of minutes per arch, so they run when asked
# (HMR_FAST_AOT_BATCHES=1,37,64,4096; benchmarks/gpu_check.sh does) and warm runs are fast.
BATCHES = os.environ.get("HMR_FAST_AOT_BATCHES", "")
# Spills left on purpose: (variant name prefix, Triton versions) -> why, with the cost
# estimate recorded in BENCHMARKS.md (issue 12 section).
DOCUMENTED_SPILLS = {
    # fp64 discriminator backward (tests and gradcheck only; training runs fp32/bf16):
    # 1.3-1.6 KB per thread under triton 3.6, ~0.4 MB of local-memory traffic per 16-row
    # program; no tile with num_warps 4-16 is spill-free there.
    ("disc_heads_bwd_fp64", "3.6"): "fp64 discriminator backward, triton 3.6",
}
TRITON36 = os.environ.get("HMR_FAST_TRITON36", "/tmp/t36/bin/python")


def _start_report(cmd: list[str], arch: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.Popen(
        [*cmd, "--arch", arch] + (["--batches", BATCHES] if BATCHES else []),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_report(procs: dict, triton_version: str) -> None:
    """Every launched variant and its launch specialisations compiled, lines well formed,
    SMPL variants spill-free except DOCUMENTED_SPILLS, tensor cores where promised."""
    variants = [v for _, v in compile_report.iter_variants()]
    assert any(v["name"].startswith("smpl_vertex_fwd") for v in variants)
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, (arch, triton_version, err[-3000:])
        expected = [v["name"] for v in variants if compile_report.launched_on(v, CAPABILITY[arch])]
        parsed = {}
        for line in out.strip().splitlines():
            m = LINE.match(line)
            assert m, (arch, line)
            parsed[m.group(1)] = m.groups()[1:]
        assert sorted(n for n in parsed if "@" not in n) == sorted(expected), arch
        # Every SMPL variant also compiled as launched: B = 1 (a constant), B % 16 != 0, 16 | B.
        for name in expected if BATCHES else ():
            if name.startswith("smpl_"):
                specs = [n for n in parsed if n.startswith(name + "@")]
                assert any("B1" in n for n in specs) and len(specs) >= 3, (arch, name, specs)
        suffix = f"_sm{CAPABILITY[arch]}"
        for name, (regs, spills, smem, mma, mma_op) in parsed.items():
            assert 0 < int(regs) <= 255 and int(smem) >= 0, (arch, name)
            assert (mma == "yes") == (mma_op != "none"), (arch, name)
            allowed = any(name.startswith(prefix) and version == triton_version
                          for prefix, version in DOCUMENTED_SPILLS)
            assert int(spills) == 0 or allowed, (arch, triton_version, name, spills)
            base = name.split("@")[0]
            # The blend-shape GEMMs: TF32 precisions on tensor cores (wgmma on sm_90a, the
            # default tf32x3 path included), exact fp32 ("ieee") and fp64 on CUDA cores.
            if base.startswith("smpl_") and "_vertex_" in base and "_fp32_" in base:
                assert base.endswith(suffix), (arch, name)
                if "_tf32" in base:
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


def test_report_both_arches():
    # Both arches at once (two cores); each is minutes of compilation on a cold cache.
    cmd = [sys.executable, "-m", "hmr_fast.ops.compile_report"]
    # Labelled with the Triton that runs it (3.8 here; 3.6 in an environment like the GPU
    # machines'), so the documented spills apply by version.
    import triton

    version = ".".join(triton.__version__.split(".")[:2])
    _check_report({arch: _start_report(cmd, arch) for arch in CAPABILITY}, version)


@pytest.mark.skipif(not os.path.exists(TRITON36),
                    reason=f"no triton 3.6 environment at {TRITON36} (set HMR_FAST_TRITON36 or "
                    "make /tmp/t36, see the module docstring)")
def test_report_both_arches_under_triton_36():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    version = subprocess.run([TRITON36, "-c", "import triton; print(triton.__version__)"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert version.startswith("3.6"), version
    cmd = [TRITON36, str(ROOT / "benchmarks" / "kernels_report_any_triton.py")]
    _check_report({arch: _start_report(cmd, arch) for arch in CAPABILITY}, "3.6")


def test_specialised_signatures():
    # What Triton does at launch, as the report reproduces it: aligned pointers, 16 | int
    # marked, int == 1 a constant; distinct specialisations per batch class and mode.
    variant = next(v for _, v in compile_report.iter_variants()
                   if v["name"] == "smpl_vertex_bwd_rel_fp32_tf32x3_verts_sm90")
    spec = compile_report.specialised(variant, {"B": 1, "V": 6890, "KC": 217, "NSPLIT": 64})
    assert spec["signature"]["B"] == "constexpr" and spec["constexprs"]["B"] == 1
    names = variant["fn"].arg_names
    assert [["tt.divisibility", 16]] == spec["attrs"][(names.index("NSPLIT"),)]
    assert (names.index("V"),) not in spec["attrs"] and (names.index("KC"),) not in spec["attrs"]
    assert (names.index("coeffs_ptr"),) in spec["attrs"]
    groups = compile_report.specialisations(variant, [1, 37, 64, 4096])
    assert len(groups) >= 3 and any("@B1:" in n for n, _ in groups), groups


def test_report_fails_on_a_broken_variant(monkeypatch, capsys):
    broken = dict(name="broken", fn=lambda: None, signature={}, constexprs={}, num_warps=4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(compile_report, "iter_variants", lambda: iter([("x", broken)]))
    assert compile_report.main(["--arch", "sm_80"]) == 1
    assert "broken FAILED" in capsys.readouterr().err
