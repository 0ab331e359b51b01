"""NVTX ranges around the parts of a training step, optionally timed."""

from __future__ import annotations

import contextlib
import time

import torch


class _TorchNvtx:
    """The ``nvtx`` package's two calls on torch's bindings (no-ops without CUDA)."""

    @staticmethod
    def push_range(name):
        if torch.cuda.is_available():
            torch.cuda.nvtx.range_push(name)

    @staticmethod
    def pop_range():
        if torch.cuda.is_available():
            torch.cuda.nvtx.range_pop()


class Ranges:
    """NVTX ranges around the parts of a step, optionally timed (wall clock, CUDA-synced).

    ``ranges("data")`` is a context manager; ``attach(module, name)`` opens the range around a
    submodule's forward through hooks (the SMPL layer lives inside the model's forward).
    """

    def __init__(self, timed: bool = False, device: torch.device | None = None):
        try:
            import nvtx
        except ImportError:  # optional at run time: fall back to torch's NVTX bindings
            nvtx = _TorchNvtx()
        self._nvtx = nvtx
        self.timed = timed
        self.sync = timed and device is not None and device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._open: dict[str, list[float]] = {}

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _start(self, name):
        self._nvtx.push_range(name)
        if self.timed:
            self._open.setdefault(name, []).append(self._now())

    def _stop(self, name):
        if self.timed:
            t0 = self._open[name].pop()
            self.totals[name] = self.totals.get(name, 0.0) + self._now() - t0
        self._nvtx.pop_range()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._start(name)
        try:
            yield
        finally:
            self._stop(name)

    def attach(self, module: torch.nn.Module | None, name: str) -> None:
        if module is None:
            return
        module.register_forward_pre_hook(lambda *_: self._start(name))
        module.register_forward_hook(lambda *_: self._stop(name))

    def reset(self) -> None:
        self.totals = {}
