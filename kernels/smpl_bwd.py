"""Triton kernels for the SMPL backward (gradients w.r.t. betas, pose, translation, camera).

Four launches, whatever the batch, in this order:

1. ``_smpl_readout_bwd_kernel`` (per block of samples): the projection and readout backward:
   camera gradient, gradient of the 24 posed joints, and the gradient of the few readout
   vertices (E vertex joints + Q keypoint rows) as one (B, NU, 3) buffer (no scatter: the
   readout vertices are distinct).
2. ``_smpl_vertex_bwd_rel_kernel`` (grid: vertex splits x sample tiles): recomputes v_posed
   with the forward's blend GEMM, then the gradient of A (B, 24, 12) reduced over the
   vertices as one ``tl.dot`` of all (sample, row, column) products with the tile's dense
   (vertices x joints) weights, and the translation gradient.
3. ``_smpl_vertex_bwd_coef_kernel`` (same grid, plus an axis of BLOCK_KC coefficient blocks):
   the skinning backward (gradient of v_posed, which needs no v_posed) and the gradient of
   [beta, pose feature] as a ``tl.dot`` with blend_dirs^T, accumulated in registers over the
   program's vertex tiles and stored once into the program's own partial row.
   Splitting 2 and 3 keeps each kernel's registers low enough for tensor-core tiles without
   spills. Each program owns one split's rows of the (NSPLIT, B, ...) partial buffers: no
   atomics.
4. ``_smpl_skeleton_bwd_kernel`` (per block of samples, vectorised over joints): sums the
   partials of 2 and 3 (the "small reduction", BLOCK_S partials per round trip), then goes
   back through the skinning transforms, forward kinematics, rest joints and Rodrigues.

Forward kinematics backward without a level loop. With S_j = dL/dG_R,j · G_R,j^T,
S_j = sum over the subtree of j of (D_d G_R,d^T + T_d G_t,d^T) - (sum of T_d) G_t,j^T,
where D_d, T_d are the direct gradients of joint d's world rotation and translation. So one
product with the constant "descendant" matrix replaces the 9-level reverse sweep; then
dL/dG_R,j = S_j G_R,j^-T and the local gradients follow from the
parent's world rotation.
"""

import triton
import triton.language as tl

from .smpl_fwd import (
    NUM_JOINT_SLOTS,
    _load12,
    _mm,
    _mma,
    _pose_addr,
    _rest_joints,
    _rodrigues_coeffs,
    _variant,
)

GPU_READOUT_BWD = dict(BLOCK_B=4, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_R=32, BLOCK_U=32, num_warps=4)
GPU_VERTEX_BWD_REL_F64 = dict(BLOCK_B=2, BLOCK_V=8, BLOCK_K=8, BLOCK_J=NUM_JOINT_SLOTS, num_warps=4)
# fp64 has no tl.dot: its (BLOCK_B, BLOCK_V, BLOCK_KC) broadcast product stays at 4096
# elements (146-185 registers, spill-free under 3.6 and 3.8).
GPU_VERTEX_BWD_COEF_F64 = dict(BLOCK_B=4, BLOCK_V=4, BLOCK_KC=256, num_warps=4)
# BLOCK_S: vertex-split partials loaded per round trip by the skeleton backward. 4: 185-190
# registers (fp32, sm_90a, triton 3.8); 8 needs 254.
GPU_SKELETON_BWD = dict(BLOCK_B=16, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_L=8, BLOCK_S=4, num_warps=8)
GPU_SKELETON_BWD_F64 = dict(BLOCK_B=2, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_L=8, BLOCK_S=4,
                            num_warps=4)

# fp32 block sizes by (precision, GPU family), as smpl_fwd.GPU_VERTEX_FWD; all spill-free.
# The A-gradient kernel's dot has 16 BLOCK_B rows (wgmma on sm_90a whatever BLOCK_B); the
# coefficient-gradient dot has BLOCK_B rows (64 for wgmma).
_J = dict(BLOCK_J=NUM_JOINT_SLOTS)
GPU_VERTEX_BWD_REL = {
    # BLOCK_V and BLOCK_K >= 16: triton 3.6 (torch 2.11's, the GPU machines') refuses a dot
    # with K < 16; BLOCK_B=8 keeps sm_90a spill-free under 3.6 and 3.8 (16 spills 84 B on 3.8).
    ("tf32x3", 90): dict(BLOCK_B=8, BLOCK_V=16, BLOCK_K=16, **_J, num_warps=8),
    ("ieee", 90): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_K=16, **_J, num_warps=8),
    ("tf32", 90): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_K=16, **_J, num_warps=8),
    ("tf32x3", 80): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_K=16, **_J, num_warps=8),
    ("ieee", 80): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_K=16, **_J, num_warps=8),
    # BLOCK_K=32: with 16, triton 3.6 spills 12-32 B in the keypoint-mode variant on sm_80.
    ("tf32", 80): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_K=32, **_J, num_warps=8),
}
# BLOCK_KC: the width of the register accumulator, a grid axis of KC / BLOCK_KC blocks.
# 256 (one block for SMPL's 217) spills 0.4-1.5 KB on sm_90a (triton 3.8); 128 (two
# blocks, the skinning backward computed twice) is spill-free.
GPU_VERTEX_BWD_COEF = {
    ("tf32x3", 90): dict(BLOCK_B=64, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
    ("ieee", 90): dict(BLOCK_B=32, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
    ("tf32", 90): dict(BLOCK_B=64, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
    # sm_80: BLOCK_V=32 or 4 warps spill 0.3-0.5 KB with BLOCK_KC=128 (triton 3.8).
    ("tf32x3", 80): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
    ("ieee", 80): dict(BLOCK_B=32, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
    ("tf32", 80): dict(BLOCK_B=16, BLOCK_V=16, BLOCK_KC=128, num_warps=8),
}


@triton.jit
def _rodrigues_bwd(x, y, z, g00, g01, g02, g10, g11, g12, g20, g21, g22):
    """Axis-angle gradient of R = I + s(q) K + c(q) K^2, q = |theta + 1e-8|^2."""
    sx, sy, sz, q, small, safe, a, s, c = _rodrigues_coeffs(x, y, z)
    ds = tl.where(small, -1.0 / 6.0 + q / 60.0, (tl.cos(a) - s) / (2.0 * safe))
    dc = tl.where(small, -1.0 / 24.0 + q / 360.0, (0.5 * s - c) / safe)
    tr = g00 + g11 + g22
    gk = x * (g21 - g12) + y * (g02 - g20) + z * (g10 - g01)
    tgt = (
        x * (g00 * x + g01 * y + g02 * z)
        + y * (g10 * x + g11 * y + g12 * z)
        + z * (g20 * x + g21 * y + g22 * z)
    )
    gk2 = tgt - (x * x + y * y + z * z) * tr
    coef = 2.0 * (ds * gk + dc * gk2)
    o01 = g01 + g10
    o02 = g02 + g20
    o12 = g12 + g21
    dx = coef * sx + s * (g21 - g12) + c * (2.0 * g00 * x + o01 * y + o02 * z - 2.0 * x * tr)
    dy = coef * sy + s * (g02 - g20) + c * (o01 * x + 2.0 * g11 * y + o12 * z - 2.0 * y * tr)
    dz = coef * sz + s * (g10 - g01) + c * (o02 * x + o12 * y + 2.0 * g22 * z - 2.0 * z * tr)
    return dx, dy, dz


@triton.jit
def _readout_rows(
    j_ptr, j_sb, j_sr, j_sc, has_j, k_ptr, k_sb, k_sr, k_sc, has_k, ob2, mb2, r2, NJ, E, Q, comp
):
    """Component `comp` of readout rows r2: joint rows (r < E) live at row NJ + r of the
    (B, NJ + E, C) joints tensor, keypoint rows at r - E of the (B, Q, C) one. Each tensor
    comes with its (sample, row, component) strides (0 for an expanded gradient) and a flag,
    0 for a gradient autograd did not give (read as zeros, nothing allocated or filled)."""
    mj = mb2 & (r2 < E) & (has_j != 0)
    mk = mb2 & (r2 >= E) & (r2 < E + Q) & (has_k != 0)
    a = tl.load(j_ptr + ob2 * j_sb + (NJ + r2) * j_sr + comp * j_sc, mask=mj, other=0.0)
    b = tl.load(k_ptr + ob2 * k_sb + (r2 - E) * k_sr + comp * k_sc, mask=mk, other=0.0)
    return a + b


@triton.jit
def _smpl_readout_bwd_kernel(
    gj_ptr,  # (B, J + E, 3) grad of joints, strides gj_s*, read only when HAS_GJ != 0
    gk_ptr,  # (B, Q, 3) grad of keypoints (likewise gk_s*, HAS_GK)
    gpj_ptr,  # (B, J + E, 2) grad of projected joints (gpj_s*, HAS_GPJ)
    gpk_ptr,  # (B, Q, 2) grad of projected keypoints (gpk_s*, HAS_GPK)
    joints_ptr,  # (B, J + E, 3) forward joints, contiguous
    kps_ptr,  # (B, Q, 3) forward keypoints, contiguous
    camera_ptr,  # (B, 3), read only when HAS_CAM != 0
    rout_ptr,  # (E + Q, NU) readout matrix
    gfk_ptr,  # out (B, J, 3) grad of the 24 posed joints
    gu_ptr,  # out (B, NU, 3) grad of the readout vertices
    gcam_ptr,  # out (B, 3)
    gtr_ptr,  # out (B, 3) transl grad through the 24 posed joints
    B,
    NJ,
    E,
    Q,
    NU,
    gj_sb,
    gj_sr,
    gj_sc,
    HAS_GJ,
    gk_sb,
    gk_sr,
    gk_sc,
    HAS_GK,
    gpj_sb,
    gpj_sr,
    gpj_sc,
    HAS_GPJ,
    gpk_sb,
    gpk_sr,
    gpk_sc,
    HAS_GPK,
    HAS_CAM,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_U: tl.constexpr,
):
    pid = tl.program_id(0)
    ob = pid.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = ob < B
    ob2 = ob[:, None]
    mb2 = mb[:, None]
    NP = NJ + E
    NR = E + Q
    mc = mb & (HAS_CAM != 0)
    s1 = tl.load(camera_ptr + ob * 3 + 0, mask=mc, other=0.0)
    s = s1[:, None]
    cx = tl.load(camera_ptr + ob * 3 + 1, mask=mc, other=0.0)[:, None]
    cy = tl.load(camera_ptr + ob * 3 + 2, mask=mc, other=0.0)[:, None]

    oj = tl.arange(0, BLOCK_J)[None, :]
    m2 = mb2 & (oj < NJ)
    mgj = m2 & (HAS_GJ != 0)
    mgp = m2 & (HAS_GPJ != 0)
    px = tl.load(gpj_ptr + ob2 * gpj_sb + oj * gpj_sr, mask=mgp, other=0.0)
    py = tl.load(gpj_ptr + ob2 * gpj_sb + oj * gpj_sr + gpj_sc, mask=mgp, other=0.0)
    x = tl.load(joints_ptr + ob2 * (NP * 3) + oj * 3 + 0, mask=m2, other=0.0)
    y = tl.load(joints_ptr + ob2 * (NP * 3) + oj * 3 + 1, mask=m2, other=0.0)
    gjb = gj_ptr + ob2 * gj_sb + oj * gj_sr
    gx = tl.load(gjb, mask=mgj, other=0.0) + s * px
    gy = tl.load(gjb + gj_sc, mask=mgj, other=0.0) + s * py
    gz = tl.load(gjb + 2 * gj_sc, mask=mgj, other=0.0)
    fb = gfk_ptr + ob2 * (NJ * 3) + oj * 3
    tl.store(fb + 0, gx, mask=m2)
    tl.store(fb + 1, gy, mask=m2)
    tl.store(fb + 2, gz, mask=m2)
    tl.store(gtr_ptr + ob * 3 + 0, tl.sum(gx, axis=1), mask=mb)
    tl.store(gtr_ptr + ob * 3 + 1, tl.sum(gy, axis=1), mask=mb)
    tl.store(gtr_ptr + ob * 3 + 2, tl.sum(gz, axis=1), mask=mb)

    # Camera: x_hat = s (X_xy + t).
    gs = tl.sum(px * (x + cx) + py * (y + cy), axis=1)
    gcx = tl.sum(px, axis=1)
    gcy = tl.sum(py, axis=1)
    for r0 in range(0, NR, BLOCK_R):
        r2 = (r0 + tl.arange(0, BLOCK_R))[None, :]
        px = _readout_rows(gpj_ptr, gpj_sb, gpj_sr, gpj_sc, HAS_GPJ, gpk_ptr, gpk_sb, gpk_sr,
                           gpk_sc, HAS_GPK, ob2, mb2, r2, NJ, E, Q, 0)
        py = _readout_rows(gpj_ptr, gpj_sb, gpj_sr, gpj_sc, HAS_GPJ, gpk_ptr, gpk_sb, gpk_sr,
                           gpk_sc, HAS_GPK, ob2, mb2, r2, NJ, E, Q, 1)
        x = _readout_rows(joints_ptr, NP * 3, 3, 1, 1, kps_ptr, Q * 3, 3, 1, 1, ob2, mb2, r2,
                          NJ, E, Q, 0)
        y = _readout_rows(joints_ptr, NP * 3, 3, 1, 1, kps_ptr, Q * 3, 3, 1, 1, ob2, mb2, r2,
                          NJ, E, Q, 1)
        gs += tl.sum(px * (x + cx) + py * (y + cy), axis=1)
        gcx += tl.sum(px, axis=1)
        gcy += tl.sum(py, axis=1)
    tl.store(gcam_ptr + ob * 3 + 0, gs, mask=mb)
    tl.store(gcam_ptr + ob * 3 + 1, s1 * gcx, mask=mb)
    tl.store(gcam_ptr + ob * 3 + 2, s1 * gcy, mask=mb)

    # Readout vertices: g_u = sum_r Rout[r, u] g_r.
    for u0 in range(0, NU, BLOCK_U):
        ou = u0 + tl.arange(0, BLOCK_U)
        mu = ou < NU
        ax = tl.zeros((BLOCK_B, BLOCK_U), dtype=gs.dtype)
        ay = tl.zeros((BLOCK_B, BLOCK_U), dtype=gs.dtype)
        az = tl.zeros((BLOCK_B, BLOCK_U), dtype=gs.dtype)
        for r0 in range(0, NR, BLOCK_R):
            orr = r0 + tl.arange(0, BLOCK_R)
            r2 = orr[None, :]
            rx = _readout_rows(gj_ptr, gj_sb, gj_sr, gj_sc, HAS_GJ, gk_ptr, gk_sb, gk_sr, gk_sc,
                               HAS_GK, ob2, mb2, r2, NJ, E, Q, 0) + s * _readout_rows(
                gpj_ptr, gpj_sb, gpj_sr, gpj_sc, HAS_GPJ, gpk_ptr, gpk_sb, gpk_sr, gpk_sc,
                HAS_GPK, ob2, mb2, r2, NJ, E, Q, 0)
            ry = _readout_rows(gj_ptr, gj_sb, gj_sr, gj_sc, HAS_GJ, gk_ptr, gk_sb, gk_sr, gk_sc,
                               HAS_GK, ob2, mb2, r2, NJ, E, Q, 1) + s * _readout_rows(
                gpj_ptr, gpj_sb, gpj_sr, gpj_sc, HAS_GPJ, gpk_ptr, gpk_sb, gpk_sr, gpk_sc,
                HAS_GPK, ob2, mb2, r2, NJ, E, Q, 1)
            rz = _readout_rows(gj_ptr, gj_sb, gj_sr, gj_sc, HAS_GJ, gk_ptr, gk_sb, gk_sr, gk_sc,
                               HAS_GK, ob2, mb2, r2, NJ, E, Q, 2)
            rm = tl.load(
                rout_ptr + orr[:, None] * NU + ou[None, :],
                mask=(orr < NR)[:, None] & mu[None, :],
                other=0.0,
            )[None, :, :]
            ax += tl.sum(rx[:, :, None] * rm, axis=1)
            ay += tl.sum(ry[:, :, None] * rm, axis=1)
            az += tl.sum(rz[:, :, None] * rm, axis=1)
        ub = gu_ptr + ob2 * (NU * 3) + ou[None, :] * 3
        mbu = mb2 & mu[None, :]
        tl.store(ub + 0, ax, mask=mbu)
        tl.store(ub + 1, ay, mask=mbu)
        tl.store(ub + 2, az, mask=mbu)


@triton.jit
def _rotation_col(base, mask, gx, gy, gz):
    """Column of a gathered 3x4 transform's rotation dotted with g (three loads)."""
    return (
        tl.load(base + 0, mask=mask, other=0.0) * gx
        + tl.load(base + 4, mask=mask, other=0.0) * gy
        + tl.load(base + 8, mask=mask, other=0.0) * gz
    )


@triton.jit
def _vertex_grad(gv_ptr, gv_sb, gv_sv, gv_sc, gu_ptr, v2u_ptr, ob2, mb2, ov, mv, NU,
                 HAS_GV: tl.constexpr):
    """Gradient of a (samples x vertices) tile of skinned vertices: the readout part (only
    the few vertices with a readout slot) plus, when HAS_GV, the vertices' own gradient."""
    m2 = mb2 & mv[None, :]
    u = tl.load(v2u_ptr + ov, mask=mv, other=-1)
    mu = m2 & (u >= 0)[None, :]
    gub = gu_ptr + ob2 * (NU * 3) + u[None, :] * 3
    gx = tl.load(gub + 0, mask=mu, other=0.0)
    gy = tl.load(gub + 1, mask=mu, other=0.0)
    gz = tl.load(gub + 2, mask=mu, other=0.0)
    if HAS_GV:
        gvb = gv_ptr + ob2 * gv_sb + ov[None, :] * gv_sv
        gx += tl.load(gvb, mask=m2, other=0.0)
        gy += tl.load(gvb + gv_sc, mask=m2, other=0.0)
        gz += tl.load(gvb + 2 * gv_sc, mask=m2, other=0.0)
    return gx, gy, gz


@triton.jit
def _blend_tile4(
    coeffs_ptr,
    bdirs_ptr,
    vt_ptr,
    ob,
    mb,
    ov0,
    V,
    VP,
    KC,
    USE_DOT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Homogeneous v_posed of vertices ov0 + [0, BLOCK_V) as one (samples, 4, vertices) tile
    [x; y; z; 1]: a single dot whose columns run over (component, vertex). The directions are
    planar (KC, 3, VP), so each component's BLOCK_V columns are one aligned contiguous run."""
    n = tl.arange(0, 4 * BLOCK_V)
    m = n // BLOCK_V
    ov = ov0 + n % BLOCK_V
    mn = (m < 3) & (ov < V)
    # Directions masked to the zero padding (VP, a multiple of 16), vectorisable as in
    # smpl_fwd._blend_tile; their columns past V meet zero vertex gradients.
    mp = (m < 3) & (ov < VP)
    cols = m[None, :] * VP + ov[None, :]
    acc = tl.zeros((BLOCK_B, 4 * BLOCK_V), dtype=coeffs_ptr.dtype.element_ty)
    for k0 in range(0, KC, BLOCK_K):
        ok = k0 + tl.arange(0, BLOCK_K)
        mk = ok < KC
        coef = tl.load(
            coeffs_ptr + ob[:, None] * KC + ok[None, :], mask=mb[:, None] & mk[None, :], other=0.0
        )
        bd = tl.load(
            bdirs_ptr + ok[:, None] * (3 * VP) + cols, mask=mk[:, None] & mp[None, :], other=0.0
        )
        acc = _mma(coef, bd, acc, USE_DOT, PREC)
    vt = tl.load(vt_ptr + 3 * ov + m, mask=mn, other=0.0)
    acc += tl.where(m == 3, 1.0, vt)[None, :]
    return tl.reshape(acc, (BLOCK_B, 4, BLOCK_V))


@triton.jit
def _vertex_grad4(gv_ptr, gv_sb, gv_sv, gv_sc, gu_ptr, v2u_ptr, ob, mb, ov, mv, NU,
                  HAS_GV: tl.constexpr):
    """Vertex gradient of a tile as (samples, 4, vertices), component 3 zero (see
    _vertex_grad)."""
    c = tl.arange(0, 4)[None, :, None]
    ob3 = ob[:, None, None]
    m3 = mb[:, None, None] & mv[None, None, :] & (c < 3)
    u = tl.load(v2u_ptr + ov, mask=mv, other=-1)[None, None, :]
    g = tl.load(gu_ptr + ob3 * (NU * 3) + u * 3 + c, mask=m3 & (u >= 0), other=0.0)
    if HAS_GV:
        g += tl.load(
            gv_ptr + ob3 * gv_sb + ov[None, None, :] * gv_sv + c * gv_sc, mask=m3, other=0.0
        )
    return g


@triton.jit
def _smpl_vertex_bwd_rel_kernel(
    coeffs_ptr,  # (B, KC) [beta, pose feature] from the forward
    bdirs_ptr,  # (KC, 3, VP) planar blend directions
    vt_ptr,  # (V, 3)
    skin_idx_ptr,  # (V, K) int64
    skin_w_ptr,  # (V, K)
    gv_ptr,  # (B, V, 3) grad of the vertices, strides gv_s* (read only when HAS_GV)
    gu_ptr,  # (B, NU, 3) grad of the readout vertices
    v2u_ptr,  # (V,) int32 readout slot of each vertex, -1 if none
    grel_ptr,  # out (NSPLIT, B, J, 12)
    gtr_ptr,  # out (NSPLIT, B, 3)
    B,
    V,
    VP,  # smpl_fwd.planar_stride(V)
    KC,
    K,
    NJ,
    NU,
    NSPLIT,
    gv_sb,
    gv_sv,
    gv_sc,
    HAS_GV: tl.constexpr,
    USE_DOT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """Gradient of the skinning transforms A and of the translation through the vertices.

    dL/dA_j[c, m] = sum_i w_ij g_ic [v_posed_i; 1]_m, v_posed recomputed with the forward's
    blend GEMM. All 16 (c, m) products of all samples form the rows of one
    (16 BLOCK_B, vertices) @ (vertices, joints) dot with the tile's dense skinning weights
    (rows c = 3 are zero padding). Program (split s, sample tile) owns row s of the partial
    buffers.
    """
    # Sample tiles on grid axis 0 (up to 2**31 - 1 programs; axes 1 and 2 stop at 65535).
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    ob = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = ob < B
    oj = tl.arange(0, BLOCK_J)
    dtype = coeffs_ptr.dtype.element_ty
    ga = tl.zeros((16 * BLOCK_B, BLOCK_J), dtype=dtype)
    gt = tl.zeros((BLOCK_B, 4), dtype=dtype)
    for t in range(pid_s, tl.cdiv(V, BLOCK_V), NSPLIT):
        ov0 = t * BLOCK_V
        ov = ov0 + tl.arange(0, BLOCK_V)
        mv = ov < V
        g4 = _vertex_grad4(gv_ptr, gv_sb, gv_sv, gv_sc, gu_ptr, v2u_ptr, ob, mb, ov, mv, NU,
                           HAS_GV)
        gt += tl.sum(g4, axis=2)
        v4 = _blend_tile4(
            coeffs_ptr,
            bdirs_ptr,
            vt_ptr,
            ob,
            mb,
            ov0,
            V,
            VP,
            KC,
            USE_DOT,
            PREC,
            BLOCK_B,
            BLOCK_V,
            BLOCK_K,
        )
        x = tl.reshape(g4[:, :, None, :] * v4[:, None, :, :], (16 * BLOCK_B, BLOCK_V))
        w_dense = tl.zeros((BLOCK_V, BLOCK_J), dtype=dtype)
        for k in range(K):
            idx = tl.load(skin_idx_ptr + ov * K + k, mask=mv, other=0)
            w = tl.load(skin_w_ptr + ov * K + k, mask=mv, other=0.0)
            w_dense += tl.where(idx[:, None] == oj[None, :], w[:, None], 0.0)
        ga = _mma(x, w_dense, ga, USE_DOT, PREC)

    ga4 = tl.reshape(ga, (BLOCK_B, 4, 4, BLOCK_J))
    b4 = ob[:, None, None, None]
    c4 = tl.arange(0, 4)[None, :, None, None]
    m4 = tl.arange(0, 4)[None, None, :, None]
    j4 = oj[None, None, None, :]
    ptr = grel_ptr + (pid_s * B + b4) * (NJ * 12) + j4 * 12 + c4 * 4 + m4
    tl.store(ptr, ga4, mask=(b4 < B) & (c4 < 3) & (j4 < NJ))
    c2 = tl.arange(0, 4)[None, :]
    tl.store(gtr_ptr + (pid_s * B + ob[:, None]) * 3 + c2, gt, mask=mb[:, None] & (c2 < 3))


@triton.jit
def _smpl_vertex_bwd_coef_kernel(
    bdirs_ptr,  # (KC, 3, VP) planar blend directions
    skin_idx_ptr,  # (V, K) int64
    skin_w_ptr,  # (V, K)
    rel_ptr,  # (B, J, 12) skinning transforms A
    gv_ptr,  # (B, V, 3) grad of the vertices, strides gv_s* (read only when HAS_GV)
    gu_ptr,  # (B, NU, 3) grad of the readout vertices
    v2u_ptr,  # (V,) int32 readout slot of each vertex, -1 if none
    gcoef_ptr,  # out (NSPLIT, B, KC): each program stores its block once
    B,
    V,
    VP,  # smpl_fwd.planar_stride(V)
    KC,
    K,
    NJ,
    NU,
    NSPLIT,
    gv_sb,
    gv_sv,
    gv_sc,
    HAS_GV: tl.constexpr,
    USE_DOT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_KC: tl.constexpr,
):
    """Gradient of [beta, pose feature]: g_vposed = sum_k w_k A_R^T g (skinning backward,
    no v_posed needed), then g_vposed @ blend_dirs^T.

    Grid (sample tiles, splits, KC blocks). Program (b, s, c) accumulates the
    (BLOCK_B, BLOCK_KC) block c of split s's partial row in registers over all of the
    split's vertex tiles and stores it once: no read-modify-write of the partials per tile,
    no zero fill. Each KC block repeats the skinning backward (SMPL's 217 coefficients are 2
    blocks of the GPU tables' 128): a 256-wide accumulator spills."""
    # Sample tiles on grid axis 0 (up to 2**31 - 1 programs; axes 1 and 2 stop at 65535).
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_k = tl.program_id(2)
    ob = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = ob < B
    ob2 = ob[:, None]
    mb2 = mb[:, None]
    ok = pid_k * BLOCK_KC + tl.arange(0, BLOCK_KC)
    mk = ok < KC
    dtype = bdirs_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_B, BLOCK_KC), dtype=dtype)
    for t in range(pid_s, tl.cdiv(V, BLOCK_V), NSPLIT):
        ov = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mv = ov < V
        m2 = mb2 & mv[None, :]
        gx, gy, gz = _vertex_grad(gv_ptr, gv_sb, gv_sv, gv_sc, gu_ptr, v2u_ptr, ob2, mb2, ov,
                                  mv, NU, HAS_GV)
        gpx = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
        gpy = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
        gpz = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
        for k in range(K):
            idx = tl.load(skin_idx_ptr + ov * K + k, mask=mv, other=0)
            w = tl.load(skin_w_ptr + ov * K + k, mask=mv, other=0.0)[None, :]
            ab = rel_ptr + ob2 * (NJ * 12) + idx[None, :] * 12
            # A_R^T g: only the rotation columns are needed.
            gpx += w * _rotation_col(ab + 0, m2, gx, gy, gz)
            gpy += w * _rotation_col(ab + 1, m2, gx, gy, gz)
            gpz += w * _rotation_col(ab + 2, m2, gx, gy, gz)
        # (vertices, coefficients) tiles of the planar directions: contiguous over vertices.
        bd = bdirs_ptr + ok[None, :] * (3 * VP) + ov[:, None]
        # Masked to the zero padding (vectorisable, see smpl_fwd._blend_tile); gp is zero
        # past V.
        mvk = (ov < VP)[:, None] & mk[None, :]
        acc = _mma(gpx, tl.load(bd, mask=mvk, other=0.0), acc, USE_DOT, PREC)
        acc = _mma(gpy, tl.load(bd + VP, mask=mvk, other=0.0), acc, USE_DOT, PREC)
        acc = _mma(gpz, tl.load(bd + 2 * VP, mask=mvk, other=0.0), acc, USE_DOT, PREC)
    tl.store(gcoef_ptr + (pid_s * B + ob2) * KC + ok[None, :], acc, mask=mb2 & mk[None, :])


@triton.jit
def _split_sum(ptr, B, ROW, NSPLIT, ob2, cols, mask, BLOCK_S: tl.constexpr):
    """sum over s < NSPLIT of ptr[(s * B + ob2) * ROW + cols] (a (NSPLIT, B, ROW) partial
    buffer), in split order. ob2 is int64; s * B * ROW stays int32: splits > 1 only when the
    sample tiles are fewer than 2 per SM, so s * B < 2 * SMs * BLOCK_B (smpl_fwd.num_splits).

    Split 0 always exists; the rest go BLOCK_S per step, unrolled, so a step's loads are
    independent (one round trip) while the adds keep their order: the same result on every
    run (no atomics), NSPLIT / BLOCK_S dependent round trips instead of NSPLIT. Same layout
    as offs throughout: a (BLOCK_S, ...) tile reduced with tl.sum would come out in a slice
    layout that replicates it over the warps (it spilled ~2.4 KB in the skeleton kernel)."""
    base = ptr + ob2 * ROW + cols
    acc = tl.load(base, mask=mask, other=0.0)
    for s0 in range(1, NSPLIT, BLOCK_S):
        for u in tl.static_range(BLOCK_S):
            sp = s0 + u
            acc += tl.load(base + sp * (B * ROW), mask=mask & (sp < NSPLIT), other=0.0)
    return acc


@triton.jit
def _smpl_skeleton_bwd_kernel(
    root_ptr,  # (B, S) the root's pose: S = 3 axis-angle, or 9 (a rotation) when ROT_INPUT
    body_ptr,  # (B, (J-1) S) the other joints' pose
    betas_ptr,  # (B, L)
    jt_ptr,  # (J, 3)
    jsd_ptr,  # (J, 3, L)
    parent_ptr,  # (J,) int32, root's parent stored as 0
    depth_ptr,  # (J,) int32
    desc_ptr,  # (BLOCK_J, BLOCK_J) D[d, j] = 1 if d is in the subtree of j
    world_ptr,  # (B, J, 12) world transforms from the forward
    gcoef_ptr,  # (NSPLIT_C, B, KC) partial grads of [beta, pose feature]
    grel_ptr,  # (NSPLIT, B, J, 12) partial grads of A
    gtrv_ptr,  # (NSPLIT, B, 3) partial transl grads through the vertices
    gfk_ptr,  # (B, J, 3) grad of the 24 posed joints
    gtr_ptr,  # (B, 3) transl grad through the posed joints
    gbetas_ptr,  # out (B, L)
    groot_ptr,  # out (B, S) the root's pose gradient; (B, J*S) all of it unless POSE_PAIR
    gbody_ptr,  # out (B, (J-1) S) the other joints' (POSE_PAIR only; else not touched)
    gtransl_ptr,  # out (B, 3)
    B,
    L,
    NJ,
    NSPLIT,
    NSPLIT_C,
    root_sb,  # row strides of the pose tensors (0: expanded from batch 1) and of their grads
    body_sb,
    groot_sb,
    gbody_sb,
    ROT_INPUT: tl.constexpr,
    POSE_PAIR: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    pid = tl.program_id(0)
    ob = pid.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    oj = tl.arange(0, BLOCK_J)
    mb = ob < B
    mj = oj < NJ
    ob2 = ob[:, None]
    oj2 = oj[None, :]
    m2 = mb[:, None] & mj[None, :]
    KC = L + 9 * (NJ - 1)
    zero2 = tl.zeros((BLOCK_B, BLOCK_J), dtype=betas_ptr.dtype.element_ty)
    parent = tl.load(parent_ptr + oj, mask=mj, other=0)
    is_root = tl.load(depth_ptr + oj, mask=mj, other=0)[None, :] == 0
    jx, jy, jz = _rest_joints(betas_ptr, jt_ptr, jsd_ptr, ob, mb, oj, mj, zero2, L, BLOCK_L)

    wrow = world_ptr + ob2 * (NJ * 12)
    g00, g01, g02, g03, g10, g11, g12, g13, g20, g21, g22, g23 = _load12(wrow + oj2 * 12, m2)
    p00, p01, p02, _p03, p10, p11, p12, _p13, p20, p21, p22, _p23 = _load12(
        wrow + parent[None, :] * 12, m2
    )
    # The root's "parent rotation" is the identity.
    p00 = tl.where(is_root, 1.0, p00)
    p01 = tl.where(is_root, 0.0, p01)
    p02 = tl.where(is_root, 0.0, p02)
    p10 = tl.where(is_root, 0.0, p10)
    p11 = tl.where(is_root, 1.0, p11)
    p12 = tl.where(is_root, 0.0, p12)
    p20 = tl.where(is_root, 0.0, p20)
    p21 = tl.where(is_root, 0.0, p21)
    p22 = tl.where(is_root, 1.0, p22)

    # The vertex kernels' per-split partials, summed here (the "small reduction") as in
    # _split_sum: split 0, then BLOCK_S splits per step with independent loads, in order.
    grel0 = grel_ptr + ob2 * (NJ * 12) + oj2 * 12
    ga00, ga01, ga02, ga03, ga10, ga11, ga12, ga13, ga20, ga21, ga22, ga23 = _load12(grel0, m2)
    for s0 in range(1, NSPLIT, BLOCK_S):
        for u in tl.static_range(BLOCK_S):
            sp = s0 + u
            q00, q01, q02, q03, q10, q11, q12, q13, q20, q21, q22, q23 = _load12(
                grel0 + sp * (B * NJ * 12), m2 & (sp < NSPLIT)
            )
            ga00 += q00
            ga01 += q01
            ga02 += q02
            ga03 += q03
            ga10 += q10
            ga11 += q11
            ga12 += q12
            ga13 += q13
            ga20 += q20
            ga21 += q21
            ga22 += q22
            ga23 += q23

    # Direct gradients of each joint's world transform: A = [G_R | G_t - G_R J], joints = G_t.
    fb = gfk_ptr + ob2 * (NJ * 3) + oj2 * 3
    dt0 = ga03 + tl.load(fb + 0, mask=m2, other=0.0)
    dt1 = ga13 + tl.load(fb + 1, mask=m2, other=0.0)
    dt2 = ga23 + tl.load(fb + 2, mask=m2, other=0.0)
    d00 = ga00 - ga03 * jx
    d01 = ga01 - ga03 * jy
    d02 = ga02 - ga03 * jz
    d10 = ga10 - ga13 * jx
    d11 = ga11 - ga13 * jy
    d12 = ga12 - ga13 * jz
    d20 = ga20 - ga23 * jx
    d21 = ga21 - ga23 * jy
    d22 = ga22 - ga23 * jz
    # dL/dJ through A's translation: -G_R^T gA_t
    gjx = -(g00 * ga03 + g10 * ga13 + g20 * ga23)
    gjy = -(g01 * ga03 + g11 * ga13 + g21 * ga23)
    gjz = -(g02 * ga03 + g12 * ga13 + g22 * ga23)

    # Subtree sums of X = D G_R^T + T G_t^T and of T (see the module docstring).
    desc = tl.load(desc_ptr + oj[:, None] * BLOCK_J + oj[None, :])
    s00 = _mm(d00 * g00 + d01 * g01 + d02 * g02 + dt0 * g03, desc, USE_DOT, "ieee")
    s01 = _mm(d00 * g10 + d01 * g11 + d02 * g12 + dt0 * g13, desc, USE_DOT, "ieee")
    s02 = _mm(d00 * g20 + d01 * g21 + d02 * g22 + dt0 * g23, desc, USE_DOT, "ieee")
    s10 = _mm(d10 * g00 + d11 * g01 + d12 * g02 + dt1 * g03, desc, USE_DOT, "ieee")
    s11 = _mm(d10 * g10 + d11 * g11 + d12 * g12 + dt1 * g13, desc, USE_DOT, "ieee")
    s12 = _mm(d10 * g20 + d11 * g21 + d12 * g22 + dt1 * g23, desc, USE_DOT, "ieee")
    s20 = _mm(d20 * g00 + d21 * g01 + d22 * g02 + dt2 * g03, desc, USE_DOT, "ieee")
    s21 = _mm(d20 * g10 + d21 * g11 + d22 * g12 + dt2 * g13, desc, USE_DOT, "ieee")
    s22 = _mm(d20 * g20 + d21 * g21 + d22 * g22 + dt2 * g23, desc, USE_DOT, "ieee")
    t0 = _mm(dt0, desc, USE_DOT, "ieee")
    t1 = _mm(dt1, desc, USE_DOT, "ieee")
    t2 = _mm(dt2, desc, USE_DOT, "ieee")
    s00 -= t0 * g03
    s01 -= t0 * g13
    s02 -= t0 * g23
    s10 -= t1 * g03
    s11 -= t1 * g13
    s12 -= t1 * g23
    s20 -= t2 * g03
    s21 -= t2 * g13
    s22 -= t2 * g23

    # dL/dG_R = S M with M = G_R^-T (cofactors over the determinant). Not G_R itself: smplx's
    # 1e-8 shift makes Rodrigues matrices orthonormal only to ~1e-8 / |theta|, and given
    # rotation matrices need not be orthonormal at all.
    c00 = g11 * g22 - g12 * g21
    c01 = g12 * g20 - g10 * g22
    c02 = g10 * g21 - g11 * g20
    c10 = g02 * g21 - g01 * g22
    c11 = g00 * g22 - g02 * g20
    c12 = g01 * g20 - g00 * g21
    c20 = g01 * g12 - g02 * g11
    c21 = g02 * g10 - g00 * g12
    c22 = g00 * g11 - g01 * g10
    inv_det = 1.0 / tl.where(m2, g00 * c00 + g01 * c01 + g02 * c02, 1.0)
    m00, m01, m02 = c00 * inv_det, c01 * inv_det, c02 * inv_det
    m10, m11, m12 = c10 * inv_det, c11 * inv_det, c12 * inv_det
    m20, m21, m22 = c20 * inv_det, c21 * inv_det, c22 * inv_det
    e00 = s00 * m00 + s01 * m10 + s02 * m20
    e01 = s00 * m01 + s01 * m11 + s02 * m21
    e02 = s00 * m02 + s01 * m12 + s02 * m22
    e10 = s10 * m00 + s11 * m10 + s12 * m20
    e11 = s10 * m01 + s11 * m11 + s12 * m21
    e12 = s10 * m02 + s11 * m12 + s12 * m22
    e20 = s20 * m00 + s21 * m10 + s22 * m20
    e21 = s20 * m01 + s21 * m11 + s22 * m21
    e22 = s20 * m02 + s21 * m12 + s22 * m22

    # Local gradients: G_R = P R and G_t = P t + P_t, P the parent's world rotation.
    r00 = p00 * e00 + p10 * e10 + p20 * e20
    r01 = p00 * e01 + p10 * e11 + p20 * e21
    r02 = p00 * e02 + p10 * e12 + p20 * e22
    r10 = p01 * e00 + p11 * e10 + p21 * e20
    r11 = p01 * e01 + p11 * e11 + p21 * e21
    r12 = p01 * e02 + p11 * e12 + p21 * e22
    r20 = p02 * e00 + p12 * e10 + p22 * e20
    r21 = p02 * e01 + p12 * e11 + p22 * e21
    r22 = p02 * e02 + p12 * e12 + p22 * e22
    tx = p00 * t0 + p10 * t1 + p20 * t2
    ty = p01 * t0 + p11 * t1 + p21 * t2
    tz = p02 * t0 + p12 * t1 + p22 * t2

    # Pose-feature gradients (joints 1..) add straight onto the local rotations.
    mpf = m2 & (oj2 >= 1)
    pf0 = gcoef_ptr + ob2 * KC + L + 9 * (oj2 - 1)
    for s0 in range(0, NSPLIT_C, BLOCK_S):
        for u in tl.static_range(BLOCK_S):
            sp = s0 + u
            pf = pf0 + sp * (B * KC)
            mp = mpf & (sp < NSPLIT_C)
            r00 += tl.load(pf + 0, mask=mp, other=0.0)
            r01 += tl.load(pf + 1, mask=mp, other=0.0)
            r02 += tl.load(pf + 2, mask=mp, other=0.0)
            r10 += tl.load(pf + 3, mask=mp, other=0.0)
            r11 += tl.load(pf + 4, mask=mp, other=0.0)
            r12 += tl.load(pf + 5, mask=mp, other=0.0)
            r20 += tl.load(pf + 6, mask=mp, other=0.0)
            r21 += tl.load(pf + 7, mask=mp, other=0.0)
            r22 += tl.load(pf + 8, mask=mp, other=0.0)

    # Betas: blend-shape part + rest joints (t_j = J_j - J_parent, A's -G_R J_j).
    ux = gjx + tx
    uy = gjy + ty
    uz = gjz + tz
    vx = tl.where(is_root, 0.0, tx)[:, :, None]
    vy = tl.where(is_root, 0.0, ty)[:, :, None]
    vz = tl.where(is_root, 0.0, tz)[:, :, None]
    ux = ux[:, :, None]
    uy = uy[:, :, None]
    uz = uz[:, :, None]
    for l0 in range(0, L, BLOCK_L):
        ol = l0 + tl.arange(0, BLOCK_L)
        ml = ol < L
        mbl = mb[:, None] & ml[None, :]
        acc = _split_sum(gcoef_ptr, B, KC, NSPLIT_C, ob2, ol[None, :], mbl, BLOCK_S)
        msd = mj[:, None] & ml[None, :]
        sd = jsd_ptr + oj[:, None] * (3 * L) + ol[None, :]
        psd = jsd_ptr + parent[:, None] * (3 * L) + ol[None, :]
        acc += tl.sum(ux * tl.load(sd, mask=msd, other=0.0)[None, :, :], axis=1)
        acc += tl.sum(uy * tl.load(sd + L, mask=msd, other=0.0)[None, :, :], axis=1)
        acc += tl.sum(uz * tl.load(sd + 2 * L, mask=msd, other=0.0)[None, :, :], axis=1)
        acc -= tl.sum(vx * tl.load(psd, mask=msd, other=0.0)[None, :, :], axis=1)
        acc -= tl.sum(vy * tl.load(psd + L, mask=msd, other=0.0)[None, :, :], axis=1)
        acc -= tl.sum(vz * tl.load(psd + 2 * L, mask=msd, other=0.0)[None, :, :], axis=1)
        tl.store(gbetas_ptr + ob2 * L + ol[None, :], acc, mask=mbl)

    # Where each joint's pose gradient goes: two tensors (root, body) when POSE_PAIR, else
    # one (B, J*S) at groot_ptr. Never one tensor and a view of it as two outputs: under
    # torch.compile each written argument is cloned on its own, and a view's clone no longer
    # aliases its base (torch's triton_kernel_wrap notes it). The branch is here, not in a
    # helper: inductor's analysis counts every argument of a called function that returns
    # the stored-to pointer as written.
    if POSE_PAIR:
        gb = _pose_addr(groot_ptr, gbody_ptr, ob2, oj2, groot_sb, gbody_sb,
                        9 if ROT_INPUT else 3)
    else:
        gb = groot_ptr + ob2 * groot_sb + oj2 * (9 if ROT_INPUT else 3)
    if ROT_INPUT:
        tl.store(gb + 0, r00, mask=m2)
        tl.store(gb + 1, r01, mask=m2)
        tl.store(gb + 2, r02, mask=m2)
        tl.store(gb + 3, r10, mask=m2)
        tl.store(gb + 4, r11, mask=m2)
        tl.store(gb + 5, r12, mask=m2)
        tl.store(gb + 6, r20, mask=m2)
        tl.store(gb + 7, r21, mask=m2)
        tl.store(gb + 8, r22, mask=m2)
    else:
        pb = _pose_addr(root_ptr, body_ptr, ob2, oj2, root_sb, body_sb, 3)
        x = tl.load(pb + 0, mask=m2, other=0.0)
        y = tl.load(pb + 1, mask=m2, other=0.0)
        z = tl.load(pb + 2, mask=m2, other=0.0)
        dx, dy, dz = _rodrigues_bwd(x, y, z, r00, r01, r02, r10, r11, r12, r20, r21, r22)
        tl.store(gb + 0, dx, mask=m2)
        tl.store(gb + 1, dy, mask=m2)
        tl.store(gb + 2, dz, mask=m2)

    c4 = tl.arange(0, 4)[None, :]
    mt = mb[:, None] & (c4 < 3)
    gt = tl.load(gtr_ptr + ob2 * 3 + c4, mask=mt, other=0.0)
    gt += _split_sum(gtrv_ptr, B, 3, NSPLIT, ob2, c4, mt, BLOCK_S)
    tl.store(gtransl_ptr + ob2 * 3 + c4, gt, mask=mt)


def _p(dt: str) -> str:
    return "*" + dt


def readout_bwd_signature(dt: str) -> dict:
    sig = {
        name: _p(dt)
        for name in (
            "gj_ptr",
            "gk_ptr",
            "gpj_ptr",
            "gpk_ptr",
            "joints_ptr",
            "kps_ptr",
            "camera_ptr",
            "rout_ptr",
            "gfk_ptr",
            "gu_ptr",
            "gcam_ptr",
            "gtr_ptr",
        )
    }
    sig.update({k: "i32" for k in ("B", "NJ", "E", "Q", "NU")})
    for g in ("gj", "gk", "gpj", "gpk"):
        sig.update({f"{g}_sb": "i32", f"{g}_sr": "i32", f"{g}_sc": "i32"})
        sig[f"HAS_{g.upper()}"] = "i32"
    sig["HAS_CAM"] = "i32"
    sig.update({k: "constexpr" for k in ("BLOCK_B", "BLOCK_J", "BLOCK_R", "BLOCK_U")})
    return sig


def vertex_bwd_rel_signature(dt: str) -> dict:
    sig = {
        "coeffs_ptr": _p(dt),
        "bdirs_ptr": _p(dt),
        "vt_ptr": _p(dt),
        "skin_idx_ptr": "*i64",
        "skin_w_ptr": _p(dt),
        "gv_ptr": _p(dt),
        "gu_ptr": _p(dt),
        "v2u_ptr": "*i32",
        "grel_ptr": _p(dt),
        "gtr_ptr": _p(dt),
    }
    sig.update({k: "i32" for k in ("B", "V", "VP", "KC", "K", "NJ", "NU", "NSPLIT")})
    sig.update({k: "i32" for k in ("gv_sb", "gv_sv", "gv_sc")})
    sig.update(
        {
            k: "constexpr"
            for k in ("HAS_GV", "USE_DOT", "PREC", "BLOCK_B", "BLOCK_V", "BLOCK_K", "BLOCK_J")
        }
    )
    return sig


def vertex_bwd_coef_signature(dt: str) -> dict:
    sig = {
        "bdirs_ptr": _p(dt),
        "skin_idx_ptr": "*i64",
        "skin_w_ptr": _p(dt),
        "rel_ptr": _p(dt),
        "gv_ptr": _p(dt),
        "gu_ptr": _p(dt),
        "v2u_ptr": "*i32",
        "gcoef_ptr": _p(dt),
    }
    sig.update({k: "i32" for k in ("B", "V", "VP", "KC", "K", "NJ", "NU", "NSPLIT")})
    sig.update({k: "i32" for k in ("gv_sb", "gv_sv", "gv_sc")})
    sig.update(
        {k: "constexpr" for k in ("HAS_GV", "USE_DOT", "PREC", "BLOCK_B", "BLOCK_V", "BLOCK_KC")}
    )
    return sig


def skeleton_bwd_signature(dt: str) -> dict:
    sig = {
        "root_ptr": _p(dt),
        "body_ptr": _p(dt),
        "betas_ptr": _p(dt),
        "jt_ptr": _p(dt),
        "jsd_ptr": _p(dt),
        "parent_ptr": "*i32",
        "depth_ptr": "*i32",
        "desc_ptr": _p(dt),
    }
    sig.update(
        {
            k: _p(dt)
            for k in (
                "world_ptr",
                "gcoef_ptr",
                "grel_ptr",
                "gtrv_ptr",
                "gfk_ptr",
                "gtr_ptr",
                "gbetas_ptr",
                "groot_ptr",
                "gbody_ptr",
                "gtransl_ptr",
            )
        }
    )
    sig.update({k: "i32" for k in ("B", "L", "NJ", "NSPLIT", "NSPLIT_C", "root_sb", "body_sb",
                                   "groot_sb", "gbody_sb")})
    sig.update({k: "constexpr"
                for k in ("ROT_INPUT", "POSE_PAIR", "USE_DOT", "BLOCK_B", "BLOCK_J", "BLOCK_L",
                          "BLOCK_S")})
    return sig


def _aot_variants() -> list[dict]:
    out = []
    for dt in ("fp32", "fp64"):
        out.append(
            _variant(
                f"smpl_readout_bwd_{dt}",
                _smpl_readout_bwd_kernel,
                readout_bwd_signature(dt),
                GPU_READOUT_BWD,
            )
        )
        cfg = GPU_SKELETON_BWD if dt == "fp32" else GPU_SKELETON_BWD_F64
        for rot in (False, True):
            # POSE_PAIR: the layer's (global_orient, body_pose); else one (B, J*S) pose.
            for pair in (True, False):
                out.append(
                    _variant(
                        f"smpl_skeleton_bwd_{dt}_{'rotmat' if rot else 'aa'}"
                        f"{'' if pair else '_onepose'}",
                        _smpl_skeleton_bwd_kernel,
                        skeleton_bwd_signature(dt),
                        cfg,
                        ROT_INPUT=rot,
                        POSE_PAIR=pair,
                        USE_DOT=dt == "fp32",
                    )
                )
    kernels = (
        ("rel", _smpl_vertex_bwd_rel_kernel, vertex_bwd_rel_signature, GPU_VERTEX_BWD_REL),
        ("coef", _smpl_vertex_bwd_coef_kernel, vertex_bwd_coef_signature, GPU_VERTEX_BWD_COEF),
    )
    f64_cfgs = {"rel": GPU_VERTEX_BWD_REL_F64, "coef": GPU_VERTEX_BWD_COEF_F64}
    for part, fn, signature, table in kernels:
        for has_gv in (False, True):
            tag = "verts" if has_gv else "kp"
            for (prec, arch), cfg in table.items():
                out.append(
                    _variant(
                        f"smpl_vertex_bwd_{part}_fp32_{prec}_{tag}_sm{arch}",
                        fn,
                        signature("fp32"),
                        cfg,
                        archs=(arch,),
                        HAS_GV=has_gv,
                        USE_DOT=True,
                        PREC=prec,
                    )
                )
            out.append(
                _variant(
                    f"smpl_vertex_bwd_{part}_fp64_{tag}",
                    fn,
                    signature("fp64"),
                    f64_cfgs[part],
                    HAS_GV=has_gv,
                    USE_DOT=False,
                    PREC="ieee",
                )
            )
    return out


# Every (kernel, constexpr) combination the launchers in hmr_fast.ops.smpl_triton use on a GPU.
AOT_VARIANTS = _aot_variants()
