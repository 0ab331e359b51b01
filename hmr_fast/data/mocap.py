"""Unpaired SMPL parameters for HMR's adversarial prior (the discriminator's "real" samples).

``MocapDataset(paths)`` reads one or more npz files of either layout:

* HMR / mmhuman3d mosh files (CMU, H3.6M MoSh) and ``hmr-fast synth-mocap`` output:
  ``pose`` (N, 72) and ``shape`` (N, 10) (more betas are cut to 10);
* AMASS sequences: ``poses`` (N, 156 or more; the first 72 values are SMPL's 24 joints) and
  ``betas`` (10 or 16,) for the whole sequence, or (N, >= 10) per frame.

Rows with non-finite values are dropped (counted in ``num_dropped``). Items are dicts with
``pose`` (72,) and ``betas`` (10,) float32 tensors.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hmr_fast.data.fileio import read_npz


def load_mocap(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One mocap npz -> (pose (N, 72), betas (N, 10)) float32. ValueError naming the file."""
    path = Path(path)
    data = read_npz(path, "mocap file", "download or copy it again (or hmr-fast synth-mocap)")
    keys = set(data)
    if {"pose", "shape"} <= keys:
        pose, betas = data["pose"], data["shape"]
    elif {"poses", "betas"} <= keys:
        pose, betas = data["poses"], data["betas"]
    else:
        raise ValueError(
            f"{path}: a mocap file needs 'pose' + 'shape' (mosh) or 'poses' + 'betas' "
            f"(AMASS); it has {sorted(keys)}"
        )
    pose = np.asarray(pose, np.float32)
    betas = np.asarray(betas, np.float32)
    if pose.ndim != 2 or pose.shape[1] < 72:
        raise ValueError(f"{path}: pose must be (N, >=72), got {pose.shape}")
    n = pose.shape[0]
    if betas.ndim == 1:
        betas = np.broadcast_to(betas, (n, betas.shape[0]))
    if betas.ndim != 2 or betas.shape[0] != n or betas.shape[1] < 10:
        raise ValueError(f"{path}: betas/shape must be (N={n}, >=10) or (>=10,), got {betas.shape}")
    return np.ascontiguousarray(pose[:, :72]), np.ascontiguousarray(betas[:, :10])


class MocapDataset(Dataset):
    """Concatenation of mocap npz files (see module docstring). ``paths``: one or a list."""

    def __init__(self, paths):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise ValueError("MocapDataset needs at least one npz path")
        poses, betas = zip(*(load_mocap(p) for p in paths))
        pose = np.concatenate(poses)
        beta = np.concatenate(betas)
        ok = np.isfinite(pose).all(1) & np.isfinite(beta).all(1)
        self.num_dropped = int((~ok).sum())
        if self.num_dropped:
            warnings.warn(
                f"MocapDataset: dropped {self.num_dropped} of {len(ok)} rows with non-finite "
                f"values ({', '.join(map(str, paths))})",
                stacklevel=2,
            )
        if not ok.any():
            raise ValueError(f"MocapDataset: no valid rows in {paths}")
        self.pose = torch.from_numpy(np.ascontiguousarray(pose[ok]))
        self.betas = torch.from_numpy(np.ascontiguousarray(beta[ok]))

    def __len__(self) -> int:
        return len(self.pose)

    def __getitem__(self, i: int) -> dict:
        return {"pose": self.pose[i], "betas": self.betas[i]}
