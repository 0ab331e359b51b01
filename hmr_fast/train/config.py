"""Training configuration: one flat dataclass, the single source of every setting.

Its fields hold the defaults (the HMR paper's recipe), their types and their help texts.
``configs/default.yaml`` is rendered from them (``render_yaml``; a test keeps the file equal
to the rendering) and ``hmr-fast train``'s flags are generated from them (``train/cli.py``).
Named configs (``configs/<name>.yaml``: ``paper``, ``demo``) override a few keys. A key that
is not a field, in a YAML file or an override, is an error that names the key and its
closest matches.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
BACKBONES = ("resnet18", "resnet34", "resnet50")
LR_SCHEDULES = ("constant", "cosine")
CROP_PADDINGS = ("edge", "zero")


def _key(default, help: str, *, section: str | None = None, flags: tuple = (), factory=None):
    """A config field whose metadata (help text, YAML section, extra CLI flags) is the one
    source of ``configs/default.yaml``'s comments and of ``hmr-fast train --help``."""
    meta = {"help": help, "section": section, "flags": flags}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """Every training setting. Defaults are the paper's recipe (Kanazawa et al. CVPR 2018,
    section 3 "Implementation details") and its original code; each help text cites its
    source. ``configs/default.yaml`` and the CLI are generated from these fields."""

    data: list = _key(None, "annotation .npz files, or folders each holding one",
                      section="data", factory=list)
    mocap: str | None = _key(None, "mocap .npz (pose (N,72), shape (N,10)) for the "
                             "discriminator prior")
    ratio_3d: float = _key(0.5, "fraction of each batch drawn from the 3D-labelled datasets")
    workers: int = _key(4, "DataLoader worker processes (0 = load in the main process)")
    image_cache: str | None = _key(None, "pre-cropped images (hmr-fast cache-data): null = "
                                   "none, auto = each npz's X_cache/, or DIR[,DIR...] one per "
                                   "data entry (\"\" = none)")
    image_root: list = _key(None, "folders imgname is relative to: one for all data, or one "
                            "per entry (default: the folder of each data entry)", factory=list)
    crop_padding: str = _key("edge", "what fills a crop outside the image: edge (replicated "
                             "border pixels, as akanazawa/hmr src/util/data_utils.py "
                             "pad_image_edge) | zero (SPIN's)")
    backbone: str = _key("resnet50", "resnet50 | resnet34 | resnet18 (torchvision's v1.5)",
                         section="model")
    pretrained: str | None = _key(None, "torchvision ImageNet weights: a file, or \"hub\" "
                                  "(torch's hub cache); nothing is downloaded. The paper "
                                  "starts from ImageNet weights (null warns)")
    image_size: int = _key(224, "crop side in pixels (the paper's 224)")
    num_iters: int = _key(3, "T, iterative error feedback steps (the paper's 3)")
    regressor_dropout: float = _key(0.5, "dropout after each FC1024 of the regressor (the "
                                    "paper's 0.5)")
    bn_momentum: float = _key(0.003, "batch-norm running-statistics momentum (PyTorch's "
                              "convention): 1 - slim's decay 0.997 used by akanazawa/hmr")
    fused: bool = _key(True, "Triton SMPL + discriminator on CUDA; torch everywhere else")
    epochs: float = _key(55.0, "length of a run in passes over the training data (the "
                         "paper's 55); steps follow from the data size", section="optimisation")
    steps: int | None = _key(None, "length of a run in steps; null = from epochs")
    batch_size: int = _key(64, "per process; the mocap batch is batch_size * num_iters (the "
                           "paper's 64)")
    encoder_lr: float = _key(1e-5, "Adam learning rate of the encoder + regressor (the "
                             "paper's 1e-5)", flags=("--lr",))
    disc_lr: float = _key(1e-4, "Adam learning rate of the discriminator (the paper's 1e-4)")
    encoder_weight_decay: float = _key(0.0, "L2 on the encoder's parameters: 0, as the original "
                                       "code (its regularisers are never added to the loss)")
    disc_weight_decay: float = _key(0.0, "L2 on the discriminator's parameters: 0, as "
                                    "akanazawa/hmr")
    lr_schedule: str = _key("constant", "constant (the paper) | cosine: decay to 0 at the "
                            "last step (both networks)")
    warmup_steps: int = _key(0, "linear warm-up of both learning rates over the first N steps")
    flip_prob: float = _key(0.5, "horizontal flip augmentation (mirrors image, keypoints and "
                            "pose; akanazawa/hmr flips half the images)")
    amp: bool = _key(False, "bf16 autocast of the encoder, regressor and discriminator")
    keypoint_weight: float = _key(60.0, "lambda of the 2D keypoint L1 (final iteration; "
                                  "akanazawa/hmr src/config.py e_loss_weight)",
                                  section="loss weights")
    joints_3d_weight: float = _key(60.0, "lambda of the 3D joint loss, 0.5 x mean squared "
                                   "error as akanazawa/hmr's (masked by has_3d; e_3d_weight)")
    smpl_weight: float = _key(60.0, "lambda of the SMPL parameter loss, 0.5 x mean squared "
                              "error as akanazawa/hmr's (masked by has_smpl; e_3d_weight)")
    adversarial_weight: float = _key(1.0, "the encoder's adversarial term (all iterations; "
                                     "the paper's lambda = 1)")
    disc_weight: float = _key(1.0, "the discriminator's loss (akanazawa/hmr d_loss_weight)")
    use_3d: bool = _key(True, "false = 2D keypoints + adversarial prior only",
                        flags=("--no-3d",))
    seed: int = _key(0, "seeds the data order, augmentation and initialisation", section="run")
    out: str = _key("runs/hmr", "run directory (metrics.jsonl, checkpoints/, tb/)")
    ckpt_every: int = _key(1000, "steps between checkpoints")
    keep_checkpoints: int = _key(3, "newest checkpoints kept")
    log_images_every: int = _key(1000, "TensorBoard images of the predicted meshes (0 = never)")
    minutes: float | None = _key(None, "time budget: training ends within it, and when the "
                                 "measured speed cannot reach the last step the schedule is "
                                 "shortened so that it still completes (null = none)")
    device: str = _key("auto", "auto | cpu | cuda[:N]")

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
    nullable = kind.endswith(" | None")
    if value is None or (nullable and isinstance(value, str)
                         and value.lower() in ("null", "none", "~")):
        if nullable:
            return None
        raise ValueError(f"config key {key!r} must not be null (type {kind})")
    kind = kind.removesuffix(" | None")
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
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"config key {key!r} expects {kind}, got {value!r} ({type(value).__name__})"
        ) from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range checks that catch typos early; returns ``cfg``."""
    if cfg.backbone not in BACKBONES:
        raise unknown_key_error(cfg.backbone, BACKBONES, "backbone")
    positive = ("image_size", "num_iters", "batch_size", "steps", "ckpt_every",
                "keep_checkpoints", "epochs", "minutes")
    for key in positive:
        if getattr(cfg, key) is not None and getattr(cfg, key) <= 0:
            raise ValueError(f"config key {key!r} must be > 0, got {getattr(cfg, key)}")
    for key in ("workers", "log_images_every", "encoder_lr", "disc_lr"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise unknown_key_error(cfg.lr_schedule, LR_SCHEDULES, "lr_schedule")
    if cfg.crop_padding not in CROP_PADDINGS:
        raise unknown_key_error(cfg.crop_padding, CROP_PADDINGS, "crop_padding")
    if not 0.0 < cfg.bn_momentum <= 1.0:
        raise ValueError(f"config key 'bn_momentum' must be in (0, 1], got {cfg.bn_momentum}")
    for key in ("encoder_weight_decay", "disc_weight_decay"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
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


def config_path(name: str | Path) -> Path:
    """A YAML path, or the name of a config shipped in ``hmr_fast/configs`` (``paper``,
    ``demo``). FileNotFoundError names both places looked at."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name}.yaml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {name} (nor a shipped config: {names})")


def read_yaml(path: str | Path) -> dict:
    """The mapping of a YAML config file (``config_path`` resolves shipped names)."""
    # pyyaml is imported where YAML is read or written: the GPU machines have none
    # (shared/GPU.md), and the GPU check builds its configs from the dataclass alone.
    import yaml

    source = config_path(path)
    loaded = yaml.safe_load(source.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{source}: a config must be a mapping of key: value")
    return loaded


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """The dataclass's defaults, then the YAML file at ``path`` (a path or a shipped name;
    if any), then ``overrides``.

    Raises FileNotFoundError for a missing file and ValueError for an unknown key or a value
    of the wrong type.
    """
    cfg = TrainConfig()
    if path is not None:
        try:
            cfg = apply_overrides(cfg, read_yaml(path))
        except ValueError as exc:
            raise ValueError(f"{config_path(path)}: {exc}") from None
    return apply_overrides(cfg, overrides or {})


def render_yaml(cfg: TrainConfig | None = None, width: int = 96) -> str:
    """``cfg`` (default: the defaults) as commented YAML: each key with its help text, under
    its section's heading. ``configs/default.yaml`` is this text for the defaults."""
    import yaml  # not at the top: see read_yaml

    cfg = cfg or TrainConfig()
    lines = [
        "# hmr-fast training defaults: the HMR paper's recipe (Kanazawa et al. CVPR 2018) and",
        "# its original code (akanazawa/hmr). Generated from hmr_fast/train/config.py",
        "# (TrainConfig): edit the dataclass, not this file. Any key can be set from the command",
        "# line (`hmr-fast train --help`) or in a --config YAML; unknown keys are an error.",
    ]
    for field in dataclasses.fields(TrainConfig):
        if field.metadata.get("section"):
            lines += ["", f"# {field.metadata['section']}"]
        value = yaml.safe_dump({field.name: getattr(cfg, field.name)},
                               default_flow_style=True, width=10_000).strip()[1:-1]
        head = f"{value:<24}  # "
        words, line = field.metadata["help"].split(), head
        for word in words:
            if len(line) + len(word) + 1 > width and line.strip() != head.strip():
                lines.append(line.rstrip())
                line = " " * (len(head) - 2) + "# "
            line += word + " "
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


# What runs saved before a key existed did: a checkpoint without the key is read with this
# value, not with today's default (its crops were zero-padded, its batch norms PyTorch's).
VALUES_BEFORE_THE_KEY = {"crop_padding": "zero", "bn_momentum": 0.1}


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a config saved in a checkpoint (keys that no longer exist are dropped; keys it
    predates take ``VALUES_BEFORE_THE_KEY``)."""
    known = {**VALUES_BEFORE_THE_KEY, **{k: v for k, v in values.items() if k in FIELD_TYPES}}
    return apply_overrides(TrainConfig(), known)
