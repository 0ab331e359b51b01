"""Training config: YAML defaults (the paper's), overrides, and clear errors on typos."""

import dataclasses
import math

import pytest
import yaml

from hmr_fast.train.cli import build_parser, config_for, parse_args
from hmr_fast.train.config import (
    DEFAULT_CONFIG,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    render_yaml,
)


def test_default_yaml_is_the_rendering_of_the_dataclass():
    """configs/default.yaml is generated from TrainConfig: same text, so the two cannot drift
    (regenerate with ``render_yaml`` after editing the dataclass)."""
    assert DEFAULT_CONFIG.read_text() == render_yaml(), (
        "default.yaml is stale: write hmr_fast.train.config.render_yaml() to it")


def test_default_yaml_values_equal_the_dataclass_defaults():
    """Read back as YAML, every key has the dataclass's value (and no other key exists)."""
    values = yaml.safe_load(DEFAULT_CONFIG.read_text())
    defaults = TrainConfig().to_dict()
    assert values == defaults
    assert load_config(DEFAULT_CONFIG) == TrainConfig()


def test_every_key_is_a_flag_with_its_help():
    """The CLI is generated from the fields: each key has --key (booleans also --no-key),
    and its help text is the field's."""
    parser = build_parser()
    flags = parser._option_string_actions
    for field in dataclasses.fields(TrainConfig):
        name = "--" + field.name.replace("_", "-")
        assert name in flags, name
        assert flags[name].dest == field.name
        if field.type == "bool":
            assert flags["--no-" + field.name.replace("_", "-")].dest == field.name
        else:
            assert field.metadata["help"].replace("%", "%%") in flags[name].help
    # A value set through each numeric flag lands in its key (a value its range allows).
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        if field.type in ("int", "float", "int | None", "float | None"):
            value = getattr(defaults, field.name)
            value = 7 if value is None else value / 2 if field.type.startswith("float") else 7
            _, ov = parse_args([f"--{field.name.replace('_', '-')}", str(value)])
            assert ov == {field.name: str(value)}
            assert getattr(apply_overrides(defaults, ov), field.name) == value


def test_shipped_configs_load_and_name_errors(tmp_path):
    paper, demo = load_config("paper"), load_config("demo")
    assert paper.pretrained == "hub" and paper.epochs == 55
    assert demo.backbone == "resnet18" and demo.image_size == 64
    with pytest.raises(FileNotFoundError, match=r"nope.*demo.*paper"):
        load_config("nope")


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.encoder_lr == 1e-5 and cfg.disc_lr == 1e-4
    # The original builds L2 regularisers but never adds them to a loss.
    assert cfg.encoder_weight_decay == 0 and cfg.disc_weight_decay == 0
    assert cfg.batch_size == 64 and cfg.num_iters == 3 and cfg.image_size == 224
    assert cfg.backbone == "resnet50"
    assert (cfg.keypoint_weight, cfg.joints_3d_weight, cfg.adversarial_weight) == (60, 60, 1)
    assert cfg.smpl_weight == 60 and cfg.disc_weight == 1
    assert cfg.epochs == 55 and cfg.steps is None
    assert cfg.bn_momentum == pytest.approx(1 - 0.997) and cfg.crop_padding == "edge"


def test_old_checkpoint_configs_keep_what_they_did():
    """Keys a saved config predates take the behaviour of that time, not today's default."""
    old = TrainConfig().to_dict()
    del old["crop_padding"], old["bn_momentum"]
    cfg = config_from_dict(old)
    assert cfg.crop_padding == "zero" and cfg.bn_momentum == 0.1


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbone: resnet18\nbatch_size: 8\nencoder_lr: 3.0e-4\n")
    cfg = load_config(path, {"batch_size": "16", "use_3d": "false", "data": "a,b"})
    assert cfg.backbone == "resnet18" and cfg.encoder_lr == 3e-4
    assert cfg.batch_size == 16 and cfg.use_3d is False and cfg.data == ["a", "b"]


def test_unknown_yaml_key_names_it_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_sise: 8\n")
    with pytest.raises(ValueError, match=r"batch_sise.*batch_size"):
        load_config(path)


def test_unknown_override_and_bad_values():
    with pytest.raises(ValueError, match=r"'encoder_lrr'.*'encoder_lr'"):
        apply_overrides(TrainConfig(), {"encoder_lrr": 1.0})
    with pytest.raises(ValueError, match="batch_size.*int"):
        apply_overrides(TrainConfig(), {"batch_size": "many"})
    with pytest.raises(ValueError, match="batch_size.*> 0"):
        apply_overrides(TrainConfig(), {"batch_size": 0})
    with pytest.raises(ValueError, match="resnet50"):
        apply_overrides(TrainConfig(), {"backbone": "resnet5O"})


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_cli_flags_map_to_keys():
    args, ov = parse_args(
        [
            "--steps",
            "7",
            "--batch-size",
            "4",
            "--backbone",
            "resnet18",
            "--image-size",
            "64",
            "--no-fused",
            "--no-3d",
            "--lr",
            "1e-3",
            "--set",
            "keep_checkpoints=2",
            "--workers",
            "0",
        ]
    )
    cfg = config_for(args, ov)
    assert (cfg.steps, cfg.batch_size, cfg.backbone, cfg.image_size) == (7, 4, "resnet18", 64)
    assert cfg.fused is False and cfg.use_3d is False and cfg.encoder_lr == 1e-3
    assert cfg.keep_checkpoints == 2 and cfg.workers == 0
    args, ov = parse_args(["--fused"])
    assert config_for(args, ov).fused is True


def test_cli_unknown_flag_suggests():
    with pytest.raises(ValueError, match=r"--batch-sz.*--batch-size"):
        parse_args(["--batch-sz", "4"])
    with pytest.raises(ValueError, match=r"'stepz'.*'steps'"):
        parse_args(["--set", "stepz=3"])


def test_lr_schedule_warmup_and_cosine():
    from hmr_fast.train.step import lr_factor

    const = TrainConfig(steps=100)
    assert all(lr_factor(const, s) == 1.0 for s in range(100))
    cfg = TrainConfig(steps=110, warmup_steps=10, lr_schedule="cosine")
    warm = [lr_factor(cfg, s) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    decay = [lr_factor(cfg, s) for s in range(10, 110)]
    assert decay[0] == pytest.approx(1.0)
    assert decay[50] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    with pytest.raises(ValueError, match="lr_schedule.*(cosine|constant)"):
        apply_overrides(TrainConfig(), {"lr_schedule": "cosin"})
    with pytest.raises(ValueError, match="flip_prob"):
        apply_overrides(TrainConfig(), {"flip_prob": 1.5})
    with pytest.raises(ValueError, match="regressor_dropout"):
        apply_overrides(TrainConfig(), {"regressor_dropout": 1.0})
    with pytest.raises(ValueError, match="warmup_steps"):
        apply_overrides(TrainConfig(), {"warmup_steps": -1})


def test_flip_prob_reaches_the_dataset(tmp_path):
    from hmr_fast.data.synth import synthesize
    from hmr_fast.train.data import build_train_dataset

    synthesize(tmp_path / "d", 2, image_size=32, workers=1, progress=False)
    for p in (0.0, 0.25):
        cfg = apply_overrides(TrainConfig(), {"data": [str(tmp_path / "d")], "flip_prob": p})
        assert build_train_dataset(cfg).aug.flip_prob == p
