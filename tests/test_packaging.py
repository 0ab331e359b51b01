"""The built wheel works outside the source tree: every package (the kernels as
``hmr_fast.kernels``), the shipped configs, and an SMPL forward, imported from an install
folder with the repository nowhere on the path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import sys, pathlib
import hmr_fast, hmr_fast.kernels
root = pathlib.Path(sys.argv[1]).resolve()
for mod in (hmr_fast, hmr_fast.kernels):
    assert root not in pathlib.Path(mod.__file__).resolve().parents, mod.__file__
from hmr_fast.train.config import DEFAULT_CONFIG, TrainConfig, load_config, render_yaml
assert DEFAULT_CONFIG.read_text() == render_yaml()
assert load_config("paper").epochs == 55 and load_config("demo").backbone == "resnet18"
import torch, warnings
warnings.simplefilter("ignore")
from hmr_fast import SMPL
out = SMPL()(betas=torch.zeros(2, 10), body_pose=torch.zeros(2, 69))
assert out.vertices.shape == (2, 6890, 3) and torch.isfinite(out.vertices).all()
print("ok", hmr_fast.__file__)
"""


def test_wheel_works_outside_the_source_tree(tmp_path):
    wheels, site, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "src"
    # Built from a copy: setuptools writes build/ and *.egg-info next to setup.py.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".whl", "gpu_out"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("hmr_fast-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    # -I: no user site, no PYTHONPATH, no current directory: only the install folder (plus
    # the venv's site-packages for torch & co; its editable hmr_fast is shadowed by the
    # install folder, which comes first).
    env_path = str(site)
    run = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {env_path!r}); "
         + "exec(" + repr(CHECK) + ")", str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok") and str(site) in run.stdout
