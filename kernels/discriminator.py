"""Triton kernels for HMR's factorized pose discriminator: the shared per-joint embedding
(9 → 32 → 32, ReLU after each) and the 23 per-joint linear heads (32 → 1), fused.

Rows are (sample, joint) pairs in row-major order, r = b · 23 + j, so one tile of BLOCK_M rows
holds several samples and a mix of joints. The shared embedding is then two small GEMMs per
tile; the heads are a gather of each row's head vector (forward) and a one-hot GEMM that
groups the rows by joint (backward).

Host launchers (block sizes, grids, the final reduction) live in
``hmr_fast/ops/discriminator_ops.py``. Weights are passed in the compute dtype (fp32, or fp64
for fp64 inputs); activations may be fp16/bf16/fp32/fp64 and are upcast on load.
"""

import triton
import triton.language as tl

NUM_HEADS = tl.constexpr(23)  # non-root SMPL joints
D_IN = tl.constexpr(9)  # a flattened 3x3 rotation matrix
D_IN_PAD = tl.constexpr(16)  # tl.dot needs K >= 16
HIDDEN = tl.constexpr(32)
HEADS_PAD = tl.constexpr(32)

# Layout of one program's row in the backward's partial-gradient buffer (compute dtype):
# dW1 (32, 9) | db1 (32) | dW2 (32, 32) | db2 (32) | dWh (23, 32) | dbh (23).
OFF_DW1 = tl.constexpr(0)
OFF_DB1 = tl.constexpr(288)
OFF_DW2 = tl.constexpr(320)
OFF_DB2 = tl.constexpr(1344)
OFF_DWH = tl.constexpr(1376)
OFF_DBH = tl.constexpr(2112)
PARTIAL_SIZE = tl.constexpr(2135)


@triton.jit
def _embed(x_ptr, w1t, b1, w2t, b2, rows, rmask, BLOCK_M: tl.constexpr):
    """Loads a tile of rotation rows and runs the shared embedding.

    Returns x (BLOCK_M, 16) zero-padded, z1 (BLOCK_M, 32), h1, h2 (BLOCK_M, 32).
    """
    k = tl.arange(0, D_IN_PAD)
    x = tl.load(
        x_ptr + rows[:, None] * D_IN + k[None, :],
        mask=rmask[:, None] & (k[None, :] < D_IN),
        other=0.0,
    ).to(w1t.dtype)
    z1 = tl.dot(x, w1t, input_precision="ieee") + b1[None, :]
    h1 = tl.maximum(z1, 0.0)
    h2 = tl.maximum(tl.dot(h1, w2t, input_precision="ieee") + b2[None, :], 0.0)
    return x, z1, h1, h2


@triton.jit
def _disc_heads_fwd_kernel(
    x_ptr,  # (N, 9) rotation rows, N = B * 23
    w1_ptr,  # (32, 9)
    b1_ptr,  # (32,)
    w2_ptr,  # (32, 32)
    b2_ptr,  # (32,)
    wh_ptr,  # (23, 32)
    bh_ptr,  # (23,)
    h2_ptr,  # out (N, 32): embeddings, the full-pose branch's input
    score_ptr,  # out (N,): per-joint head scores
    n_rows,
    BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n_rows
    k = tl.arange(0, D_IN_PAD)
    h = tl.arange(0, HIDDEN)
    # W1^T, W2^T as (in, out) tiles; nn.Linear stores (out, in).
    w1t = tl.load(w1_ptr + h[None, :] * D_IN + k[:, None], mask=k[:, None] < D_IN, other=0.0)
    w2t = tl.load(w2_ptr + h[None, :] * HIDDEN + h[:, None])
    b1 = tl.load(b1_ptr + h)
    b2 = tl.load(b2_ptr + h)

    _, _, _, h2 = _embed(x_ptr, w1t, b1, w2t, b2, rows, rmask, BLOCK_M)
    tl.store(
        h2_ptr + rows[:, None] * HIDDEN + h[None, :],
        h2.to(h2_ptr.dtype.element_ty),
        mask=rmask[:, None],
    )
    # Each row's head: a gather from the (23, 32) head matrix, which stays in L1.
    joint = rows % NUM_HEADS
    wh = tl.load(wh_ptr + joint[:, None] * HIDDEN + h[None, :])
    bh = tl.load(bh_ptr + joint)
    score = tl.sum(h2 * wh, axis=1) + bh
    tl.store(score_ptr + rows, score.to(score_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _disc_heads_bwd_kernel(
    x_ptr,  # (N, 9)
    w1_ptr,  # (32, 9)
    b1_ptr,  # (32,)
    w2_ptr,  # (32, 32)
    b2_ptr,  # (32,)
    wh_ptr,  # (23, 32)
    gh2_ptr,  # (N, 32) dL/dh2
    gs_ptr,  # (N,) dL/dscore
    dx_ptr,  # out (N, 9)
    partial_ptr,  # out (num_programs, PARTIAL_SIZE): this program's parameter gradients
    n_rows,
    tiles_per_prog,
    BLOCK_M: tl.constexpr,
):
    """Recomputes the embedding (cheaper than storing z1/h1), backpropagates, and sums the
    parameter gradients of ``tiles_per_prog`` consecutive tiles in registers. Each program
    writes its own row of ``partial_ptr``; the host sums the rows (deterministic, no atomics).
    """
    pid = tl.program_id(0)
    k = tl.arange(0, D_IN_PAD)
    h = tl.arange(0, HIDDEN)
    jj = tl.arange(0, HEADS_PAD)
    w1 = tl.load(w1_ptr + h[:, None] * D_IN + k[None, :], mask=k[None, :] < D_IN, other=0.0)
    w2 = tl.load(w2_ptr + h[:, None] * HIDDEN + h[None, :])
    w1t = tl.trans(w1)
    w2t = tl.trans(w2)
    b1 = tl.load(b1_ptr + h)
    b2 = tl.load(b2_ptr + h)
    cdt = w1.dtype

    dw1 = tl.zeros((HIDDEN, D_IN_PAD), dtype=cdt)
    dw2 = tl.zeros((HIDDEN, HIDDEN), dtype=cdt)
    dwh = tl.zeros((HEADS_PAD, HIDDEN), dtype=cdt)
    db1 = tl.zeros((HIDDEN,), dtype=cdt)
    db2 = tl.zeros((HIDDEN,), dtype=cdt)
    dbh = tl.zeros((HEADS_PAD,), dtype=cdt)

    for t in range(tiles_per_prog):
        rows = (pid * tiles_per_prog + t) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < n_rows
        x, z1, h1, h2 = _embed(x_ptr, w1t, b1, w2t, b2, rows, rmask, BLOCK_M)
        # Rows past the end load zero upstream gradients, so they contribute nothing below.
        gh2 = tl.load(
            gh2_ptr + rows[:, None] * HIDDEN + h[None, :], mask=rmask[:, None], other=0.0
        ).to(cdt)
        gs = tl.load(gs_ptr + rows, mask=rmask, other=0.0).to(cdt)
        joint = rows % NUM_HEADS
        wh = tl.load(wh_ptr + joint[:, None] * HIDDEN + h[None, :])

        dz2 = tl.where(h2 > 0, gh2 + gs[:, None] * wh, 0.0)
        dw2 += tl.dot(tl.trans(dz2), h1, input_precision="ieee")
        db2 += tl.sum(dz2, axis=0)
        dz1 = tl.where(z1 > 0, tl.dot(dz2, w2, input_precision="ieee"), 0.0)
        dw1 += tl.dot(tl.trans(dz1), x, input_precision="ieee")
        db1 += tl.sum(dz1, axis=0)
        dx = tl.dot(dz1, w1, input_precision="ieee")
        tl.store(
            dx_ptr + rows[:, None] * D_IN + k[None, :],
            dx.to(dx_ptr.dtype.element_ty),
            mask=rmask[:, None] & (k[None, :] < D_IN),
        )
        # Group rows by joint with a one-hot GEMM: dWh[j] = sum_{rows of joint j} gs * h2.
        onehot = (joint[:, None] == jj[None, :]).to(cdt)
        dwh += tl.dot(tl.trans(onehot), gs[:, None] * h2, input_precision="ieee")
        dbh += tl.sum(onehot * gs[:, None], axis=0)

    base = partial_ptr + pid * PARTIAL_SIZE
    tl.store(base + OFF_DW1 + h[:, None] * D_IN + k[None, :], dw1, mask=k[None, :] < D_IN)
    tl.store(base + OFF_DB1 + h, db1)
    tl.store(base + OFF_DW2 + h[:, None] * HIDDEN + h[None, :], dw2)
    tl.store(base + OFF_DB2 + h, db2)
    tl.store(base + OFF_DWH + jj[:, None] * HIDDEN + h[None, :], dwh, mask=jj[:, None] < NUM_HEADS)
    tl.store(base + OFF_DBH + jj, dbh, mask=jj < NUM_HEADS)


# Launch configurations the host launchers use on a GPU (hmr_fast/ops/discriminator_ops.py
# reads them from here, so this list and AOT_VARIANTS cannot drift apart). The backward's
# FMA dots (ieee fp32) keep whole K-extents in registers: 16-row tiles with 8 warps is the
# largest tile that compiles without spills for every dtype (ptxas -v, sm_80 and sm_90a).
GPU_FWD_CONFIG = dict(BLOCK_M=64, num_warps=4)
GPU_BWD_CONFIG = dict(BLOCK_M=16, num_warps=8)
_ACT_DTYPES = (("fp32", "fp32"), ("bf16", "fp32"), ("fp16", "fp32"), ("fp64", "fp64"))


def _fwd_signature(act: str, w: str) -> dict:
    return {
        "x_ptr": f"*{act}",
        "w1_ptr": f"*{w}",
        "b1_ptr": f"*{w}",
        "w2_ptr": f"*{w}",
        "b2_ptr": f"*{w}",
        "wh_ptr": f"*{w}",
        "bh_ptr": f"*{w}",
        "h2_ptr": f"*{act}",
        "score_ptr": f"*{act}",
        "n_rows": "i32",
        "BLOCK_M": "constexpr",
    }


def _bwd_signature(act: str, w: str) -> dict:
    return {
        "x_ptr": f"*{act}",
        "w1_ptr": f"*{w}",
        "b1_ptr": f"*{w}",
        "w2_ptr": f"*{w}",
        "b2_ptr": f"*{w}",
        "wh_ptr": f"*{w}",
        "gh2_ptr": f"*{act}",
        "gs_ptr": f"*{act}",
        "dx_ptr": f"*{act}",
        "partial_ptr": f"*{w}",
        "n_rows": "i32",
        "tiles_per_prog": "i32",
        "BLOCK_M": "constexpr",
    }


AOT_VARIANTS = [
    variant
    for act, w in _ACT_DTYPES
    for variant in (
        dict(
            name=f"disc_heads_fwd_{act}",
            fn=_disc_heads_fwd_kernel,
            signature=_fwd_signature(act, w),
            constexprs={"BLOCK_M": GPU_FWD_CONFIG["BLOCK_M"]},
            num_warps=GPU_FWD_CONFIG["num_warps"],
        ),
        dict(
            name=f"disc_heads_bwd_{act}",
            fn=_disc_heads_bwd_kernel,
            signature=_bwd_signature(act, w),
            constexprs={"BLOCK_M": GPU_BWD_CONFIG["BLOCK_M"]},
            num_warps=GPU_BWD_CONFIG["num_warps"],
        ),
    )
]
