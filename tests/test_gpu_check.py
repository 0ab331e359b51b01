"""The GPU check's code on the CPU (not marked gpu): argument parsing, report writing, the
parity gate (fake implementations with wrong values, wrong gradients, or that raise), the
compiled-smplx refusal, the skip path without CUDA, and benchmarks/gpu_check.sh end to end
(its stages recorded, failures not stopping later stages, the time budget).

Timings here mean nothing: `gpu_report._CPU_SMOKE` makes each timing one plain call.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from benchmarks import gpu_parity as gp
from benchmarks import gpu_report as gr

ROOT = pathlib.Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _smpl(**kwargs):
    from hmr_fast import SMPL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return SMPL(backend="torch", check_inputs=False, **kwargs)


@pytest.fixture(scope="module")
def layer():
    return _smpl(keypoint_regressor="hmr")


@pytest.fixture(scope="module")
def layer_full():
    return _smpl()


class Shifted(nn.Module):
    """Right gradients, joints 1 mm off: a value bug."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.joints = out.joints + 1e-3
        return out


class ScaledGradient(nn.Module):
    """Right values, joint gradients 1% too large: a backward bug."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        j = out.joints
        out.joints = j.detach() + 1.01 * (j - j.detach())
        return out


class Raising(nn.Module):
    def forward(self, **kwargs):
        raise RuntimeError("kernel launch failed")


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setattr(gr, "_CPU_SMOKE", True)


def _inputs(batch, pose2rot=True, dtype=torch.float32, seed=0):
    return gp.make_inputs(batch, dtype, CPU, pose2rot, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- pure pieces


def test_argument_parsing():
    args = gr.build_parser().parse_args([])
    assert args.sections == list(gr.SECTIONS)
    assert args.batches == [1, 64, 4096, 16384] and args.parity_batches == [1, 37]
    args = gr.build_parser().parse_args(
        ["--sections", "smpl, train", "--batches", "3,5", "--budget-s", "12", "--out", "x.md"])
    assert args.sections == ["smpl", "train"] and args.batches == [3, 5]
    assert args.budget_s == 12.0 and args.out == "x.md"
    for bad in (["--sections", "smpl,nope"], ["--batches", "0,4"], ["--batches", "a"]):
        with pytest.raises(SystemExit):
            gr.build_parser().parse_args(bad)


def test_priority_order_measures_the_targets_first():
    assert gr.priority_order([1, 64, 4096, 16384]) == [4096, 1, 64, 16384]
    assert gr.priority_order([37, 2]) == [2, 37]


def test_report_is_written_as_it_goes(tmp_path, capsys):
    path = tmp_path / "r.md"
    report = gr.Report(str(path))
    report.write("# one")
    assert path.read_text() == "# one\n"  # on disk before the next section starts
    report.table(["a", "b"], [[1, "x|y"]])
    report.table(["a"], [])
    text = path.read_text()
    assert "| a | b |\n|---|---|\n| 1 | x/y |" in text  # a pipe in a cell cannot break rows
    assert "(no rows)" in text
    assert "# one" in capsys.readouterr().out


def test_gate_is_closed_by_default():
    gate = gr.Gate()
    assert not gate.allowed("x") and gate.refusal("x") == "refused: parity not checked"
    gate.record("x", True)
    assert gate.allowed("x")
    gate.record("x", False, "B=37 joints err 1e-3")
    gate.record("x", True)  # a later pass does not reopen it
    assert not gate.allowed("x")
    assert "failed parity (B=37 joints err 1e-3)" in gate.refusal("x")
    assert gate.names() == ["x"]


def test_axis_angle_to_matrix_matches_scipy():
    from scipy.spatial.transform import Rotation

    aa = torch.randn(50, 3, dtype=torch.float64) * 1.5
    expected = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    torch.testing.assert_close(gp.axis_angle_to_matrix(aa), expected, rtol=0, atol=1e-12)


def test_reference_matches_smplx():
    # The float64 reference against smplx itself (fp32, so within the fp32 budget).
    smplx = pytest.importorskip("smplx")
    from hmr_fast.bench_cli import build_model, model_file

    path = model_file()
    ours = _smpl_file(path)
    theirs = build_model("smplx", path)
    assert isinstance(theirs, smplx.SMPL)
    for pose2rot in (True, False):
        x = _inputs(3, pose2rot)
        ref = gp.reference_outputs(ours, x, pose2rot)
        out = theirs(**{k: x[k] for k in gp.SMPLX_INPUTS}, pose2rot=pose2rot)
        for name in ("vertices", "joints"):
            err = (getattr(out, name).double() - ref[name]).abs().max().item()
            assert err < gp.TOL32_M, (pose2rot, name, err)


def _smpl_file(path):
    from hmr_fast import SMPL

    return SMPL(path, backend="torch")


# --------------------------------------------------------------------------- the gate


@pytest.mark.parametrize("pose2rot", [True, False])
def test_parity_passes_a_correct_implementation(layer, pose2rot):
    for return_verts in (True, False):
        result = gp.check_parity(layer, layer, _inputs(2, pose2rot), pose2rot=pose2rot,
                                 return_verts=return_verts)
        assert result.ok, result.summary()
        assert set(result.grad_rel) == set(gp.INPUTS)
        assert ("vertices" in result.value_err) == return_verts


def test_parity_catches_values_gradients_and_exceptions(layer):
    x = _inputs(2)
    shifted = gp.check_parity(Shifted(layer), layer, x, pose2rot=True, return_verts=True)
    assert not shifted.ok and any(f.startswith("joints err") for f in shifted.failures)
    assert "FAILED" in shifted.summary()
    scaled = gp.check_parity(ScaledGradient(layer), layer, x, pose2rot=True, return_verts=True)
    assert not scaled.ok
    assert all(f.startswith("grad ") for f in scaled.failures), scaled.failures
    raised = gp.check_parity(Raising(), layer, x, pose2rot=True, return_verts=True)
    assert not raised.ok and "RuntimeError" in raised.failures[0]


def test_parity_fp64_budget_is_tighter(layer):
    # An fp32 model compared in fp64 must fail the fp64 budget (1e-9 m): the budget bites.
    x64 = _inputs(2, dtype=torch.float64)
    result = gp.check_parity(lambda **kw: layer(**{k: v.float() if torch.is_tensor(v) else v
                                                   for k, v in kw.items()}),
                             layer, x64, pose2rot=True, return_verts=True)
    assert not result.ok and result.value_tol == gp.TOL64_M


def test_failed_parity_refuses_timing(layer, layer_full, smoke):
    full = {"hmr_fast torch": layer_full, "shifted": Shifted(layer_full),
            "scaled": ScaledGradient(layer_full), "raising": Raising()}
    kp = {"hmr_fast torch": layer}
    gate = gr.Gate()
    rows = gr.parity_section(full, kp, layer, gate, CPU, [1])
    assert gate.allowed("hmr_fast torch")
    for name in ("shifted", "scaled", "raising"):
        assert not gate.allowed(name), name
    assert any(r[0] == "shifted" and str(r[-1]).startswith("FAILED") for r in rows)
    # The keypoint layer ran in both modes, the full one in full mode only.
    modes = {(r[2], r[3], r[4]) for r in rows if r[0] == "hmr_fast torch"}
    assert ("axis-angle", "keypoints", "yes") in modes and ("rotmat", "full", "no") in modes
    full["unchecked"] = layer_full
    card = {"bandwidth": 1e12, "fp32": 1e13, "bf16": 1e14}
    timed = gr.smpl_section(full, gate, CPU, card, gr.Budget(600), [2], False, gr.Report())
    assert all(len(r) == len(gr.SMPL_HEADER) for r in timed)  # refused rows keep the columns
    by_impl = {}
    for row in timed:
        by_impl.setdefault(row[2], []).append(row)
    assert len(by_impl["hmr_fast torch"]) == 2  # forward, forward+backward
    assert all(isinstance(r[3], float) and r[3] > 0 for r in by_impl["hmr_fast torch"])
    for name in ("shifted", "scaled", "raising"):
        assert all(str(r[3]).startswith("refused: failed parity") for r in by_impl[name])
        assert all(r[4] == "" for r in by_impl[name])  # no timing at all
    assert all(r[3] == "refused: parity not checked" for r in by_impl["unchecked"])
    kp["shifted"] = Shifted(layer)
    kp_rows = gr.keypoint_section(kp, gate, CPU, card, gr.Budget(600), [2])
    assert {r[2] for r in kp_rows if isinstance(r[3], float)} == {"hmr_fast torch"}
    assert all(str(r[3]).startswith("refused") for r in kp_rows if r[2] == "shifted")


def test_time_budget_skips_rows(layer_full, smoke):
    gate = gr.Gate()
    gate.record("hmr_fast torch", True)
    rows = gr.smpl_section({"hmr_fast torch": layer_full}, gate, CPU,
                           {"bandwidth": 1.0, "fp32": 1.0, "bf16": 1.0}, gr.Budget(0), [2],
                           False, gr.Report())
    assert [r[3] for r in rows] == ["skipped (time budget)"] * 2


class Perturbed(nn.Module):
    """What a miscompiled smplx would look like: vertices 1 mm off."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.vertices = out.vertices + 1e-3
        return out


@pytest.mark.parametrize("miscompiled", [False, True])
def test_compiled_smplx_is_checked_against_eager(layer_full, smoke, monkeypatch, miscompiled):
    # The hmr_fast torch layer stands in for smplx; torch.compile is replaced, so no
    # inductor run is needed: the (batch, mode) row logic and its eager check are tested.
    compiled_calls = []

    def fake_compile(model, **kwargs):
        compiled_calls.append(kwargs)
        return Perturbed(model) if miscompiled else model

    monkeypatch.setattr(torch, "compile", fake_compile)
    gate = gr.Gate()
    gate.record(gr.SMPLX, True)
    rows = gr.smpl_section({gr.SMPLX: layer_full}, gate, CPU,
                           {"bandwidth": 1.0, "fp32": 1.0, "bf16": 1.0}, gr.Budget(600), [2, 3],
                           True, gr.Report())
    assert all(len(r) == len(gr.SMPL_HEADER) for r in rows)
    compiled = [r for r in rows if r[2].startswith(gr.SMPLX_COMPILED)]
    # One fresh compile per (batch, mode), never dynamic.
    assert len(compiled) == 4
    assert compiled_calls == [{"dynamic": False, "backend": "inductor"}] * 4
    assert all("(inductor, dynamic=False, 0 graphs)" in r[2] for r in compiled)
    if miscompiled:
        assert all(str(r[3]).startswith("refused: differs from eager") for r in compiled)
    else:
        assert all(isinstance(r[3], float) for r in compiled)
        # Its own speed against itself in the "vs smplx compiled" column: 1.00x.
        assert all(r[7] == "1.00x" for r in compiled)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_compiled_rows_count_real_dynamo_graphs(layer_full, smoke, monkeypatch):
    # Real torch.compile with dynamo's eager backend (inductor would take minutes here): one
    # graph per (batch, mode), because each starts from torch._dynamo.reset().
    monkeypatch.setattr(gr, "COMPILE_BACKEND", "eager")
    gate = gr.Gate()
    gate.record(gr.SMPLX, True)
    rows = gr.smpl_section({gr.SMPLX: layer_full}, gate, CPU,
                           {"bandwidth": 1.0, "fp32": 1.0, "bf16": 1.0}, gr.Budget(600), [2, 3],
                           True, gr.Report())
    compiled = [r for r in rows if r[2].startswith(gr.SMPLX_COMPILED)]
    assert [r[2] for r in compiled] == [f"{gr.SMPLX_COMPILED} (eager, dynamic=False, 1 graph)"] * 4
    assert all(isinstance(r[3], float) for r in compiled)


def test_missing_smplx_rows_say_so(layer_full, smoke):
    full = {gr.SMPLX: None, "hmr_fast torch": layer_full}
    gate = gr.Gate()
    assert gr.parity_section(full, {}, layer_full, gate, CPU, [1]) != []
    assert gate.names() == ["hmr_fast torch"]  # nothing checked for the missing one
    rows = gr.smpl_section(full, gate, CPU, {"bandwidth": 1.0, "fp32": 1.0, "bf16": 1.0},
                           gr.Budget(600), [2], True, gr.Report())
    missing = [r for r in rows if r[2] in (gr.SMPLX, gr.SMPLX_COMPILED)]
    assert len(missing) == 4 and all(r[3] == "smplx not installed" for r in missing)
    assert all(isinstance(r[3], float) for r in rows if r[2] == "hmr_fast torch")


def test_main_without_cuda_writes_a_skip_report(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r.md"
    assert gr.main(["--sections", "env,parity,smpl,train", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### Environment" in text and "CUDA not available" in text
    assert "skipped: CUDA not available, nothing measured" in text
    assert f"torch {torch.__version__}" in text
    assert gr.main(["--sections", "env", "--out", str(out)]) == 0


# -------------------------------------------------------------------- gpu_check.sh itself


def _run_check(tmp_path, **env):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine would run the real check here")
    full_env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, **env}
    full_env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          env=full_env, capture_output=True, text=True, timeout=300)
    report = (tmp_path / "out" / "gpu_report.md").read_text()
    return proc, report


def test_gpu_check_script_without_cuda(tmp_path):
    proc, report = _run_check(tmp_path, GPU_CHECK_STAGES="env,pytest,timing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CUDA available: 0" in report
    stages = [line for line in report.splitlines() if line.startswith("| ") and ": " in line]
    assert [s.split(":")[0] for s in stages] == ["| env", "| pytest", "| timing"]
    assert "| pytest: pytest -m gpu | ok (no CUDA: nothing measured) |" in report
    assert "skipped: CUDA not available" in report
    assert "GPU: CUDA not available" in report
    summary = next(line for line in report.splitlines() if line.startswith("Summary: "))
    assert "skipped" in summary and "failed" not in summary and "passed" not in summary
    assert (tmp_path / "out" / "gpu_check.log").is_file()


def test_gpu_check_records_failures_and_goes_on(tmp_path):
    # A broken interpreter: every stage fails, each is recorded, none stops the next.
    proc, report = _run_check(tmp_path, PYTHON="false", GPU_CHECK_STAGES="env,pytest,train")
    assert proc.returncode == 1
    for stage in ("env", "pytest", "train"):
        assert any(line.startswith(f"| {stage}:") and "FAILED (exit 1)" in line
                   for line in report.splitlines()), stage


def test_gpu_check_respects_its_time_budget(tmp_path):
    # 10 s in all is less than any stage's minimum: every stage is skipped, none started.
    proc, report = _run_check(tmp_path, GPU_CHECK_BUDGET_S="10")
    assert proc.returncode == 0
    assert report.count("skipped: time budget spent") == 2 * 5  # table row + section each
    assert "Status: ok" not in report


def test_kernel_warm_up_covers_the_test_matrix(capsys):
    from benchmarks import gpu_warm

    # Every (batch, input, mode) the parity tests launch, for each precision they use.
    assert set(gpu_warm.cases([1, 37, 4096])) == {
        (b, p, v) for b in (1, 37, 4096) for p in (True, False) for v in (True, False)}
    from tests.test_gpu_smpl import BATCHES, PRECISIONS

    assert set(PRECISIONS) == set(gpu_warm.PRECISIONS) and BATCHES == (1, 37, 4096)
    if not torch.cuda.is_available():
        assert gpu_warm.warm("ieee", [1]) == 0
        assert "no CUDA" in capsys.readouterr().out


def test_checked_twin_is_timed_under_its_twins_gate(layer, layer_full, smoke, monkeypatch):
    # The check_inputs=True twin measures the input check's cost: never parity-checked
    # itself, timed when its unchecked twin passed, refused when the twin failed.
    monkeypatch.setattr(gr, "CHECKED_IMPLS", {"checked": "hmr_fast torch",
                                              "checked shifted": "shifted"})
    full = {"hmr_fast torch": layer_full, "checked": layer_full,
            "shifted": Shifted(layer_full), "checked shifted": layer_full}
    kp = {"hmr_fast torch": layer, "checked": layer}
    gate = gr.Gate()
    rows = gr.parity_section(full, kp, layer, gate, CPU, [1])
    assert {r[0] for r in rows} == {"hmr_fast torch", "shifted"}
    card = {"bandwidth": 1e12, "fp32": 1e13, "bf16": 1e14}
    timed = gr.smpl_section(full, gate, CPU, card, gr.Budget(600), [2], False, gr.Report())
    by_impl = {}
    for row in timed:
        by_impl.setdefault(row[2], []).append(row)
    assert all(isinstance(r[3], float) and r[3] > 0 for r in by_impl["checked"])
    assert all(str(r[3]).startswith("refused: failed parity") for r in by_impl["checked shifted"])
    kp_rows = gr.keypoint_section(kp, gate, CPU, card, gr.Budget(600), [2])
    assert all(isinstance(r[3], float) for r in kp_rows if r[2] == "checked")


def test_checked_twin_is_built_with_the_check_on(monkeypatch):
    built = []
    monkeypatch.setattr(gr, "model_path", lambda: "unused")
    monkeypatch.setattr(gr, "build_smplx", lambda *a: None)

    def fake_build(path, device, keypoints, check_inputs=False, **kwargs):
        built.append((keypoints, check_inputs, kwargs.get("backend")))
        return object()

    monkeypatch.setattr(gr, "build_hmr", fake_build)
    full, kp, _ = gr.build_impls(CPU, gr.Report())
    for name, twin in gr.CHECKED_IMPLS.items():
        assert name in full and name in kp and twin in full
    checked = [b for b in built if b[1]]
    assert len(checked) == 2 * len(gr.CHECKED_IMPLS)
    assert all(b[2] == gr.HMR_IMPLS[twin]["backend"] for b in checked
               for twin in gr.CHECKED_IMPLS.values())


# What the GPU machines lack (shared/GPU.md lists what they have; smplx and nvtx are carried
# as wheels). The GPU check must not need any of these.
_ABSENT_ON_GPU_MACHINES = ("yaml", "numba", "h5py", "onnx", "onnxruntime")


def test_gpu_check_needs_nothing_the_gpu_machines_lack():
    # None in sys.modules: `import x` raises ImportError and importlib.util.find_spec(x)
    # answers None, as for a package that is not installed.
    blocker = f"""
import sys
sys.modules.update(dict.fromkeys({_ABSENT_ON_GPU_MACHINES!r}))
import benchmarks.gpu_parity, benchmarks.gpu_report, benchmarks.gpu_training, benchmarks.gpu_warm
import tests.test_gpu_compile, tests.test_gpu_smpl, tests.test_gpu_train
from benchmarks.gpu_training import build_step, train_config
import torch
cfg = train_config()
step, model, disc = build_step(cfg, "torch", torch.device("cpu"))
print("ok", cfg.backbone, type(step).__name__)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok resnet18 TrainStep"
