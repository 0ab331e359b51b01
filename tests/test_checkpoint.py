"""Checkpoint files: atomic writes, keep-last-K, newest complete one, RNG state, clear errors."""

import os
import random

import numpy as np
import pytest
import torch

from hmr_fast.train import checkpoint as ckpt


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while writing")


def test_roundtrip_and_keep_last(tmp_path):
    d = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(
            {"model": {"w": torch.full((3,), float(step))}, "step": step}, d, step, keep=2
        )
    steps = [s for s, _ in ckpt.list_checkpoints(d)]
    assert steps == [4, 5]
    latest = ckpt.latest_checkpoint(d)
    state = ckpt.load_checkpoint(latest)
    assert state["step"] == 5 and torch.equal(state["model"]["w"], torch.full((3,), 5.0))
    assert not [p for p in os.listdir(d) if p.endswith(".tmp")]


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    d = tmp_path / "c"
    ckpt.save_checkpoint({"model": {}, "step": 1}, d, 1)
    with pytest.raises(RuntimeError, match="boom"):
        ckpt.save_checkpoint({"model": {}, "bad": _Unpicklable()}, d, 2)
    assert sorted(os.listdir(d)) == [ckpt.checkpoint_name(1)]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(d))["step"] == 1


def test_latest_skips_unreadable_files(tmp_path):
    d = tmp_path / "c"
    ckpt.save_checkpoint({"model": {}, "step": 3}, d, 3)
    (d / ckpt.checkpoint_name(4)).write_bytes(b"\x80truncated")
    assert ckpt.latest_checkpoint(d).name == ckpt.checkpoint_name(3)
    with pytest.raises(ValueError, match=ckpt.checkpoint_name(4)):
        ckpt.load_checkpoint(d / ckpt.checkpoint_name(4))


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        ckpt.load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="run_dir"):
        ckpt.resolve_checkpoint(tmp_path / "run_dir")
    assert ckpt.latest_checkpoint(tmp_path / "absent") is None


def test_resolve_run_directory(tmp_path):
    ckpt.save_checkpoint({"model": {}, "step": 7}, tmp_path / "checkpoints", 7)
    assert ckpt.resolve_checkpoint(tmp_path).name == ckpt.checkpoint_name(7)


def test_rng_state_restores_every_stream():
    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(3), torch.rand(3))
    ckpt.set_rng_state(state)
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    assert torch.equal(first[2], again[2])


def test_rng_state_survives_the_file(tmp_path):
    ckpt.save_checkpoint({"model": {}, "rng": ckpt.rng_state()}, tmp_path, 1)
    a = torch.randn(5), np.random.randn(2), random.random()
    ckpt.set_rng_state(ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["rng"])
    b = torch.randn(5), np.random.randn(2), random.random()
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_weight_mismatch_is_one_clear_line():
    small, big = torch.nn.Linear(3, 4), torch.nn.Linear(3, 5)
    with pytest.raises(ValueError, match=r"differ in shape \(e\.g\. weight: checkpoint \(5, 3\)"):
        ckpt.load_model_weights(small, big.state_dict(), "model", "x.pt")
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="missing"):
        ckpt.load_model_weights(seq, small.state_dict(), "model", "x.pt")
    ckpt.load_model_weights(small, torch.nn.Linear(3, 4).state_dict(), "model", "x.pt")


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
    ckpt.save_checkpoint({"model": {}, "step": 1}, tmp_path, 1)
    dead = tmp_path / ".ckpt_00000002.pt.abc123.tmp"
    dead.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.checkpoint_name(1)
    assert ckpt.remove_partial_files(tmp_path) == [dead]
    assert not dead.exists() and other.exists()


def test_checkpoints_honour_the_umask(tmp_path):
    import stat

    old = os.umask(0o002)
    try:
        path = ckpt.save_checkpoint({"model": {}, "step": 1}, tmp_path, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_skipped_checkpoints_are_reported(tmp_path):
    d = tmp_path / "checkpoints"
    ckpt.save_checkpoint({"model": {}, "step": 3}, d, 3)
    bad = d / ckpt.checkpoint_name(4)
    bad.write_bytes(b"\x80truncated")
    skipped = []
    assert ckpt.latest_checkpoint(d, skipped).name == ckpt.checkpoint_name(3)
    assert [p for p, _ in skipped] == [bad] and "not a readable" in skipped[0][1]
    assert ckpt.checkpoint_name(4) in ckpt.skipped_message(skipped)
    skipped = []
    assert ckpt.resolve_checkpoint(tmp_path, skipped).name == ckpt.checkpoint_name(3)
    assert [p for p, _ in skipped] == [bad]
