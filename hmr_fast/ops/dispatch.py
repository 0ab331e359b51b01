"""The one rule every fast path obeys: it runs only where the caller cannot observe a
difference from the plain differentiable torch math; everywhere else the plain path runs.

A fast path (the numba skeleton and skinning loops, the oneDNN blend GEMM, the Triton
kernels, the layer's cached derived constants) is a black box to autograd and to every
tracer: it has a hand-written first-order backward, reads raw data pointers and caches
tensors derived from the model's buffers. So it steps aside when

* a tracer or compiler is recording (`torch.jit.trace`/script, `torch.compile`, export):
  the recorded graph must read the module's buffers, not a snapshot of them;
* a functorch transform is active (`vmap`, `grad`, `jacrev`, `jacfwd`, `jvp`) or an input is
  a wrapped tensor (BatchedTensor, GradTrackingTensor, FakeTensor, FunctionalTensor...);
* forward-mode AD is on (`torch.autograd.forward_ad.dual_level`);
* a model constant requires grad (a learnable template or blend shapes).

Double backward is the one case a forward cannot see coming, so every custom
`autograd.Function` of the fast paths computes its backward with plain differentiable torch
ops whenever `backward_must_be_plain` says so (create_graph=True, or a vmapped backward as
in `autograd.functional.jacobian(vectorize=True)`).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad
from torch._C import _functorch

# nn.Buffer is a Tensor subclass only as a marker for register_buffer; Parameter likewise.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter, getattr(torch.nn, "Buffer", torch.Tensor))


def is_plain_tensor(t) -> bool:
    """A real tensor with storage: not a tensor subclass, not wrapped by a transform."""
    # The legacy vmap (`torch._vmap_internals`, behind autograd.functional's vectorize=True)
    # wraps tensors in its own BatchedTensor, which the functorch check does not see.
    return (type(t) in _PLAIN_TYPES and not _functorch.is_functorch_wrapped_tensor(t)
            and not _functorch.is_legacy_batchedtensor(t))


def recording() -> bool:
    """Whether a tracer, compiler or functorch transform is recording this call."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling()
            or _functorch.peek_interpreter_stack() is not None)


def plain_reason(inputs, constants) -> str | None:
    """Why this call must take the plain torch path, or None if a fast path may run.

    Args:
        inputs: the call's tensors (None entries are skipped).
        constants: the model constants the fast path would read or derive from.
    """
    if recording():
        return "traced, compiled or under a functorch transform"
    if _forward_ad._current_level >= 0:
        return "forward-mode AD"
    tensors = [t for t in inputs if t is not None]
    if not all(is_plain_tensor(t) for t in tensors):
        return "a wrapped or subclassed input tensor"
    if torch.is_grad_enabled() and any(c is not None and c.requires_grad for c in constants):
        return "a model constant requires grad"
    return None


def backward_must_be_plain(*tensors) -> bool:
    """Inside a custom backward: whether it must use plain differentiable torch ops.

    True when the gradient itself is being recorded (double backward: create_graph=True
    turns grad mode on inside backward), or when a transform batches the backward (its
    gradients are BatchedTensors without storage).
    """
    return (torch.is_grad_enabled() or recording()
            or not all(t is None or is_plain_tensor(t) for t in tensors))


def backward_is_recorded_or_batched(*grads) -> bool:
    """Inside the backward of a registered op that tracers understand (the Triton op): whether
    it must differentiate its plain form instead, i.e. the gradient is being recorded
    (create_graph=True) or batched by vmap. Tracing and compiling alone keep the op's own
    backward, which torch.library exposes to them."""
    return torch.is_grad_enabled() or any(
        g is not None and (_functorch.is_batchedtensor(g) or _functorch.is_legacy_batchedtensor(g))
        for g in grads)
