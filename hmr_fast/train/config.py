"""Training configuration: one flat dataclass, loaded from YAML and overridden from the CLI.

The defaults live in ``hmr_fast/configs/default.yaml`` (the HMR paper's settings); the
dataclass below mirrors them so that every key has a type. A key that is not a field, in a
YAML file or an override, is an error that names the key and its closest matches.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
BACKBONES = ("resnet18", "resnet34", "resnet50")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Every training setting (see configs/default.yaml for what each one means)."""

    data: list = dataclasses.field(default_factory=list)
    mocap: str | None = None
    ratio_3d: float = 0.5
    workers: int = 4
    image_cache: str | None = None
    image_root: list = dataclasses.field(default_factory=list)
    backbone: str = "resnet50"
    pretrained: str | None = None
    image_size: int = 224
    num_iters: int = 3
    regressor_dropout: float = 0.5
    fused: bool = True
    steps: int = 100000
    batch_size: int = 64
    encoder_lr: float = 1e-5
    disc_lr: float = 1e-4
    encoder_weight_decay: float = 1e-4
    disc_weight_decay: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    flip_prob: float = 0.5
    amp: bool = False
    keypoint_weight: float = 60.0
    joints_3d_weight: float = 60.0
    smpl_weight: float = 60.0
    adversarial_weight: float = 1.0
    disc_weight: float = 1.0
    use_3d: bool = True
    seed: int = 0
    out: str = "runs/hmr"
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    log_images_every: int = 1000
    device: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def unknown_key_error(key: str, known, what: str = "config key") -> ValueError:
    """A ValueError naming ``key`` and up to three close matches among ``known``."""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {what} {key!r}{hint} (known: {', '.join(sorted(known))})")


def _coerce(key: str, value):
    """Convert ``value`` (from YAML or a CLI string) to the declared type of ``key``."""
    kind = FIELD_TYPES[key]
    if value is None:
        if "None" in kind:
            return None
        raise ValueError(f"config key {key!r} must not be null (type {kind})")
    try:
        if kind == "list":
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [str(v) for v in value]
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise TypeError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(value, str) and value.lower() in ("null", "none", "~"):
            return None
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"config key {key!r} expects {kind}, got {value!r} ({type(value).__name__})"
        ) from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range checks that catch typos early; returns ``cfg``."""
    if cfg.backbone not in BACKBONES:
        raise unknown_key_error(cfg.backbone, BACKBONES, "backbone")
    positive = ("image_size", "num_iters", "batch_size", "steps", "ckpt_every", "keep_checkpoints")
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ValueError(f"config key {key!r} must be > 0, got {getattr(cfg, key)}")
    for key in ("workers", "log_images_every", "encoder_lr", "disc_lr"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise unknown_key_error(cfg.lr_schedule, LR_SCHEDULES, "lr_schedule")
    if cfg.warmup_steps < 0:
        raise ValueError(f"config key 'warmup_steps' must be >= 0, got {cfg.warmup_steps}")
    if not 0.0 <= cfg.flip_prob <= 1.0:
        raise ValueError(f"config key 'flip_prob' must be in [0, 1], got {cfg.flip_prob}")
    if not 0.0 <= cfg.regressor_dropout < 1.0:
        raise ValueError(
            f"config key 'regressor_dropout' must be in [0, 1), got {cfg.regressor_dropout}"
        )
    if not 0.0 <= cfg.ratio_3d <= 1.0:
        raise ValueError(f"config key 'ratio_3d' must be in [0, 1], got {cfg.ratio_3d}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"config key 'device' must be auto, cpu or cuda[:N], got {cfg.device!r}")
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: dict) -> TrainConfig:
    """Return a copy of ``cfg`` with ``overrides`` (key -> value, values coerced) applied."""
    values = cfg.to_dict()
    for key, value in overrides.items():
        if key not in FIELD_TYPES:
            raise unknown_key_error(key, FIELD_TYPES)
        values[key] = _coerce(key, value)
    return validate(TrainConfig(**values))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``.

    Raises FileNotFoundError for a missing file and ValueError for an unknown key or a value
    of the wrong type.
    """
    cfg = TrainConfig()
    for source in (DEFAULT_CONFIG, path):
        if source is None:
            continue
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"config file not found: {source}")
        loaded = yaml.safe_load(source.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{source}: a config must be a mapping of key: value")
        try:
            cfg = apply_overrides(cfg, loaded)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return apply_overrides(cfg, overrides or {})


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a config saved in a checkpoint (keys that no longer exist are dropped)."""
    known = {k: v for k, v in values.items() if k in FIELD_TYPES}
    return apply_overrides(TrainConfig(), known)
