"""The data order of a run as a pure function of (seed, step, rank)."""

from __future__ import annotations

import numpy as np
import torch


class StepSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) pairs as a pure function of (seed, step, rank).

    The global batch of step s is positions ``s*G .. s*G+G-1`` (G = batch * world) of an
    endless stream of epochs, epoch e being ``default_rng([seed, stream, e]).permutation(N)``
    (or ``0..N-1`` with ``shuffle=False``, for datasets that shuffle inside, like
    MixedDataset); rank r takes positions ``r*batch ..`` of it (the DistributedSampler
    split). Starting at any step therefore gives exactly the batches an uninterrupted run
    would have seen. The epoch travels with the index so that the dataset keys its
    augmentation by it (``EpochIndexed``), also inside DataLoader workers.
    """

    def __init__(
        self, n, batch_size, seed, start_step, num_steps, rank=0, world=1, stream=0, shuffle=True
    ):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.batch, self.seed, self.stream = n, batch_size, seed, stream
        self.start, self.stop = start_step, num_steps
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.stream, epoch])
                self._perms[epoch] = rng.permutation(self.n)
            else:
                self._perms[epoch] = np.arange(self.n)
        return self._perms[epoch]

    def pairs(self, step: int) -> list[tuple[int, int]]:
        """(epoch, index) of this rank's samples at ``step``."""
        first = step * self.batch * self.world + self.rank * self.batch
        pos = np.arange(first, first + self.batch)
        return [(int(p // self.n), int(self._perm(int(p // self.n))[p % self.n])) for p in pos]

    def indices(self, step: int) -> list[int]:
        return [i for _, i in self.pairs(step)]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.pairs(step)

    def __len__(self):
        return max(0, self.stop - self.start)


class EpochIndexed(torch.utils.data.Dataset):
    """Wraps a dataset with ``set_epoch`` so that it is indexed by (epoch, index) pairs."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, pair):
        epoch, index = pair
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def batch_skipped(batch: dict) -> int:
    """Bad rows the dataset skipped while producing this batch (0 if it does not report)."""
    val = batch.get("skipped")
    if val is None:
        return 0
    if isinstance(val, torch.Tensor):
        return int(val.sum())
    return int(np.sum(val))
