"""Launching the project's Triton kernels, compiled or interpreted (one place for both ops).

Compiled kernels (CUDA) go through ``torch.library.wrap_triton``, so that ``torch.compile``
sees them inside the ``triton_op``s and inductor can call them. Interpreted kernels
(``TRITON_INTERPRET=1``, CPU tensors: the test suite without a GPU) are no JITFunctions:
torch 2.11's ``wrap_triton`` refuses them, so they are called directly, and under fake
tensors (the custom ops' shape-only fake implementations) not at all.
"""

from __future__ import annotations

import torch
from torch.library import wrap_triton

try:  # resolved once: launch() runs on every kernel launch
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover
    InterpretedFunction = ()  # isinstance(x, ()) is False


def is_interpreted(kernel) -> bool:
    """True when ``kernel`` was defined under TRITON_INTERPRET=1."""
    return isinstance(kernel, InterpretedFunction)


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(t)


def launch(kernel, grid, *args, **meta) -> None:
    """``kernel[grid](*args, **meta)``, the way the kernel's kind needs."""
    if is_interpreted(kernel):
        if any(isinstance(a, torch.Tensor) and _is_fake(a) for a in args):
            return  # a fake implementation: only the outputs' allocation matters
        kernel[grid](*args, **meta)
    else:
        wrap_triton(kernel)[grid](*args, **meta)
