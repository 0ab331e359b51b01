"""Atomic training checkpoints and the RNG state that makes a resumed run exact.

A checkpoint is one ``torch.save`` file ``ckpt_{step:08d}.pt`` in the run's ``checkpoints/``
directory. It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over the final name (``os.replace`` is atomic on POSIX) and the directory fsynced, so
a run killed at any instant leaves either the previous set of checkpoints or the new one,
never a truncated file under a checkpoint name (``hmr_fast.data.fileio.atomic_write``; the
file gets the permissions the umask allows, as any plainly created file would).

A checkpoint that does not load (damaged by a foreign tool, a full disk, a copy cut short) is
never skipped silently: ``latest_checkpoint`` / ``resolve_checkpoint`` report each one they
passed over, with the reason, through their ``skipped`` list.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from hmr_fast.data.fileio import atomic_write

CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (tmp file, fsync, rename, fsync dir)."""
    return atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_save_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (same protocol as :func:`atomic_save`)."""
    return atomic_write(path, lambda f: f.write(text), "w")


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(state: dict, directory: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep``."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = atomic_save(state, Path(directory) / checkpoint_name(step))
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    remove_partial_files(directory)
    return path


def remove_partial_files(directory: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (``.ckpt_*.tmp``); returns them.

    Only one process writes a run's checkpoints, so any such file is a dead write.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(".ckpt_*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint file; FileNotFoundError / ValueError name the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated / foreign file: say which one
        raise ValueError(f"{path}: not a readable hmr-fast checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not an hmr-fast checkpoint (no 'model' entry)")
    return state


def latest_checkpoint(directory: str | Path, skipped: list | None = None) -> Path | None:
    """The newest checkpoint in ``directory`` that loads, or None if there is none.

    Unreadable files (e.g. written by a foreign tool under a checkpoint name) are passed over
    so that a resume falls back to the previous complete one; each is appended to
    ``skipped`` as ``(path, reason)`` so that the caller can say so.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            load_checkpoint(path)
        except ValueError as exc:
            if skipped is not None:
                skipped.append((path, str(exc)))
            continue
        return path
    return None


def skipped_message(skipped: list) -> str:
    """'skipped ckpt_X.pt (reason); ...' for the (path, reason) pairs of latest_checkpoint."""
    return "; ".join(f"skipped {p} ({reason})" for p, reason in skipped)


def resolve_checkpoint(path: str | Path, skipped: list | None = None) -> Path:
    """A checkpoint file, or the newest loadable one in a run directory / its checkpoints/
    folder (the ones passed over are appended to ``skipped``, see latest_checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for d in (path / "checkpoints", path):
            found = latest_checkpoint(d, skipped)
            if found is not None:
                return found
        raise FileNotFoundError(f"no loadable checkpoint (ckpt_*.pt) found in {path}")
    raise FileNotFoundError(f"checkpoint not found: {path}")


def rng_state() -> dict:
    """Every global RNG state that training consumes (python, numpy, torch, CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def load_model_weights(module: torch.nn.Module, state_dict: dict, what: str, source) -> None:
    """``load_state_dict`` with a one-line error instead of a dump of mismatched keys.

    Checkpoints written before the SMPL layer's constants became persistent (as smplx's are)
    lack them; those keys alone may be missing, and the layer keeps its own values.
    """
    own = module.state_dict()
    optional = _smpl_constant_keys(module)
    missing = [k for k in own if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} tensors differ in shape (e.g. {k}: checkpoint "
                f"{tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ValueError(
            f"{source}: the {what} weights do not fit this {what}: " + "; ".join(parts)
        )
    absent = [k for k in own if k not in state_dict]
    module.load_state_dict(state_dict, strict=not absent)


def _smpl_constant_keys(module: torch.nn.Module) -> set[str]:
    """state_dict keys of the model constants of every SMPL layer inside `module`."""
    from hmr_fast.body.smpl import SMPLLayer

    keys = set()
    for name, sub in module.named_modules():
        if isinstance(sub, SMPLLayer):
            prefix = f"{name}." if name else ""
            keys.update(prefix + k for k in sub.state_dict()
                        if k not in ("betas", "global_orient", "body_pose", "transl"))
    return keys
