"""Fused linear blend skinning on CPU, forward and backward, compiled with numba.

torch composes skinning from whole-mesh passes (`reference._Skin`: four weighted gathers,
three multiply-adds, a transposing copy), and every pass writes a fresh (V, 3, B) buffer
that the kernel must page in. At B = 64 that is about 4.7 ms of a 9.6 ms SMPL forward on
this project's 2-core machine, most of it page faults. These loops read each vertex's few
weights and the posed vertex once and write the (B, V, 3) result directly:

    v_i = Σ_k w_ik · A_{j_ik} · [v_posed_i; 1] + transl

Layouts (B samples, V vertices, J joints, K weights per vertex):

* ``v_posed``: (V, 3, B), the blend-shape GEMM's output, samples innermost so that the
  inner loops vectorise over the batch;
* ``transforms``: (J, 3, 4, B), the relative transforms A_j, samples innermost;
* ``skin_idx`` / ``skin_w``: (V, K).

Vertices are split into a fixed number of chunks whatever the thread count, and the joint
gradient sums the chunks' partials in order: results do not depend on threads. The chunks
run in parallel through numba's OpenMP layer, or serially where that is unsafe (`_launch`).

numba compiles the kernels on first use (a few seconds, then cached on disk);
`available()` is False without numba, and `reference.skin` keeps its torch path then.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

CHUNKS = 64  # vertex chunks: the unit of parallel work and of the joint-gradient partials


@functools.cache
def numba_jit():
    """numba's njit with the options the CPU kernels of `hmr_fast.ops` share (cached on disk,
    as compiling takes seconds; the GIL released; no fastmath), or None without numba."""
    try:
        import numba
    except ImportError:
        return None
    return functools.partial(numba.njit, cache=True, nogil=True, fastmath=False)


@functools.cache
def _kernels():
    """Compile (or load from numba's cache) the kernels; None without numba.

    Returns {"serial": (forward, backward), "parallel": (forward, backward)}: the same
    per-chunk bodies, looped over the chunks in order or with numba's prange.
    """
    jit = numba_jit()
    if jit is None:
        return None
    import numba

    @jit
    def fwd_chunk(v_posed, transforms, skin_idx, skin_w, transl, out, chunk):
        num_verts, _, batch = v_posed.shape
        per_chunk = (num_verts + CHUNKS - 1) // CHUNKS
        acc = np.empty((3, batch), v_posed.dtype)
        for i in range(chunk * per_chunk, min(num_verts, (chunk + 1) * per_chunk)):
            for c in range(3):
                for b in range(batch):
                    acc[c, b] = transl[c, b]
            for k in range(skin_idx.shape[1]):
                w = skin_w[i, k]
                if w == 0:
                    continue
                j = skin_idx[i, k]
                for c in range(3):
                    for b in range(batch):
                        acc[c, b] += w * (transforms[j, c, 0, b] * v_posed[i, 0, b]
                                          + transforms[j, c, 1, b] * v_posed[i, 1, b]
                                          + transforms[j, c, 2, b] * v_posed[i, 2, b]
                                          + transforms[j, c, 3, b])
            for b in range(batch):
                for c in range(3):
                    out[b, i, c] = acc[c, b]

    @jit
    def bwd_chunk(grad, v_posed, transforms, skin_idx, skin_w, grad_v, partial, chunk):
        num_verts, _, batch = v_posed.shape
        per_chunk = (num_verts + CHUNKS - 1) // CHUNKS
        part = partial[chunk]
        part[...] = 0
        for i in range(chunk * per_chunk, min(num_verts, (chunk + 1) * per_chunk)):
            for m in range(3):
                for b in range(batch):
                    grad_v[i, m, b] = 0
            for k in range(skin_idx.shape[1]):
                w = skin_w[i, k]
                if w == 0:
                    continue
                j = skin_idx[i, k]
                for c in range(3):
                    for b in range(batch):
                        wg = w * grad[i, c, b]
                        # dL/dv_m = Σ_c T[c, m] g_c;  dL/dA_j[c, m] += w g_c [v; 1]_m
                        grad_v[i, 0, b] += wg * transforms[j, c, 0, b]
                        grad_v[i, 1, b] += wg * transforms[j, c, 1, b]
                        grad_v[i, 2, b] += wg * transforms[j, c, 2, b]
                        part[j, c, 0, b] += wg * v_posed[i, 0, b]
                        part[j, c, 1, b] += wg * v_posed[i, 1, b]
                        part[j, c, 2, b] += wg * v_posed[i, 2, b]
                        part[j, c, 3, b] += wg

    @jit
    def fwd_serial(v_posed, transforms, skin_idx, skin_w, transl, out):
        for chunk in range(CHUNKS):
            fwd_chunk(v_posed, transforms, skin_idx, skin_w, transl, out, chunk)

    @jit
    def bwd_serial(grad, v_posed, transforms, skin_idx, skin_w, grad_v, partial):
        for chunk in range(CHUNKS):
            bwd_chunk(grad, v_posed, transforms, skin_idx, skin_w, grad_v, partial, chunk)

    @jit(parallel=True)
    def fwd_parallel(v_posed, transforms, skin_idx, skin_w, transl, out):
        for chunk in numba.prange(CHUNKS):
            fwd_chunk(v_posed, transforms, skin_idx, skin_w, transl, out, chunk)

    @jit(parallel=True)
    def bwd_parallel(grad, v_posed, transforms, skin_idx, skin_w, grad_v, partial):
        for chunk in numba.prange(CHUNKS):
            bwd_chunk(grad, v_posed, transforms, skin_idx, skin_w, grad_v, partial, chunk)

    return {"serial": (fwd_serial, bwd_serial), "parallel": (fwd_parallel, bwd_parallel)}


# The process allowed to run the parallel loops (the first to call them), and whether numba's
# threading layer turned out to be one that tolerates concurrent calls (checked once).
_parallel_state = {"pid": None, "layer_checked": False, "layer_ok": True}


def _launch(direction: int, *args) -> None:
    """Run the forward (0) or backward (1) loops: in parallel in the process that first ran
    them, serially elsewhere.

    numba's OpenMP layer shares torch's libgomp (so its threads are torch's, already awake
    after the GEMM: at B = 64 the parallel loops take 4.4 ms of forward against 11.5 ms
    serial, interleaved with smplx on this 2-core machine), but GNU OpenMP is not fork-safe:
    numba terminates a forked child that starts a parallel region. A child (a DataLoader
    worker, say) therefore runs the serial loops. Should numba fall back to its workqueue
    layer, which aborts on concurrent calls, the parallel loops are not used again.
    """
    import numba

    kernels, state = _kernels(), _parallel_state
    if state["pid"] is None:
        state["pid"] = os.getpid()
    threads = torch.get_num_threads()
    if not state["layer_ok"] or state["pid"] != os.getpid() or threads == 1:
        kernels["serial"][direction](*args)
        return
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    kernels["parallel"][direction](*args)
    if not state["layer_checked"]:
        state["layer_checked"] = True
        state["layer_ok"] = numba.threading_layer() in ("omp", "tbb")


def available() -> bool:
    """Whether the numba kernels can run (numba importable)."""
    return _kernels() is not None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether compiled CPU loops may run on these tensors: all on the CPU in one dtype,
    float32 or float64, in eager code (traced code keeps torch ops), with numba present."""
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
            and not torch.compiler.is_compiling() and available())


def as_array(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (contiguous, detached: the kernels only read it)."""
    return t.detach().contiguous().numpy()


def skin_forward(v_planar: torch.Tensor, transforms: torch.Tensor, skin_idx: torch.Tensor,
                 skin_w: torch.Tensor, transl: torch.Tensor | None) -> torch.Tensor:
    """Skinned vertices.

    Args:
        v_planar: (V, 3, B) contiguous posed vertices.
        transforms: (J, 3, 4, B) contiguous.
        skin_idx, skin_w: (V, K).
        transl: (B, 3) or None.
    Returns:
        (B, V, 3) contiguous.
    """
    num_verts, _, batch = v_planar.shape
    out = v_planar.new_empty(batch, num_verts, 3)
    if transl is None:
        transl_t = v_planar.new_zeros(3, batch)
    else:
        transl_t = transl.t()
    _launch(0, as_array(v_planar), as_array(transforms), as_array(skin_idx),
            as_array(skin_w), as_array(transl_t), out.numpy())
    return out


def skin_backward(grad_planar: torch.Tensor, v_planar: torch.Tensor, transforms: torch.Tensor,
                  skin_idx: torch.Tensor, skin_w: torch.Tensor):
    """Gradients of `skin_forward` for the planar (V, 3, B) output gradient.

    Returns:
        grad_v: (V, 3, B); grad_transforms: (J, 3, 4, B).
    """
    grad_v = torch.empty_like(v_planar)
    partial = transforms.new_empty(CHUNKS, *transforms.shape)
    _launch(1, as_array(grad_planar), as_array(v_planar), as_array(transforms),
            as_array(skin_idx), as_array(skin_w), grad_v.numpy(), partial.numpy())
    return grad_v, partial.sum(0)
