"""`hmr-fast eval`: evaluate a checkpoint on a dataset under one protocol.

    hmr-fast eval --checkpoint runs/hmr --data DIR [--protocol h36m-p1|h36m-p2|3dhp|lsp-seg|synth]

Prints a table and writes the results as JSON (``--json``; default ``eval_<protocol>.json``
in the run directory of the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hmr_fast.eval.protocols import PROTOCOLS, evaluate

UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm", "pck": "%", "auc": "%", "accuracy": "", "f1": ""}


def format_table(results: dict) -> str:
    """Two-column text table of the scalar results."""
    rows = []
    for key, val in results.items():
        if isinstance(val, (list, dict)):
            continue
        if isinstance(val, float):
            unit = next((u for k, u in UNITS.items() if key.endswith(k)), "")
            text = "nan" if math.isnan(val) else f"{val:.4f}" if unit == "" else f"{val:.1f}"
            text = f"{text} {unit}".rstrip()
        else:
            text = str(val)
        rows.append((key, text))
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 18)
    body = "\n".join(f"{k:<{width}}  {v:>14}" for k, v in rows)
    return f"{line}\n{body}\n{line}"


def default_json_path(checkpoint: Path, protocol: str) -> Path:
    run_dir = checkpoint.parent
    if run_dir.name == "checkpoints":
        run_dir = run_dir.parent
    return run_dir / f"eval_{protocol}.json"


def run_eval(
    checkpoint,
    data,
    protocol="h36m-p1",
    batch_size=32,
    device="cpu",
    workers=0,
    progress=True,
    max_samples=None,
    image_size=None,
) -> dict:
    """Load the checkpoint and the dataset, evaluate; returns the results dict."""
    from hmr_fast.data.datasets import KeypointDataset
    from hmr_fast.train.checkpoint import resolve_checkpoint
    from hmr_fast.train.trainer import find_annotation_file, load_trained_model

    if protocol not in PROTOCOLS:
        from hmr_fast.train.config import unknown_key_error

        raise unknown_key_error(protocol, PROTOCOLS, "protocol")
    path = resolve_checkpoint(checkpoint)
    npz = find_annotation_file(data)
    root = Path(data) if Path(data).is_dir() else npz.parent
    from hmr_fast.eval.protocols import mean_theta

    model, cfg = load_trained_model(path, device)
    dataset = KeypointDataset(
        npz,
        root,
        image_size=image_size or cfg.image_size,
        train=False,
        return_masks=protocol == "lsp-seg",
    )
    res = evaluate(
        protocol,
        model,
        dataset,
        batch_size,
        device,
        workers,
        progress,
        max_samples,
        theta0=mean_theta(model, cfg.mocap),
    )
    res.update(
        checkpoint=str(path),
        data=str(npz),
        backbone=cfg.backbone,
        image_size=cfg.image_size,
        invalid_rows=dataset.num_invalid_rows,
        unreadable_images=dataset.image_failures,
    )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="directory with an annotation .npz + images")
    p.add_argument("--protocol", default="h36m-p1", help=" | ".join(PROTOCOLS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--max-samples", type=int, help="evaluate the first N rows only")
    p.add_argument("--json", help="output JSON path")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        res = run_eval(
            args.checkpoint,
            args.data,
            args.protocol,
            args.batch_size,
            args.device,
            args.workers,
            not args.no_progress,
            args.max_samples,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"hmr-fast eval: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.json or default_json_path(Path(res["checkpoint"]), args.protocol))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(format_table(res))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
