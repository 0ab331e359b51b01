"""`hmr-fast train`: the command line, generated from ``TrainConfig``'s fields.

Every config key is a flag (``--batch-size``; booleans also ``--no-<key>``), with the field's
help text and default; a few keys have a second, historical flag (``--lr``, ``--no-3d``).
``--set key=value`` sets any key, ``--config FILE|NAME`` reads a YAML file or a shipped config
(``paper``, ``demo``). Precedence: defaults < --config < flags and --set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hmr_fast.train import checkpoint as ckpt
from hmr_fast.train.config import (
    FIELD_TYPES,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    read_yaml,
    unknown_key_error,
)
from hmr_fast.train.run import train

# Flags that are not config keys.
RUN_FLAGS = ("config", "resume", "set", "no_progress")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hmr-fast train",
        description="Train HMR. Defaults: the paper's recipe (hmr_fast/configs/default.yaml, "
        "generated from hmr_fast/train/config.py).",
        allow_abbrev=False,
    )
    p.add_argument("--config", help="YAML file, or a shipped config's name (paper, demo)")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        help_text = f"{field.metadata['help']} (default: {getattr(defaults, field.name)!r})"
        help_text = help_text.replace("%", "%%")
        extra = [f for f in field.metadata["flags"] if not f.startswith("--no-")]
        if field.type == "bool":
            negative = [f for f in field.metadata["flags"] if f.startswith("--no-")]
            p.add_argument(flag(field.name), dest=field.name, action="store_true",
                           default=None, help=help_text)
            p.add_argument("--no-" + field.name.replace("_", "-"), *negative, dest=field.name,
                           action="store_false", help=argparse.SUPPRESS)
        else:
            p.add_argument(flag(field.name), *extra, dest=field.name, default=None,
                           metavar=field.name.upper(), help=help_text)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from the newest checkpoint in --out (or from the given file)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    """Parsed args and the config overrides they imply. Unknown flags: ValueError + hints."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [a for a in parser._option_string_actions if a.startswith("--")]
        bad = unknown[0].split("=")[0]
        raise unknown_key_error(bad, flags, "option")
    overrides = {key: getattr(args, key) for key in FIELD_TYPES
                 if getattr(args, key) is not None}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in FIELD_TYPES:
            raise unknown_key_error(key, FIELD_TYPES)
        overrides[key] = value
    return args, overrides


def config_for(args: argparse.Namespace, overrides: dict) -> TrainConfig:
    """The run's config; on --resume the checkpoint's config is the base, so that its
    backbone, data, ... need not be repeated (an explicit, different backbone is an error)."""
    cfg = load_config(args.config, overrides)
    if not args.resume:
        return cfg
    ckpt_dir = Path(cfg.out) / "checkpoints"
    target = (
        ckpt.resolve_checkpoint(args.resume)
        if isinstance(args.resume, str)
        else ckpt.latest_checkpoint(ckpt_dir)
    )
    if target is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {ckpt_dir}")
    base = config_from_dict(ckpt.load_checkpoint(target)["config"])
    if args.config:
        base = apply_overrides(base, read_yaml(args.config))
    return apply_overrides(base, overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        cfg = config_for(args, overrides)
        train(cfg, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"hmr-fast train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
