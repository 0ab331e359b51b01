"""`hmr-fast eval`: evaluate a checkpoint on a dataset under one protocol.

    hmr-fast eval --checkpoint runs/hmr --data FILE.npz|DIR [--image-root DIR]
        [--protocol h36m-p1|h36m-p2|3dhp|3dpw|lsp-seg|synth] [--image-cache DIR|auto]
        [--mask-root DIR] [--joint-regressor J_regressor_h36m.npy] [--smpl-dir DIR]
        [--h36m-p2-trials all|first]

``--data`` is the annotation npz (or a folder holding one); images are read from
``--image-root`` (default: the folder of ``--data``), so SPIN's layout (``dataset_extras/*.npz``
apart from the images) works as it is. A pre-cropped cache is used only when
``--image-cache`` names it. The output JSON's folder is checked to be writable before the
run; the table is printed before the JSON is written (``--json``; default
``eval_<protocol>.json`` in the run directory of the checkpoint). Exit status: 0 done, 1 no
sample could be scored or the results could not be written, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hmr_fast.eval.protocols import (
    P2_TRIALS,
    PROTOCOLS,
    NoSamplesError,
    evaluate,
    resolve_p2_trials,
)

UNITS = {"mpjpe": "mm", "pve": "mm", "pck": "%", "auc": "%", "accuracy": "", "f1": ""}


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
    *,
    image_root=None,
    image_cache=None,
    mask_root=None,
    joint_regressor=None,
    smpl_dir=None,
    p2_trials=None,
) -> dict:
    """Load the checkpoint and the dataset, evaluate; returns the results dict.

    ``image_root``: where ``imgname`` is relative to (default: the folder of ``data``);
    ``image_cache``: a ``hmr-fast cache-data`` folder or "auto" (default: none);
    ``mask_root``: where ``maskname`` / ``partname`` are (default: the image root);
    ``p2_trials``: "all" / "first", h36m-p2 only (default "all", see ``--h36m-p2-trials``).
    """
    from hmr_fast.data.datasets import KeypointDataset
    from hmr_fast.data.formats import find_annotation_file
    from hmr_fast.eval.protocols import mean_theta
    from hmr_fast.train.build import load_trained_model
    from hmr_fast.train.checkpoint import resolve_checkpoint

    if protocol not in PROTOCOLS:
        from hmr_fast.train.config import unknown_key_error

        raise unknown_key_error(protocol, PROTOCOLS, "protocol")
    resolve_p2_trials(protocol, p2_trials)  # before the model is loaded
    path = resolve_checkpoint(checkpoint)
    npz = find_annotation_file(data)
    root = Path(image_root) if image_root is not None else default_image_root(data, npz)
    for flag, folder in (("--image-root", root), ("--mask-root", mask_root)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} {folder} is not a directory")
    model, cfg = load_trained_model(path, device)
    dataset = KeypointDataset(
        npz,
        root,
        image_size=image_size or cfg.image_size,
        train=False,
        return_masks=protocol == "lsp-seg",
        cache_dir=image_cache,
        on_unreadable="skip",
        mask_root=mask_root,
        padding=cfg.crop_padding,  # the crops the model was trained on
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
        theta0=mean_theta(model, cfg.mocap) if protocol == "synth" else None,
        joint_regressor=joint_regressor,
        smpl_dir=smpl_dir,
        p2_trials=p2_trials,
    )
    res.update(
        checkpoint=str(path),
        data=str(npz),
        image_root=str(root),
        image_cache=str(image_cache) if image_cache is not None else "none",
        backbone=cfg.backbone,
        image_size=cfg.image_size,
    )
    return res


def default_image_root(data, npz: Path) -> Path:
    """The folder ``--data`` names, or the npz's folder when ``--data`` is the file."""
    return Path(data) if Path(data).is_dir() else npz.parent


def _positive(name: str, value, minimum: int = 1):
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="annotation .npz, or a folder holding one")
    p.add_argument("--image-root", help="folder imgname is relative to (default: --data's)")
    p.add_argument("--image-cache", help="pre-cropped cache folder (hmr-fast cache-data) or auto")
    p.add_argument("--mask-root", help="lsp-seg: folder of the masks (default: the image root)")
    p.add_argument("--protocol", default="h36m-p1", help=" | ".join(PROTOCOLS))
    p.add_argument("--joint-regressor", help="SPIN's J_regressor_h36m.npy (17 x 6890)")
    p.add_argument("--smpl-dir", help="3dpw: folder of SMPL_MALE / SMPL_FEMALE model files")
    p.add_argument(
        "--h36m-p2-trials",
        choices=P2_TRIALS,
        help="h36m-p2: score both trials of each action (all, the default: SPIN's "
        "h36m_valid_protocol2.npz and the papers compared on it) or the first trial only "
        "(first: the original HMR's evaluate_h36m.py, for the HMR paper's own numbers)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--max-samples", type=int, help="evaluate the first N rows only")
    p.add_argument("--json", help="output JSON path")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        from hmr_fast.data.fileio import check_writable
        from hmr_fast.train.checkpoint import resolve_checkpoint

        _positive("--batch-size", args.batch_size)
        _positive("--workers", args.workers, 0)
        _positive("--max-samples", args.max_samples)
        if args.protocol not in PROTOCOLS:
            from hmr_fast.train.config import unknown_key_error

            raise unknown_key_error(args.protocol, PROTOCOLS, "protocol")
        resolve_p2_trials(args.protocol, args.h36m_p2_trials)
        passed_over: list = []
        ckpt = resolve_checkpoint(args.checkpoint, passed_over)
        for path, reason in passed_over:  # say which newer checkpoint was not evaluated
            print(f"hmr-fast eval: skipped the newer checkpoint {path}: {reason}", file=sys.stderr)
        out = Path(args.json or default_json_path(ckpt, args.protocol))
        check_writable(out, "results file")
        res = run_eval(
            ckpt,
            args.data,
            args.protocol,
            args.batch_size,
            args.device,
            args.workers,
            not args.no_progress,
            args.max_samples,
            image_root=args.image_root,
            image_cache=args.image_cache,
            mask_root=args.mask_root,
            joint_regressor=args.joint_regressor,
            smpl_dir=args.smpl_dir,
            p2_trials=args.h36m_p2_trials,
        )
    except NoSamplesError as exc:
        print(f"hmr-fast eval: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # OSError: a file that exists but cannot be read
        print(f"hmr-fast eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(res))
    try:
        from hmr_fast.data.fileio import atomic_write_text

        atomic_write_text(out, json.dumps(res, indent=2) + "\n")
    except OSError as exc:
        print(f"hmr-fast eval: error: could not write {out}: {exc}", file=sys.stderr)
        return 1
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
