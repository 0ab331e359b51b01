"""Triton kernels for the SMPL forward (the math is hmr_fast.ops.reference's).

Three launches, whatever the batch:

1. ``_smpl_skeleton_fwd_kernel`` (per block of samples, vectorised over the 24 joints):
   Rodrigues (or given rotation matrices), the 207 pose-feature inputs, rest joints from the
   joint-shape regressor, forward kinematics level by level, and the skinning transforms A.
2. ``_smpl_vertex_fwd_kernel`` (tile of samples x tile of vertices): shape and pose blend
   shapes as one ``tl.dot`` over [beta, pose feature], then skinning over each vertex's K
   nonzero weights, plus the translation. v_shaped, the pose offsets and the per-vertex
   transforms stay in registers.
3. ``_smpl_readout_fwd_kernel`` (per block of samples): the 24 posed joints, the vertex
   joints and keypoints as one small readout matrix over a handful of vertices, and the
   weak-perspective projection s * (X_xy + t) of all of them.

Tensors are contiguous; sample offsets are int64 so B * V * 3 may exceed 2**31.
The GPU block sizes live here (``GPU_*``) so ``AOT_VARIANTS`` lists exactly what is launched.
"""

import triton
import triton.language as tl

from .constants import SMALL_ANGLE_SQ, SMPLX_ANGLE_EPS

# constexpr: the only kind of global a @triton.jit function may read (kernels/constants.py).
_ANGLE_EPS = tl.constexpr(SMPLX_ANGLE_EPS)
_SMALL_SQ = tl.constexpr(SMALL_ANGLE_SQ)

NUM_JOINT_SLOTS = 32  # BLOCK_J: the 24 joints padded to a power of two

# Block sizes the host launchers use on a GPU (smpl_triton.py reads these).
GPU_SKELETON_FWD = dict(BLOCK_B=8, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_L=8, num_warps=2)
GPU_SKELETON_FWD_F64 = dict(BLOCK_B=4, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_L=8, num_warps=2)
# fp64: BLOCK_B=8 spills 8 B on sm_90a under triton 3.6 with the planar blend directions;
# 4 samples: 56-64 registers, spill-free under 3.6 and 3.8 on sm_90a and sm_80.
GPU_VERTEX_FWD_F64 = dict(BLOCK_B=4, BLOCK_V=32, BLOCK_K=8, num_warps=4)
# BLOCK_U=16: 32 spills 24 B (fp32, sm_80) under triton 3.6.
GPU_READOUT = dict(BLOCK_B=4, BLOCK_J=NUM_JOINT_SLOTS, BLOCK_R=32, BLOCK_U=16, num_warps=4)
# fp64 halves the vertex chunk: at BLOCK_U=16 the launch-specialised signature (B % 16 == 0)
# spilled 32 B on sm_90a under triton 3.6.
GPU_READOUT_F64 = {**GPU_READOUT, "BLOCK_U": 8}

# The fp32 blend GEMM's tl.dot input precisions: "tf32x3" (three TF32 tensor-core MMAs on a
# hi/lo split of each operand, about fp32 accuracy), "ieee" (exact fp32 FMAs on CUDA cores),
# "tf32" (one TF32 MMA, ~1e-4 m vertex error).
FP32_PRECISIONS = ("tf32x3", "ieee", "tf32")
# GPU families with their own block sizes: 90 = Hopper (sm_90a, wgmma needs 64-row tiles),
# 80 = the rest (mma.sync: Ampere, Ada, and the fallback for newer parts).
GPU_ARCHS = (90, 80)


def gpu_arch(capability: tuple) -> int:
    """The GPU_ARCHS family of a CUDA compute capability (major, minor)."""
    return 90 if capability[0] == 9 else 80


# fp32 vertex kernel block sizes by (precision, GPU family); each entry is an AOT variant.
# 64-sample tiles give wgmma on sm_90a; everything here compiles without register spills.
GPU_VERTEX_FWD = {
    ("tf32x3", 90): dict(BLOCK_B=64, BLOCK_V=32, BLOCK_K=32, num_warps=8),
    ("ieee", 90): dict(BLOCK_B=32, BLOCK_V=64, BLOCK_K=32, num_warps=8),
    ("tf32", 90): dict(BLOCK_B=64, BLOCK_V=32, BLOCK_K=32, num_warps=8),
    ("tf32x3", 80): dict(BLOCK_B=32, BLOCK_V=64, BLOCK_K=16, num_warps=8),
    ("ieee", 80): dict(BLOCK_B=32, BLOCK_V=32, BLOCK_K=32, num_warps=8),
    ("tf32", 80): dict(BLOCK_B=32, BLOCK_V=64, BLOCK_K=32, num_warps=8),
}


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr, PREC: tl.constexpr):
    """(M, K) @ (K, N): tl.dot, or a broadcast multiply-sum (fp64, tiny tiles)."""
    if USE_DOT:
        out = tl.dot(a, b, input_precision=PREC)
    else:
        out = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _mma(a, b, acc, USE_DOT: tl.constexpr, PREC: tl.constexpr):
    """acc + (M, K) @ (K, N), as _mm."""
    if USE_DOT:
        out = tl.dot(a, b, acc, input_precision=PREC)
    else:
        out = acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _rodrigues_coeffs(x, y, z):
    """sin(a)/a and (1 - cos a)/a^2 of the shifted vector (Taylor below a^2 = _SMALL_SQ)."""
    sx = x + _ANGLE_EPS
    sy = y + _ANGLE_EPS
    sz = z + _ANGLE_EPS
    q = sx * sx + sy * sy + sz * sz
    small = q < _SMALL_SQ
    safe = tl.where(small, 1.0, q)
    a = tl.sqrt(safe)
    hs = tl.sin(0.5 * a)
    s = tl.where(small, 1.0 - q / 6.0 + q * q / 120.0, tl.sin(a) / a)
    c = tl.where(small, 0.5 - q / 24.0 + q * q / 720.0, 2.0 * hs * hs / safe)
    return sx, sy, sz, q, small, safe, a, s, c


@triton.jit
def _rodrigues(x, y, z):
    """R = I + s K + c K^2 with K = [theta]_x (unshifted), K^2 = theta theta^T - |theta|^2 I."""
    sx, sy, sz, q, small, safe, a, s, c = _rodrigues_coeffs(x, y, z)
    xx = x * x
    yy = y * y
    zz = z * z
    r00 = 1.0 - c * (yy + zz)
    r01 = -s * z + c * x * y
    r02 = s * y + c * x * z
    r10 = s * z + c * x * y
    r11 = 1.0 - c * (xx + zz)
    r12 = -s * x + c * y * z
    r20 = -s * y + c * x * z
    r21 = s * x + c * y * z
    r22 = 1.0 - c * (xx + yy)
    return r00, r01, r02, r10, r11, r12, r20, r21, r22


@triton.jit
def _pose_addr(root_ptr, body_ptr, ob2, oj2, root_sb, body_sb, S: tl.constexpr):
    """Address of the first of joint oj2's S pose entries in sample ob2.

    The root's entries come from their own tensor and the other joints' from the body's, so
    the layer's separate global_orient and body_pose are read in place (no concatenation
    launch). Row strides root_sb / body_sb: 0 for an input expanded from batch 1; one
    (B, J*S) pose passes itself twice, the body part offset by S.
    """
    return tl.where(oj2 == 0, root_ptr + ob2 * root_sb, body_ptr + ob2 * body_sb + (oj2 - 1) * S)


@triton.jit
def _load_rotations(root_ptr, body_ptr, ob2, oj2, m2, root_sb, body_sb,
                    ROT_INPUT: tl.constexpr):
    """Local rotations of a (samples x joints) tile, row-major 3x3."""
    if ROT_INPUT:
        base = _pose_addr(root_ptr, body_ptr, ob2, oj2, root_sb, body_sb, 9)
        r00 = tl.load(base + 0, mask=m2, other=1.0)
        r01 = tl.load(base + 1, mask=m2, other=0.0)
        r02 = tl.load(base + 2, mask=m2, other=0.0)
        r10 = tl.load(base + 3, mask=m2, other=0.0)
        r11 = tl.load(base + 4, mask=m2, other=1.0)
        r12 = tl.load(base + 5, mask=m2, other=0.0)
        r20 = tl.load(base + 6, mask=m2, other=0.0)
        r21 = tl.load(base + 7, mask=m2, other=0.0)
        r22 = tl.load(base + 8, mask=m2, other=1.0)
    else:
        base = _pose_addr(root_ptr, body_ptr, ob2, oj2, root_sb, body_sb, 3)
        x = tl.load(base + 0, mask=m2, other=0.0)
        y = tl.load(base + 1, mask=m2, other=0.0)
        z = tl.load(base + 2, mask=m2, other=0.0)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rodrigues(x, y, z)
    return r00, r01, r02, r10, r11, r12, r20, r21, r22


@triton.jit
def _rest_joints(betas_ptr, jt_ptr, jsd_ptr, ob, mb, jidx, mj, zero2, L, BLOCK_L: tl.constexpr):
    """Rest joints J[jidx] = J_template + J_shapedirs . beta for a (samples x joints) tile."""
    jx = zero2 + tl.load(jt_ptr + jidx * 3 + 0, mask=mj, other=0.0)[None, :]
    jy = zero2 + tl.load(jt_ptr + jidx * 3 + 1, mask=mj, other=0.0)[None, :]
    jz = zero2 + tl.load(jt_ptr + jidx * 3 + 2, mask=mj, other=0.0)[None, :]
    for l0 in range(0, L, BLOCK_L):
        ol = l0 + tl.arange(0, BLOCK_L)
        ml = ol < L
        bt = tl.load(
            betas_ptr + ob[:, None] * L + ol[None, :], mask=mb[:, None] & ml[None, :], other=0.0
        )[:, None, :]
        msd = mj[:, None] & ml[None, :]
        sd = jsd_ptr + jidx[:, None] * (3 * L) + ol[None, :]
        jx += tl.sum(bt * tl.load(sd, mask=msd, other=0.0)[None, :, :], axis=2)
        jy += tl.sum(bt * tl.load(sd + L, mask=msd, other=0.0)[None, :, :], axis=2)
        jz += tl.sum(bt * tl.load(sd + 2 * L, mask=msd, other=0.0)[None, :, :], axis=2)
    return jx, jy, jz


@triton.jit
def _load12(base, mask):
    """A row-major 3x4 transform per element of a tile."""
    a0 = tl.load(base + 0, mask=mask, other=0.0)
    a1 = tl.load(base + 1, mask=mask, other=0.0)
    a2 = tl.load(base + 2, mask=mask, other=0.0)
    a3 = tl.load(base + 3, mask=mask, other=0.0)
    a4 = tl.load(base + 4, mask=mask, other=0.0)
    a5 = tl.load(base + 5, mask=mask, other=0.0)
    a6 = tl.load(base + 6, mask=mask, other=0.0)
    a7 = tl.load(base + 7, mask=mask, other=0.0)
    a8 = tl.load(base + 8, mask=mask, other=0.0)
    a9 = tl.load(base + 9, mask=mask, other=0.0)
    a10 = tl.load(base + 10, mask=mask, other=0.0)
    a11 = tl.load(base + 11, mask=mask, other=0.0)
    return a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11


@triton.jit
def _store12(base, mask, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11):
    tl.store(base + 0, a0, mask=mask)
    tl.store(base + 1, a1, mask=mask)
    tl.store(base + 2, a2, mask=mask)
    tl.store(base + 3, a3, mask=mask)
    tl.store(base + 4, a4, mask=mask)
    tl.store(base + 5, a5, mask=mask)
    tl.store(base + 6, a6, mask=mask)
    tl.store(base + 7, a7, mask=mask)
    tl.store(base + 8, a8, mask=mask)
    tl.store(base + 9, a9, mask=mask)
    tl.store(base + 10, a10, mask=mask)
    tl.store(base + 11, a11, mask=mask)


@triton.jit
def _smpl_skeleton_fwd_kernel(
    root_ptr,  # (B, S) the root's pose: S = 3 axis-angle, or 9 (a rotation) when ROT_INPUT
    body_ptr,  # (B, (J-1) S) the other joints' pose
    betas_ptr,  # (B, L)
    jt_ptr,  # (J, 3) joint template
    jsd_ptr,  # (J, 3, L) joint shape directions
    parent_ptr,  # (J,) int32, root's parent stored as 0
    depth_ptr,  # (J,) int32 tree depth, root 0
    coeffs_ptr,  # out (B, L + 9 (J - 1)) = [beta, pose feature]
    world_ptr,  # out (B, J, 12) world transforms G (translation = posed joint)
    rel_ptr,  # out (B, J, 12) skinning transforms A
    B,
    L,
    NJ,
    NDEPTH,
    root_sb,  # row strides of the two pose tensors (0: expanded from batch 1)
    body_sb,
    ROT_INPUT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_L: tl.constexpr,
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

    r00, r01, r02, r10, r11, r12, r20, r21, r22 = _load_rotations(
        root_ptr, body_ptr, ob2, oj2, m2, root_sb, body_sb, ROT_INPUT
    )
    # Pose feature vec(R_j - I) for joints 1.., right after the betas.
    mpf = m2 & (oj2 >= 1)
    pf = coeffs_ptr + ob2 * KC + L + 9 * (oj2 - 1)
    tl.store(pf + 0, r00 - 1.0, mask=mpf)
    tl.store(pf + 1, r01, mask=mpf)
    tl.store(pf + 2, r02, mask=mpf)
    tl.store(pf + 3, r10, mask=mpf)
    tl.store(pf + 4, r11 - 1.0, mask=mpf)
    tl.store(pf + 5, r12, mask=mpf)
    tl.store(pf + 6, r20, mask=mpf)
    tl.store(pf + 7, r21, mask=mpf)
    tl.store(pf + 8, r22 - 1.0, mask=mpf)
    for l0 in range(0, L, BLOCK_L):
        ol = l0 + tl.arange(0, BLOCK_L)
        mbl = mb[:, None] & (ol < L)[None, :]
        bt = tl.load(betas_ptr + ob2 * L + ol[None, :], mask=mbl, other=0.0)
        tl.store(coeffs_ptr + ob2 * KC + ol[None, :], bt, mask=mbl)

    parent = tl.load(parent_ptr + oj, mask=mj, other=0)
    depth = tl.load(depth_ptr + oj, mask=mj, other=0)[None, :]
    zero2 = tl.zeros((BLOCK_B, BLOCK_J), dtype=betas_ptr.dtype.element_ty)
    jx, jy, jz = _rest_joints(betas_ptr, jt_ptr, jsd_ptr, ob, mb, oj, mj, zero2, L, BLOCK_L)
    px, py, pz = _rest_joints(betas_ptr, jt_ptr, jsd_ptr, ob, mb, parent, mj, zero2, L, BLOCK_L)
    is_root = depth == 0
    tx = tl.where(is_root, jx, jx - px)
    ty = tl.where(is_root, jy, jy - py)
    tz = tl.where(is_root, jz, jz - pz)

    # Level-parallel FK: every joint's world transform starts as its local one (right for the
    # root); level d reads its parents' (level d-1) transforms back from global memory.
    g00, g01, g02, g03 = r00, r01, r02, tx
    g10, g11, g12, g13 = r10, r11, r12, ty
    g20, g21, g22, g23 = r20, r21, r22, tz
    wb = world_ptr + ob2 * (NJ * 12) + oj2 * 12
    _store12(wb, m2, g00, g01, g02, g03, g10, g11, g12, g13, g20, g21, g22, g23)
    pb = world_ptr + ob2 * (NJ * 12) + parent[None, :] * 12
    for d in range(1, NDEPTH):
        # Parents were stored by other threads of this program in the previous step.
        tl.debug_barrier()
        p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23 = _load12(pb, m2)
        sel = depth == d
        g00 = tl.where(sel, p00 * r00 + p01 * r10 + p02 * r20, g00)
        g01 = tl.where(sel, p00 * r01 + p01 * r11 + p02 * r21, g01)
        g02 = tl.where(sel, p00 * r02 + p01 * r12 + p02 * r22, g02)
        g03 = tl.where(sel, p00 * tx + p01 * ty + p02 * tz + p03, g03)
        g10 = tl.where(sel, p10 * r00 + p11 * r10 + p12 * r20, g10)
        g11 = tl.where(sel, p10 * r01 + p11 * r11 + p12 * r21, g11)
        g12 = tl.where(sel, p10 * r02 + p11 * r12 + p12 * r22, g12)
        g13 = tl.where(sel, p10 * tx + p11 * ty + p12 * tz + p13, g13)
        g20 = tl.where(sel, p20 * r00 + p21 * r10 + p22 * r20, g20)
        g21 = tl.where(sel, p20 * r01 + p21 * r11 + p22 * r21, g21)
        g22 = tl.where(sel, p20 * r02 + p21 * r12 + p22 * r22, g22)
        g23 = tl.where(sel, p20 * tx + p21 * ty + p22 * tz + p23, g23)
        _store12(wb, m2 & sel, g00, g01, g02, g03, g10, g11, g12, g13, g20, g21, g22, g23)

    # A_j = [G_R | G_t - G_R J_j]
    a03 = g03 - (g00 * jx + g01 * jy + g02 * jz)
    a13 = g13 - (g10 * jx + g11 * jy + g12 * jz)
    a23 = g23 - (g20 * jx + g21 * jy + g22 * jz)
    rb = rel_ptr + ob2 * (NJ * 12) + oj2 * 12
    _store12(rb, m2, g00, g01, g02, a03, g10, g11, g12, a13, g20, g21, g22, a23)


@triton.jit
def _blend_tile(
    coeffs_ptr,
    bdirs_ptr,
    vt_ptr,
    ob,
    mb,
    ov,
    mv,
    VP,
    KC,
    USE_DOT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """v_posed of a (samples x vertices) tile: v_template + [beta, pf] @ blend_dirs, the
    directions in the plan's planar (KC, 3, VP) layout (VP: see planar_stride)."""
    dtype = coeffs_ptr.dtype.element_ty
    acc_x = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
    acc_y = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
    acc_z = tl.zeros((BLOCK_B, BLOCK_V), dtype=dtype)
    for k0 in range(0, KC, BLOCK_K):
        ok = k0 + tl.arange(0, BLOCK_K)
        mk = ok < KC
        coef = tl.load(
            coeffs_ptr + ob[:, None] * KC + ok[None, :], mask=mb[:, None] & mk[None, :], other=0.0
        )
        # Planar (KC, 3, VP) directions: each component's row is contiguous over the
        # vertices and starts 64-byte aligned. Masked to the zero padding (ov < VP), not to
        # ov < V: a mask constant over 16 vertices keeps the loads vectorisable, and the
        # padded columns only reach vertices that are never stored.
        bd = bdirs_ptr + ok[:, None] * (3 * VP) + ov[None, :]
        mkv = mk[:, None] & (ov < VP)[None, :]
        acc_x += _mm(coef, tl.load(bd, mask=mkv, other=0.0), USE_DOT, PREC)
        acc_y += _mm(coef, tl.load(bd + VP, mask=mkv, other=0.0), USE_DOT, PREC)
        acc_z += _mm(coef, tl.load(bd + 2 * VP, mask=mkv, other=0.0), USE_DOT, PREC)
    vx = acc_x + tl.load(vt_ptr + ov * 3 + 0, mask=mv, other=0.0)[None, :]
    vy = acc_y + tl.load(vt_ptr + ov * 3 + 1, mask=mv, other=0.0)[None, :]
    vz = acc_z + tl.load(vt_ptr + ov * 3 + 2, mask=mv, other=0.0)[None, :]
    return vx, vy, vz


@triton.jit
def _affine_row(base, mask, vx, vy, vz):
    """One row of a gathered 3x4 transform applied to [v; 1] (four loads, used at once)."""
    return (
        tl.load(base + 0, mask=mask, other=0.0) * vx
        + tl.load(base + 1, mask=mask, other=0.0) * vy
        + tl.load(base + 2, mask=mask, other=0.0) * vz
        + tl.load(base + 3, mask=mask, other=0.0)
    )


@triton.jit
def _smpl_vertex_fwd_kernel(
    coeffs_ptr,  # (B, KC) [beta, pose feature]
    bdirs_ptr,  # (KC, 3, VP) blend directions, planar (the plan's blend_planar)
    vt_ptr,  # (V, 3) template
    skin_idx_ptr,  # (V, K) int64 joint ids
    skin_w_ptr,  # (V, K) weights
    rel_ptr,  # (B, J, 12) skinning transforms A
    transl_ptr,  # (B, 3), read only when HAS_T != 0
    verts_ptr,  # out (B, V, 3)
    B,
    V,
    VP,  # planar_stride(V)
    KC,
    K,
    NJ,
    HAS_T,  # 0: no translation (a runtime flag: no zero tensor to fill, no extra variant)
    USE_DOT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Sample tiles on grid axis 0 (up to 2**31 - 1 programs; axes 1 and 2 stop at 65535).
    pid_b = tl.program_id(0)
    pid_v = tl.program_id(1)
    ob = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ov = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mb = ob < B
    mv = ov < V
    m2 = mb[:, None] & mv[None, :]
    vx, vy, vz = _blend_tile(
        coeffs_ptr,
        bdirs_ptr,
        vt_ptr,
        ob,
        mb,
        ov,
        mv,
        VP,
        KC,
        USE_DOT,
        PREC,
        BLOCK_B,
        BLOCK_V,
        BLOCK_K,
    )
    ox = tl.zeros((BLOCK_B, BLOCK_V), dtype=vx.dtype)
    oy = tl.zeros((BLOCK_B, BLOCK_V), dtype=vx.dtype)
    oz = tl.zeros((BLOCK_B, BLOCK_V), dtype=vx.dtype)
    # Sparse LBS: out = sum_k w_k A_{j_k} [v_posed; 1], A read from L1/L2 (B x 1.1 KB).
    for k in range(K):
        idx = tl.load(skin_idx_ptr + ov * K + k, mask=mv, other=0)
        w = tl.load(skin_w_ptr + ov * K + k, mask=mv, other=0.0)[None, :]
        ab = rel_ptr + ob[:, None] * (NJ * 12) + idx[None, :] * 12
        ox += w * _affine_row(ab, m2, vx, vy, vz)
        oy += w * _affine_row(ab + 4, m2, vx, vy, vz)
        oz += w * _affine_row(ab + 8, m2, vx, vy, vz)
    mt = mb & (HAS_T != 0)
    trx = tl.load(transl_ptr + ob * 3 + 0, mask=mt, other=0.0)[:, None]
    try_ = tl.load(transl_ptr + ob * 3 + 1, mask=mt, other=0.0)[:, None]
    trz = tl.load(transl_ptr + ob * 3 + 2, mask=mt, other=0.0)[:, None]
    out = verts_ptr + ob[:, None] * (V * 3) + ov[None, :] * 3
    tl.store(out + 0, ox + trx, mask=m2)
    tl.store(out + 1, oy + try_, mask=m2)
    tl.store(out + 2, oz + trz, mask=m2)


@triton.jit
def _smpl_readout_fwd_kernel(
    world_ptr,  # (B, J, 12)
    transl_ptr,  # (B, 3), read only when HAS_T != 0
    verts_ptr,  # (B, VM, 3) skinned vertices (full mesh or keypoint-mode subset)
    uidx_ptr,  # (NU,) int32 vertex ids (into verts) the readout reads
    rout_ptr,  # (E + Q, NU) readout: E one-hot vertex-joint rows, then the Q regressor rows
    camera_ptr,  # (B, 3) [s, tx, ty], read only when HAS_CAM != 0 (else projections are 0)
    joints_ptr,  # out (B, J + E, 3)
    kps_ptr,  # out (B, Q, 3)
    pj_ptr,  # out (B, J + E, 2)
    pk_ptr,  # out (B, Q, 2)
    B,
    VM,
    NJ,
    E,
    Q,
    NU,
    HAS_T,
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
    NP = NJ + E
    NR = E + Q
    mc = mb & (HAS_CAM != 0)
    s = tl.load(camera_ptr + ob * 3 + 0, mask=mc, other=0.0)[:, None]
    cx = tl.load(camera_ptr + ob * 3 + 1, mask=mc, other=0.0)[:, None]
    cy = tl.load(camera_ptr + ob * 3 + 2, mask=mc, other=0.0)[:, None]
    mt = mb & (HAS_T != 0)
    trx = tl.load(transl_ptr + ob * 3 + 0, mask=mt, other=0.0)[:, None]
    try_ = tl.load(transl_ptr + ob * 3 + 1, mask=mt, other=0.0)[:, None]
    trz = tl.load(transl_ptr + ob * 3 + 2, mask=mt, other=0.0)[:, None]

    # The 24 posed joints are the world transforms' translations.
    oj = tl.arange(0, BLOCK_J)[None, :]
    m2 = mb[:, None] & (oj < NJ)
    wb = world_ptr + ob2 * (NJ * 12) + oj * 12
    x = tl.load(wb + 3, mask=m2, other=0.0) + trx
    y = tl.load(wb + 7, mask=m2, other=0.0) + try_
    z = tl.load(wb + 11, mask=m2, other=0.0) + trz
    jb = joints_ptr + ob2 * (NP * 3) + oj * 3
    tl.store(jb + 0, x, mask=m2)
    tl.store(jb + 1, y, mask=m2)
    tl.store(jb + 2, z, mask=m2)
    pb = pj_ptr + ob2 * (NP * 2) + oj * 2
    tl.store(pb + 0, s * (x + cx), mask=m2)
    tl.store(pb + 1, s * (y + cy), mask=m2)

    for r0 in range(0, NR, BLOCK_R):
        orr = r0 + tl.arange(0, BLOCK_R)
        mr = orr < NR
        ax = tl.zeros((BLOCK_B, BLOCK_R), dtype=x.dtype)
        ay = tl.zeros((BLOCK_B, BLOCK_R), dtype=x.dtype)
        az = tl.zeros((BLOCK_B, BLOCK_R), dtype=x.dtype)
        for u0 in range(0, NU, BLOCK_U):
            ou = u0 + tl.arange(0, BLOCK_U)
            mu = ou < NU
            uid = tl.load(uidx_ptr + ou, mask=mu, other=0)
            vb = verts_ptr + ob2 * (VM * 3) + uid[None, :] * 3
            mbu = mb[:, None] & mu[None, :]
            rm = tl.load(
                rout_ptr + orr[:, None] * NU + ou[None, :],
                mask=mr[:, None] & mu[None, :],
                other=0.0,
            )[None, :, :]
            ax += tl.sum(tl.load(vb + 0, mask=mbu, other=0.0)[:, None, :] * rm, axis=2)
            ay += tl.sum(tl.load(vb + 1, mask=mbu, other=0.0)[:, None, :] * rm, axis=2)
            az += tl.sum(tl.load(vb + 2, mask=mbu, other=0.0)[:, None, :] * rm, axis=2)
        r2 = orr[None, :]
        mjr = mb[:, None] & (r2 < E)
        jb = joints_ptr + ob2 * (NP * 3) + (NJ + r2) * 3
        tl.store(jb + 0, ax, mask=mjr)
        tl.store(jb + 1, ay, mask=mjr)
        tl.store(jb + 2, az, mask=mjr)
        pb = pj_ptr + ob2 * (NP * 2) + (NJ + r2) * 2
        tl.store(pb + 0, s * (ax + cx), mask=mjr)
        tl.store(pb + 1, s * (ay + cy), mask=mjr)
        mkr = mb[:, None] & (r2 >= E) & (r2 < NR)
        kb = kps_ptr + ob2 * (Q * 3) + (r2 - E) * 3
        tl.store(kb + 0, ax, mask=mkr)
        tl.store(kb + 1, ay, mask=mkr)
        tl.store(kb + 2, az, mask=mkr)
        pkb = pk_ptr + ob2 * (Q * 2) + (r2 - E) * 2
        tl.store(pkb + 0, s * (ax + cx), mask=mkr)
        tl.store(pkb + 1, s * (ay + cy), mask=mkr)


# At most this many vertex splits. Each split is one more (B, ...) partial row that the
# skeleton backward adds up (in chunks of its BLOCK_S, one round trip per chunk), and at
# small B the splits are what keeps SMs busy: 64 splits give B = 1 about 7 vertex tiles per
# program and 8 chunks of 8 partials per sum, instead of ~2 tiles and 264 serial adds.
MAX_SPLITS = 64


# The planar blend directions' vertex stride is V rounded up to this, so every (coefficient,
# component) row starts 64-byte aligned and Triton, which specialises integer arguments
# divisible by 16 at launch, can prove it: vector loads / 16-byte async copies, where the
# interleaved or an unpadded planar row (3 * 6890 floats) is only 4-byte aligned.
PLANAR_ALIGN = 16


def planar_stride(num_verts: int) -> int:
    """Vertex stride VP of the planar (KC, 3, VP) blend directions."""
    return -(-num_verts // PLANAR_ALIGN) * PLANAR_ALIGN


def num_splits(batch: int, num_verts: int, block_b: int, block_v: int, num_sms: int) -> int:
    """Vertex splits of a vertex-backward kernel (grid axis 1): about two programs per SM,
    at most MAX_SPLITS; each split owns a strided set of vertex tiles. Plain Python: the
    launchers and the AOT report's runtime-specialised signatures use the same number."""
    num_btiles = -(-batch // block_b)
    num_vtiles = -(-num_verts // block_v)
    return max(1, min(num_vtiles, MAX_SPLITS, -(-2 * num_sms // num_btiles)))


# Integer arguments of a real launch on the SMPL model with HMR's 19-keypoint regressor
# (hmr_fast.SMPL(keypoint_regressor="hmr"): 6890 vertices, K=4 skinning weights, 21 vertex
# joints, 1311 readout vertices = the keypoint-mode subset). Triton specialises integers
# equal to 1 (a constant) and divisible by 16 at launch; these give the AOT report the same
# specialisations (hmr-fast kernels-report --batches).
AOT_MODEL = dict(V=6890, L=10, NJ=24, NDEPTH=9, K=4, E=21, Q=19, NU=1311, NUM_SMS=132)


def runtime_ints(variant: dict, batch: int, keypoint_mode: bool) -> dict:
    """{int argument: value} of an SMPL variant's launch at this batch size and mode, with
    every output gradient present and dense (the 1-flags become constants, as at launch)."""
    m = AOT_MODEL
    v = m["NU"] if keypoint_mode else m["V"]
    np_, q = m["NJ"] + m["E"], m["Q"]
    c = variant["constexprs"]
    ints = dict(B=batch, V=v, VP=planar_stride(v), VM=v, L=m["L"], NJ=m["NJ"], NDEPTH=m["NDEPTH"],
                KC=m["L"] + 9 * (m["NJ"] - 1), K=m["K"], E=m["E"], Q=q, NU=m["NU"],
                HAS_T=1, HAS_CAM=1, HAS_GJ=1, HAS_GK=1, HAS_GPJ=1, HAS_GPK=1,
                gj_sb=np_ * 3, gj_sr=3, gj_sc=1, gk_sb=q * 3, gk_sr=3, gk_sc=1,
                gpj_sb=np_ * 2, gpj_sr=2, gpj_sc=1, gpk_sb=q * 2, gpk_sr=2, gpk_sc=1)
    # The layer's launch: global_orient and body_pose as separate dense tensors, and their
    # gradients likewise.
    s = 9 if c.get("ROT_INPUT", False) else 3
    ints.update(root_sb=s, body_sb=(m["NJ"] - 1) * s, groot_sb=s, gbody_sb=(m["NJ"] - 1) * s)
    if not c.get("POSE_PAIR", True):  # one (B, J*S) pose and gradient
        ints.update(root_sb=m["NJ"] * s, body_sb=m["NJ"] * s, groot_sb=m["NJ"] * s,
                    gbody_sb=m["NJ"] * s)
    has_gv = c.get("HAS_GV", False)
    ints.update(gv_sb=3 * v if has_gv else 0, gv_sv=3 if has_gv else 0, gv_sc=int(has_gv))
    if "BLOCK_V" in c:
        ints["NSPLIT"] = num_splits(batch, v, c["BLOCK_B"], c["BLOCK_V"], m["NUM_SMS"])
    else:  # the skeleton backward: the splits of a 16 x 16-tile vertex kernel
        ints["NSPLIT"] = ints["NSPLIT_C"] = num_splits(batch, v, 16, 16, m["NUM_SMS"])
    return {k: val for k, val in ints.items() if k in variant["signature"]}


def _ptr(dtype: str) -> str:
    return "*" + dtype


def skeleton_fwd_signature(dt: str) -> dict:
    return {
        "root_ptr": _ptr(dt),
        "body_ptr": _ptr(dt),
        "betas_ptr": _ptr(dt),
        "jt_ptr": _ptr(dt),
        "jsd_ptr": _ptr(dt),
        "parent_ptr": "*i32",
        "depth_ptr": "*i32",
        "coeffs_ptr": _ptr(dt),
        "world_ptr": _ptr(dt),
        "rel_ptr": _ptr(dt),
        "B": "i32",
        "L": "i32",
        "NJ": "i32",
        "NDEPTH": "i32",
        "root_sb": "i32",
        "body_sb": "i32",
        "ROT_INPUT": "constexpr",
        "BLOCK_B": "constexpr",
        "BLOCK_J": "constexpr",
        "BLOCK_L": "constexpr",
    }


def vertex_fwd_signature(dt: str) -> dict:
    return {
        "coeffs_ptr": _ptr(dt),
        "bdirs_ptr": _ptr(dt),
        "vt_ptr": _ptr(dt),
        "skin_idx_ptr": "*i64",
        "skin_w_ptr": _ptr(dt),
        "rel_ptr": _ptr(dt),
        "transl_ptr": _ptr(dt),
        "verts_ptr": _ptr(dt),
        "B": "i32",
        "V": "i32",
        "VP": "i32",
        "KC": "i32",
        "K": "i32",
        "NJ": "i32",
        "HAS_T": "i32",
        "USE_DOT": "constexpr",
        "PREC": "constexpr",
        "BLOCK_B": "constexpr",
        "BLOCK_V": "constexpr",
        "BLOCK_K": "constexpr",
    }


def readout_fwd_signature(dt: str) -> dict:
    return {
        "world_ptr": _ptr(dt),
        "transl_ptr": _ptr(dt),
        "verts_ptr": _ptr(dt),
        "uidx_ptr": "*i32",
        "rout_ptr": _ptr(dt),
        "camera_ptr": _ptr(dt),
        "joints_ptr": _ptr(dt),
        "kps_ptr": _ptr(dt),
        "pj_ptr": _ptr(dt),
        "pk_ptr": _ptr(dt),
        "B": "i32",
        "VM": "i32",
        "NJ": "i32",
        "E": "i32",
        "Q": "i32",
        "NU": "i32",
        "HAS_T": "i32",
        "HAS_CAM": "i32",
        "BLOCK_B": "constexpr",
        "BLOCK_J": "constexpr",
        "BLOCK_R": "constexpr",
        "BLOCK_U": "constexpr",
    }


def _variant(name, fn, signature, cfg, archs=None, **flags):
    """An AOT_VARIANTS entry; archs: the GPU_ARCHS it is launched on (None: all)."""
    cfg = dict(cfg)
    num_warps = cfg.pop("num_warps")
    return dict(
        name=name,
        fn=fn,
        signature=signature,
        constexprs={**cfg, **flags},
        num_warps=num_warps,
        archs=archs,
        runtime_ints=runtime_ints,
    )


def _aot_variants() -> list[dict]:
    out = []
    for dt in ("fp32", "fp64"):
        for rot in (False, True):
            out.append(
                _variant(
                    f"smpl_skeleton_fwd_{dt}_{'rotmat' if rot else 'aa'}",
                    _smpl_skeleton_fwd_kernel,
                    skeleton_fwd_signature(dt),
                    GPU_SKELETON_FWD if dt == "fp32" else GPU_SKELETON_FWD_F64,
                    ROT_INPUT=rot,
                )
            )
        out.append(
            _variant(
                f"smpl_readout_fwd_{dt}",
                _smpl_readout_fwd_kernel,
                readout_fwd_signature(dt),
                GPU_READOUT if dt == "fp32" else GPU_READOUT_F64,
            )
        )
    for (prec, arch), cfg in GPU_VERTEX_FWD.items():
        out.append(
            _variant(
                f"smpl_vertex_fwd_fp32_{prec}_sm{arch}",
                _smpl_vertex_fwd_kernel,
                vertex_fwd_signature("fp32"),
                cfg,
                archs=(arch,),
                USE_DOT=True,
                PREC=prec,
            )
        )
    out.append(
        _variant(
            "smpl_vertex_fwd_fp64",
            _smpl_vertex_fwd_kernel,
            vertex_fwd_signature("fp64"),
            GPU_VERTEX_FWD_F64,
            USE_DOT=False,
            PREC="ieee",
        )
    )
    return out


# Every (kernel, constexpr) combination the launchers in hmr_fast.ops.smpl_triton use on a GPU.
AOT_VARIANTS = _aot_variants()
