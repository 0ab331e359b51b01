"""The `hmr-fast` command line: one entry point, one module per subcommand.

Each subcommand lives next to the code it drives and exposes ``main(argv) -> int``; this
file only dispatches, importing lazily so that `hmr-fast --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("hmr_fast.train.cli", "train HMR (YAML config + overrides)"),
    "eval": ("hmr_fast.eval.run", "evaluate a checkpoint (H3.6M, 3DHP, LSP protocols)"),
    "demo": ("hmr_fast.demo", "predict a mesh for one image, write PNG + OBJ"),
    "demo-job": ("hmr_fast.demo_job", "the main job: synthesise, train, evaluate, render"),
    "predict": ("hmr_fast.predict", "run pretrained weights on images, folders and videos"),
    "export": ("hmr_fast.export", "export pretrained weights as one ONNX graph"),
    "synth": ("hmr_fast.data.synth", "render a synthetic dataset from the body model"),
    "synth-mocap": ("hmr_fast.data.synth_mocap", "sample plausible SMPL poses/shapes"),
    "import-data": ("hmr_fast.data.import_cli", "convert LSP / COCO / MPII annotations to npz"),
    "cache-data": ("hmr_fast.data.cache", "write pre-cropped images for fast loading"),
    "kernels-report": ("hmr_fast.ops.compile_report", "compile every Triton kernel ahead of time"),
    "bench": ("hmr_fast.bench_cli", "print the SMPL layer vs smplx benchmark table"),
}


def _usage() -> str:
    lines = ["usage: hmr-fast COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(name, SUBCOMMANDS, n=3)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        print(f"hmr-fast: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
