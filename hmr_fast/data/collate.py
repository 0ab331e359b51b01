"""Batching of dataset items (training, evaluation, the demo)."""

from __future__ import annotations

import numpy as np
import torch


def collate(items: list[dict]) -> dict:
    """Stack a list of dataset items (tensors / numbers; strings kept as lists)."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(vals[0], (bool, int, float, np.number, np.bool_)):
            out[key] = torch.as_tensor(np.asarray(vals))
        else:
            out[key] = vals
    return out
