"""`hmr-fast kernels-report` under another Triton, from an environment holding only triton.

The GPU machines run torch 2.11 with triton 3.6, not the versions pinned here. The kernels
import only triton, so they can be compiled ahead of time for sm_90a / sm_80 there too:

    python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0
    /tmp/t36/bin/python benchmarks/kernels_report_any_triton.py --arch sm_90a

`import hmr_fast` would pull in torch, so this loads the two stdlib-only modules the report
needs (`hmr_fast/ops/kernels_loader.py`, `hmr_fast/ops/compile_report.py`) by file path,
under empty stand-ins for their parent packages, and runs the report's `main`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    for name, folder in (("hmr_fast", REPO / "hmr_fast"), ("hmr_fast.ops", REPO / "hmr_fast/ops")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules.setdefault(name, package)
    _load("hmr_fast.ops.kernels_loader", REPO / "hmr_fast/ops/kernels_loader.py")
    report = _load("hmr_fast.ops.compile_report", REPO / "hmr_fast/ops/compile_report.py")
    return report.main(argv)


if __name__ == "__main__":
    sys.exit(main())
