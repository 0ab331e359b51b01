"""The discriminator's shared joint embedding + 23 per-joint heads as differentiable ops.

Math (per sample b and non-root joint j, with x_bj the flattened 3x3 rotation, 9-D):

    h1_bj = relu(W1 x_bj + b1)            W1 (32, 9)
    h2_bj = relu(W2 h1_bj + b2)           W2 (32, 32)
    s_bj  = Wh[j] · h2_bj + bh[j]          Wh (23, 32), bh (23,)

Every op here maps ``x (B, 23, 9)`` to ``(h2 (B, 23, 32), scores (B, 23))``:

* :func:`disc_heads_torch` — batched PyTorch (two GEMMs and an einsum, no loop over heads);
* :func:`disc_heads_loop_reference` — one head at a time, the way the original TF graph is
  written; the oracle for tests and the baseline for benchmarks;
* :func:`disc_heads_triton` — one fused Triton launch forward, one backward (plus a torch
  sum over per-program partial parameter gradients), registered as ``hmr_fast::disc_heads_fwd``
  and ``hmr_fast::disc_heads_bwd`` with ``torch.library`` so torch.compile traces it without a
  graph break; :class:`DiscHeadsFunction` is the same pair as a ``torch.autograd.Function``.

Triton ops compute in fp32 (fp64 when the input or weights are fp64): fp16/bf16 activations are
upcast on load; outputs have the input's dtype and parameter gradients the parameters' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from hmr_fast.body.constants import NUM_BODY_JOINTS
from hmr_fast.ops.kernels_loader import kernels_package
from hmr_fast.ops.triton_launch import is_interpreted, launch

kernels_package()  # kernels/ is hmr_fast.kernels, also in a checkout that is not installed
from hmr_fast.kernels import discriminator as _kernels  # noqa: E402

ROT_DIM = 9
HIDDEN = 32
_PARTIAL_SIZE = int(_kernels.PARTIAL_SIZE)
# Split sizes of one partial-gradient row: dW1, db1, dW2, db2, dWh, dbh.
_PARTIAL_SPLITS = (
    HIDDEN * ROT_DIM,
    HIDDEN,
    HIDDEN * HIDDEN,
    HIDDEN,
    NUM_BODY_JOINTS * HIDDEN,
    NUM_BODY_JOINTS,
)
assert sum(_PARTIAL_SPLITS) == _PARTIAL_SIZE
# Cap on backward programs: about two per SM on an H100. Each program sums the gradients of
# its tiles in registers, so fewer programs means a smaller partial buffer to reduce.
_MAX_BWD_PROGRAMS = 264
# The kernels index with 32-bit offsets: row * 32 must stay below 2^31.
_MAX_SAMPLES = (2**31 - 1) // (NUM_BODY_JOINTS * HIDDEN)
# Under the interpreter every program and every tl op costs real time: one big tile.
_INTERPRET_MAX_BLOCK = 1024


def _kernels_interpreted() -> bool:
    """True when the kernels were defined under TRITON_INTERPRET=1 (they run on CPU tensors)."""
    return is_interpreted(_kernels._disc_heads_fwd_kernel)


def check_triton_device(x: torch.Tensor) -> None:
    """Raises RuntimeError when Triton cannot run on ``x``'s device, ValueError when the batch
    is too large for the kernels' 32-bit offsets."""
    if x.shape[0] > _MAX_SAMPLES:
        raise ValueError(
            f"the Triton discriminator kernels take at most {_MAX_SAMPLES} samples per call, "
            f"got {x.shape[0]}; split the batch"
        )
    if x.device.type != "cuda" and not _kernels_interpreted():
        raise RuntimeError(
            "the Triton discriminator backend needs CUDA tensors, got a tensor on "
            f"{x.device}. Use backend='torch' (or 'auto') on CPU, or set TRITON_INTERPRET=1 "
            "before hmr_fast is imported to run the kernels in Triton's CPU interpreter."
        )


def _compute_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (x.dtype, w.dtype) else torch.float32


def _launch_config(x: torch.Tensor, gpu_config: dict) -> dict:
    """Block size (and warps) for a launch: the AOT-checked GPU config on CUDA; under the
    interpreter one tile as large as the batch (up to 1024 rows), since each program and
    each op costs real time there."""
    if x.device.type == "cuda" and not _kernels_interpreted():
        return dict(gpu_config)
    n_rows = x.shape[0] * NUM_BODY_JOINTS
    return dict(BLOCK_M=max(16, min(_INTERPRET_MAX_BLOCK, triton.next_power_of_2(n_rows))))


def _weights(x, *params):
    """Parameters (w1 first) as contiguous tensors in the compute dtype (a no-op for
    contiguous fp32 parameters)."""
    cdt = _compute_dtype(x, params[0])
    return [t.to(cdt).contiguous() for t in params]


# ----------------------------------------------------------------------------------------
# Launchers (plain functions; outputs may be preallocated, e.g. NaN-filled by tests)
# ----------------------------------------------------------------------------------------


def launch_disc_heads_fwd(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    wh: torch.Tensor,
    bh: torch.Tensor,
    h2_out: torch.Tensor,
    scores_out: torch.Tensor,
) -> None:
    """Runs the forward kernel.

    x (B, 23, 9) contiguous; weights contiguous in the compute dtype (see :func:`_weights`);
    writes h2_out (B, 23, 32) and scores_out (B, 23), both contiguous in x's dtype.
    """
    check_triton_device(x)
    n_rows = x.shape[0] * NUM_BODY_JOINTS
    if n_rows == 0:
        return
    cfg = _launch_config(x, _kernels.GPU_FWD_CONFIG)
    grid = (triton.cdiv(n_rows, cfg["BLOCK_M"]),)
    launch(_kernels._disc_heads_fwd_kernel, grid, x, w1, b1, w2, b2, wh, bh, h2_out,
           scores_out, n_rows, **cfg)


def launch_disc_heads_bwd(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    wh: torch.Tensor,
    grad_h2: torch.Tensor,
    grad_scores: torch.Tensor,
    dx_out: torch.Tensor,
) -> torch.Tensor:
    """Runs the backward kernel; writes dx_out (B, 23, 9) and returns the summed parameter
    gradients as one flat (2135,) tensor in the compute dtype (dW1|db1|dW2|db2|dWh|dbh)."""
    check_triton_device(x)
    n_rows = x.shape[0] * NUM_BODY_JOINTS
    if n_rows == 0:
        return w1.new_zeros(_PARTIAL_SIZE)
    cfg = _launch_config(x, _kernels.GPU_BWD_CONFIG)
    num_tiles = triton.cdiv(n_rows, cfg["BLOCK_M"])
    tiles_per_prog = triton.cdiv(num_tiles, _MAX_BWD_PROGRAMS)
    n_progs = triton.cdiv(num_tiles, tiles_per_prog)
    partial = w1.new_empty(n_progs, _PARTIAL_SIZE)
    launch(
        _kernels._disc_heads_bwd_kernel,
        (n_progs,),
        x,
        w1,
        b1,
        w2,
        b2,
        wh,
        grad_h2,
        grad_scores,
        dx_out,
        partial,
        n_rows,
        tiles_per_prog,
        **cfg,
    )
    return partial.sum(0)


# ----------------------------------------------------------------------------------------
# torch.library ops
# ----------------------------------------------------------------------------------------


def _fwd_alloc(x, w1):
    b = x.shape[0]
    h2 = x.new_empty(b, NUM_BODY_JOINTS, HIDDEN)
    scores = x.new_empty(b, NUM_BODY_JOINTS)
    return h2, scores


def _disc_heads_fwd(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    wh: torch.Tensor,
    bh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    h2, scores = _fwd_alloc(x, w1)
    launch_disc_heads_fwd(x, *_weights(x, w1, b1, w2, b2, wh, bh), h2, scores)
    return h2, scores


def _disc_heads_fwd_fake(x, w1, b1, w2, b2, wh, bh):
    return _fwd_alloc(x, w1)


def _disc_heads_bwd(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    wh: torch.Tensor,
    grad_h2: torch.Tensor,
    grad_scores: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (dx (B, 23, 9), flat parameter gradients (2135,) in the compute dtype, laid out
    dW1 | db1 | dW2 | db2 | dWh | dbh; see :func:`split_param_grads`).

    One flat buffer rather than six outputs: a custom op's outputs may not alias, and six
    separate tensors would cost six more copy launches per backward.
    """
    x = x.contiguous()
    cw1, cb1, cw2, cb2, cwh = _weights(x, w1, b1, w2, b2, wh)
    dx = torch.empty_like(x)
    flat = launch_disc_heads_bwd(
        x,
        cw1,
        cb1,
        cw2,
        cb2,
        cwh,
        grad_h2.to(x.dtype).contiguous(),
        grad_scores.to(x.dtype).contiguous(),
        dx,
    )
    return dx, flat


def split_param_grads(flat: torch.Tensor, params) -> tuple[torch.Tensor, ...]:
    """Flat (2135,) gradients -> views shaped (and typed) like (w1, b1, w2, b2, wh, bh)."""
    parts = torch.split(flat, _PARTIAL_SPLITS)
    return tuple(g.view(p.shape).to(p.dtype) for g, p in zip(parts, params))


def _disc_heads_bwd_fake(x, w1, b1, w2, b2, wh, grad_h2, grad_scores):
    return torch.empty_like(x), w1.new_empty(_PARTIAL_SIZE, dtype=_compute_dtype(x, w1))


if _kernels_interpreted():
    # Interpreted kernels are not JITFunctions: torch.compile cannot trace into them, so the
    # ops are opaque custom ops with shape-only fake kernels (correct, just not inlined).
    disc_heads_fwd_op = torch.library.custom_op(
        "hmr_fast::disc_heads_fwd", _disc_heads_fwd, mutates_args=()
    )
    disc_heads_fwd_op.register_fake(_disc_heads_fwd_fake)
    disc_heads_bwd_op = torch.library.custom_op(
        "hmr_fast::disc_heads_bwd", _disc_heads_bwd, mutates_args=()
    )
    disc_heads_bwd_op.register_fake(_disc_heads_bwd_fake)
else:
    disc_heads_fwd_op = torch.library.triton_op(
        "hmr_fast::disc_heads_fwd", _disc_heads_fwd, mutates_args=()
    )
    disc_heads_bwd_op = torch.library.triton_op(
        "hmr_fast::disc_heads_bwd", _disc_heads_bwd, mutates_args=()
    )


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_h2, grad_scores):
    x, w1, b1, w2, b2, wh, bh = ctx.saved_tensors
    # Autograd passes None for an output that did not reach the loss.
    if grad_h2 is None:
        grad_h2 = x.new_zeros(x.shape[0], NUM_BODY_JOINTS, HIDDEN)
    if grad_scores is None:
        grad_scores = x.new_zeros(x.shape[0], NUM_BODY_JOINTS)
    dx, flat = torch.ops.hmr_fast.disc_heads_bwd(x, w1, b1, w2, b2, wh, grad_h2, grad_scores)
    return (dx,) + split_param_grads(flat, (w1, b1, w2, b2, wh, bh))


torch.library.register_autograd("hmr_fast::disc_heads_fwd", _backward, setup_context=_setup_context)


class DiscHeadsFunction(torch.autograd.Function):
    """The fused heads as an autograd.Function (same kernels as the registered ops).

    forward(x (B, 23, 9), w1, b1, w2, b2, wh, bh) -> (h2 (B, 23, 32), scores (B, 23)).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, wh, bh):
        ctx.save_for_backward(x, w1, b1, w2, b2, wh, bh)
        return _disc_heads_fwd(x, w1, b1, w2, b2, wh, bh)

    @staticmethod
    def backward(ctx, grad_h2, grad_scores):
        return _backward(ctx, grad_h2, grad_scores)


def disc_heads_triton(x, w1, b1, w2, b2, wh, bh) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton heads through the registered op (differentiable, torch.compile-able).

    x (B, 23, 9) -> (h2 (B, 23, 32), scores (B, 23)).
    """
    return torch.ops.hmr_fast.disc_heads_fwd(x, w1, b1, w2, b2, wh, bh)


def disc_heads_torch(x, w1, b1, w2, b2, wh, bh) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched PyTorch heads: x (B, 23, 9) -> (h2 (B, 23, 32), scores (B, 23))."""
    h2 = F.relu(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2))
    scores = torch.einsum("bjk,jk->bj", h2, wh) + bh
    return h2, scores


def disc_heads_loop_reference(x, w1, b1, w2, b2, wh, bh) -> tuple[torch.Tensor, torch.Tensor]:
    """One joint and one head at a time, as the original graph is written (reference only).

    x (B, 23, 9) -> (h2 (B, 23, 32), scores (B, 23)).
    """
    h2s, scores = [], []
    for j in range(x.shape[1]):
        h = F.relu(F.linear(F.relu(F.linear(x[:, j], w1, b1)), w2, b2))
        h2s.append(h)
        scores.append(F.linear(h, wh[j : j + 1], bh[j : j + 1]))
    return torch.stack(h2s, 1), torch.cat(scores, 1)
