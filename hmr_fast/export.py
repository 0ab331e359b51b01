"""`hmr-fast export`: a pretrained model (SPIN's or hmr-fast's) as one ONNX graph.

    hmr-fast export --checkpoint model_checkpoint.pt [--mean-params smpl_mean_params.npz] \
        --out hmr.onnx

Input ``images`` (N, 3, S, S) float32, ImageNet-normalised RGB crops, N dynamic; outputs
``rotmats`` (N, 24, 3, 3), ``betas`` (N, 10), ``cam`` (N, 3), ``vertices`` (N, V, 3) and
``joints`` (N, 45, 3). The SMPL layer takes its plain torch path while the exporter traces
(hmr_fast.ops.dispatch), so the graph is standard ONNX operators only. After writing, the
file is checked with onnx.checker and, when onnxruntime is installed, run once on random
crops and compared with torch (max abs difference printed; above 1e-4 m is an error).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import torch

OUTPUT_NAMES = ("rotmats", "betas", "cam", "vertices", "joints")
OPSET = 17
PARITY_TOLERANCE = 1e-4


class _TupleOutputs(torch.nn.Module):
    """The pretrained module with its dict output as a tuple in OUTPUT_NAMES order."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        return tuple(out[name] for name in OUTPUT_NAMES)


def export_onnx(model: torch.nn.Module, out: str | os.PathLike, image_size: int,
                opset: int = OPSET) -> Path:
    """Write `model` (a `PretrainedHMR`) as ONNX with a dynamic batch; atomic (a killed
    export leaves no partial file)."""
    from hmr_fast.data.fileio import atomic_write_bytes

    example = torch.zeros(2, 3, image_size, image_size)
    dynamic = {"images": {0: "N"}, **{name: {0: "N"} for name in OUTPUT_NAMES}}
    buffer = io.BytesIO()
    # The wrapper must be in eval mode itself: the exporter restores the *wrapper's* mode
    # afterwards, recursively, which would otherwise leave the model training (BatchNorm on
    # batch statistics, dropout on).
    wrapper = _TupleOutputs(model).eval()
    with torch.no_grad():
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False,
                          input_names=["images"], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic, opset_version=opset)
    return atomic_write_bytes(out, buffer.getvalue())


def onnxruntime_parity(model: torch.nn.Module, path: str | os.PathLike, image_size: int,
                       batch: int = 3, seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and torch on random crops."""
    import onnxruntime

    images = torch.randn(batch, 3, image_size, image_size,
                         generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {"images": images.numpy()})
    with torch.no_grad():
        want = model(images)
    return {name: float((torch.from_numpy(g) - want[name]).abs().max())
            for name, g in zip(OUTPUT_NAMES, got)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hmr-fast export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="SPIN or hmr-fast checkpoint")
    parser.add_argument("--mean-params", default=None,
                        help="SPIN's smpl_mean_params.npz (when the checkpoint lacks init_*)")
    parser.add_argument("--smpl", default=None, help="SMPL model file or folder for SPIN "
                        "weights (default: $HMR_FAST_SMPL_DIR or the embedded body)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    from hmr_fast.pretrained import load_pretrained

    try:
        model = load_pretrained(args.checkpoint, mean_params=args.mean_params, smpl=args.smpl)
    except (FileNotFoundError, ValueError) as err:
        print(f"hmr-fast export: {err}", file=sys.stderr)
        return 2
    try:
        path = export_onnx(model, args.out, model.image_size, args.opset)
    except OSError as err:
        print(f"hmr-fast export: cannot write {args.out!r}: {err}", file=sys.stderr)
        return 1
    import onnx

    onnx.checker.check_model(str(path))
    print(f"wrote {path} (input images (N, 3, {model.image_size}, {model.image_size}); "
          f"outputs {', '.join(OUTPUT_NAMES)})")
    try:
        diffs = onnxruntime_parity(model, path, model.image_size)
    except ImportError:
        print("onnxruntime not installed: parity not checked (pip install onnxruntime)")
        return 0
    worst = max(diffs.values())
    print("onnxruntime vs torch, max abs difference: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    if worst > PARITY_TOLERANCE:
        print(f"hmr-fast export: onnxruntime differs from torch by {worst:.2e} "
              f"(> {PARITY_TOLERANCE})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
