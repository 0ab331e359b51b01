"""Fused Triton SMPL: host launchers, autograd and torch.library registration.

Public API:

* ``smpl_forward_triton(model, betas, pose, transl, *, pose2rot, return_verts,
  keypoint_regressor, camera, precision=None, tf32=False, plan=None)`` -> (vertices or None,
  joints (B, 45, 3), keypoints or None, projected joints or None, projected keypoints or
  None). Differentiable w.r.t. betas, pose (axis-angle through Rodrigues, or the rotation
  matrices), transl and camera; the model constants get no gradient. ``pose`` may be the
  pair (global_orient, body_pose), read in place (the layer's call: no concatenation, and
  each part gets its own dense gradient).
* ``make_plan(model, keypoint_regressor, vertices=...)`` / ``get_plan`` (cached): everything
  the kernels need besides the per-call inputs. With ``vertices=False`` (keypoint mode) the
  plan holds ``reference.vertex_subset`` of the model over only the vertices the 21 vertex
  joints and the keypoint regressor's nonzero columns touch, so only those are skinned.
  ``smpl_forward_triton`` builds it through ``get_plan`` (cached on the tensors' data_ptr and
  version) unless ``plan=`` is given; under ``torch.compile(fullgraph=True)`` pass ``plan=``
  (get_plan is hidden from dynamo, which means a graph break).
* ``select_dot_precision(dtype, device_type, precision)`` / ``resolve_precision``: the
  precision choice below.

Launches, all of them (tests/test_launch_count.py counts torch's too): forward 3 (skeleton,
vertex, readout+projection), backward 4 (readout, vertex A-gradient, vertex
blend-coefficient gradient, skeleton), with no fill, copy or host sync around them: a missing
translation or camera is a kernel flag, missing output gradients are flags and present ones
are read through their strides (a `.sum()` loss's expanded gradients are not copied), and
the pose parts are read through their row strides (a batch-1 orientation: stride 0). See
kernels/smpl_fwd.py and kernels/smpl_bwd.py. The two vertex backward kernels accumulate
per-split partial sums in registers over their vertex tiles and store them once to
(NSPLIT, B, ...) buffers (so no zero fill, no read-modify-write); the skeleton backward
kernel sums them, BLOCK_S splits per round trip (no atomics, no torch reduction; the same
order every run). At most smpl_fwd.MAX_SPLITS splits. The kernels read the blend directions
in the plan's planar (KC, 3, VP) layout (TritonPlan.blend_planar). Sample tiles are on
grid axis 0 (2**31 - 1 programs). GPU block sizes depend on the precision and the GPU family
(sm_90 or the rest, read from the device's compute capability). For sm_90a and sm_80 under
triton 3.6 and 3.8 every variant compiles, and the default precisions without register
spills; the few spills left (opt-in precisions, fp64) are tabled with estimated costs in
BENCHMARKS.md (``hmr-fast kernels-report``, tests/test_kernels_report.py).

Ops: ``torch.ops.hmr_fast.smpl_fwd`` / ``smpl_bwd``, registered with
``torch.library.triton_op`` + ``wrap_triton`` when the kernels are compiled (CUDA), so
torch.compile and inductor see the kernels; the autograd formula is attached with
``torch.library.register_autograd``. Under ``TRITON_INTERPRET=1`` ``wrap_triton`` cannot trace
interpreted kernels (torch 2.14 returns them unchanged, 2.11 refuses them; see
``hmr_fast/ops/triton_launch.py``), so
the same bodies are registered as opaque ``torch.library.custom_op``s with a fake
implementation (the body with launches skipped for fake tensors).

Precision of the fp32 blend-shape GEMMs (``precision=``; forward, and the backward's
recomputation, A-gradient and coefficient-gradient dots alike):

* ``"tf32x3"`` (default for fp32 on CUDA): Triton's split-precision TF32, each fp32 operand
  split into a TF32 high part (round to nearest) and the fp32 remainder, three TF32
  tensor-core MMAs (hi*hi + hi*lo + lo*hi) per dot: wgmma on sm_90a, mma.sync on sm_80.
  Emulated on CPU (tests/test_smpl_triton.py::test_tf32x3_vertex_error_on_the_procedural_body:
  the same split and truncations, K in the kernel's blocks) on the procedural body, B = 64,
  betas ~ 1.5 sd, joint angles ~ 0.6 rad, three runs: blend GEMM error max 4.7-5.0e-8 m
  (exact-fp32 FMAs: 3.2-3.9e-8 m) and vertex error max 5.0-5.5e-7 m, identical to the
  all-fp32 pipeline's (the other fp32 steps dominate): far within the 2e-5 m budget.
* ``"ieee"``: exact fp32 products on CUDA cores (no tensor cores); vertex error the same
  5.0-5.5e-7 m. What the interpreter computes whatever it is told, hence the CPU default.
* ``"tf32"`` (also ``tf32=True``, kept for older callers): one TF32 MMA per dot; emulated
  vertex error max 2.0-2.6e-4 m (the MMA reads operands truncated to 10 mantissa bits), over
  budget, opt-in only.

Not yet measured on a GPU (no device in the session that wrote this). fp64 uses broadcast
multiply-sums instead of ``tl.dot`` and ignores ``precision``.
"""

from typing import NamedTuple, Optional

import torch

from hmr_fast.ops import reference
from hmr_fast.ops.dispatch import backward_is_recorded_or_batched
from hmr_fast.ops.kernels_loader import kernels_package
from hmr_fast.ops.reference import ModelTensors
from hmr_fast.ops.triton_launch import is_interpreted
from hmr_fast.ops.triton_launch import launch as _launch  # the tests count through this name

_OP_NAMESPACE = "hmr_fast"

kernels_package()
from hmr_fast.kernels import smpl_bwd as _kb  # noqa: E402
from hmr_fast.kernels import smpl_fwd as _kf  # noqa: E402

# Decided once, when the kernels were defined (TRITON_INTERPRET must be set before that).
INTERPRETED = is_interpreted(_kf._smpl_vertex_fwd_kernel)
_BLOCK_J = _kf.NUM_JOINT_SLOTS
# Tests set this to allocate every kernel output NaN-filled, so an element a kernel fails to
# write shows up as NaN.
FILL_OUTPUTS_WITH_NAN = False
# Tests set this to run the GPU block sizes (and vertex splits) under the interpreter.
USE_GPU_BLOCKS = False
_NUM_POSE_FEATURES_PER_JOINT = 9


class TritonPlan(NamedTuple):
    """Model constants and readout tables for one (model, keypoint regressor, mode).

    model: the ModelTensors the vertex kernels run over (the full model, or in keypoint mode
        its vertex subset); contiguous, skin_idx int64.
    parent: (J,) int32, the root's parent stored as 0.
    depth: (J,) int32 depth in the kinematic tree.
    desc: (32, 32) model dtype, desc[d, j] = 1 if joint d is in the subtree of j.
    ndepth: number of tree levels.
    u_idx: (NU,) int32 vertices (rows of the vertex buffer) the readout reads.
    vert_to_u: (Vm,) int32 readout slot of each vertex of the vertex buffer, -1 if none.
    rout: (E + Q, NU) readout matrix: E one-hot vertex-joint rows, then the keypoint regressor.
    num_keypoints: Q (0 without a keypoint regressor).
    vertices: True if the plan skins the full mesh (vertices are returned).
    blend_planar: (KC, 3, VP) model.blend_dirs in planar layout, what the kernels read: each
        component's row is contiguous over the vertices (coalesced loads), where the
        interleaved (KC, Vm * 3) one needs three stride-3 passes over the same lines; VP is
        Vm rounded up to 16 (zero padding) so that every row starts 64-byte aligned (vector
        loads). Built once per plan (get_plan caches it on the model tensors' identity and
        version).
    """

    model: ModelTensors
    parent: torch.Tensor
    depth: torch.Tensor
    desc: torch.Tensor
    ndepth: int
    u_idx: torch.Tensor
    vert_to_u: torch.Tensor
    rout: torch.Tensor
    num_keypoints: int
    vertices: bool
    blend_planar: torch.Tensor


def _tree_tables(parents: tuple, dtype: torch.dtype, device: torch.device):
    """(parent, depth, descendant matrix, number of levels) for the kernels."""
    levels = reference.tree_levels(tuple(parents))
    num_joints = len(parents)
    if num_joints > _BLOCK_J:
        raise ValueError(f"model.parents: at most {_BLOCK_J} joints supported, got {num_joints}")
    depth = [0] * num_joints
    for d, level in enumerate(levels):
        for j in level:
            depth[j] = d
    desc = torch.zeros(_BLOCK_J, _BLOCK_J, dtype=dtype)
    for d in range(num_joints):
        a = d
        while a >= 0:
            desc[d, a] = 1.0
            a = parents[a]
    parent = torch.tensor([max(p, 0) for p in parents], dtype=torch.int32)
    return (
        parent.to(device),
        torch.tensor(depth, dtype=torch.int32, device=device),
        desc.to(device),
        len(levels),
    )


def planar_blend_dirs(blend_dirs: torch.Tensor) -> torch.Tensor:
    """(KC, V * 3) interleaved [x0 y0 z0 x1 ...] -> (KC, 3, VP) planar, contiguous, the
    vertices zero-padded to VP = kernels' planar_stride(V) (aligned rows)."""
    num_coeffs, num_verts = blend_dirs.shape[0], blend_dirs.shape[1] // 3
    planar = blend_dirs.new_zeros(num_coeffs, 3, _kf.planar_stride(num_verts))
    planar[:, :, :num_verts] = blend_dirs.reshape(num_coeffs, num_verts, 3).transpose(1, 2)
    return planar


def interleaved_blend_dirs(blend_planar: torch.Tensor, num_verts: int) -> torch.Tensor:
    """The inverse of planar_blend_dirs: (KC, 3, VP) -> (KC, V * 3)."""
    return blend_planar[:, :, :num_verts].transpose(1, 2).reshape(blend_planar.shape[0], -1)


def _as_dense_regressor(regressor, num_vertices: int, dtype, device) -> torch.Tensor:
    if hasattr(regressor, "toarray"):  # scipy.sparse
        regressor = regressor.toarray()
    reg = torch.as_tensor(regressor).to(device=device, dtype=dtype)
    if reg.dim() != 2 or reg.shape[1] != num_vertices:
        raise ValueError(
            f"keypoint_regressor: expected shape (Q, {num_vertices}), got {tuple(reg.shape)}"
        )
    return reg


def _check_model(model) -> None:
    if not isinstance(model, ModelTensors):
        raise TypeError(f"model: expected reference.ModelTensors, got {type(model).__name__}")
    num_vertices = model.v_template.shape[0]
    if model.blend_dirs.dim() != 2 or model.blend_dirs.shape[1] != 3 * num_vertices:
        raise ValueError(
            f"model.blend_dirs: expected (L + P, {3 * num_vertices}), "
            f"got {tuple(model.blend_dirs.shape)}"
        )
    if model.skin_idx.shape != model.skin_w.shape or model.skin_idx.shape[0] != num_vertices:
        raise ValueError(
            f"model.skin_idx/skin_w: expected matching ({num_vertices}, K), got "
            f"{tuple(model.skin_idx.shape)} and {tuple(model.skin_w.shape)}"
        )


def make_plan(model: ModelTensors, keypoint_regressor=None, *, vertices: bool = True) -> TritonPlan:
    """Build the kernels' tables for a model (see TritonPlan).

    Args:
        model: the full model.
        keypoint_regressor: (Q, V) dense tensor/array, scipy.sparse matrix, or None.
        vertices: False for keypoint mode (skin only the vertices the readout needs).
    """
    _check_model(model)
    dtype, device = model.v_template.dtype, model.v_template.device
    num_vertices = model.v_template.shape[0]
    vj = model.vertex_joint_ids.to(device=device, dtype=torch.long).reshape(-1)
    if keypoint_regressor is not None:
        reg = _as_dense_regressor(keypoint_regressor, num_vertices, dtype, device)
        cols = torch.nonzero(reg.abs().sum(0) > 0).reshape(-1)
    else:
        reg = torch.zeros(0, num_vertices, dtype=dtype, device=device)
        cols = vj.new_zeros(0)
    ids = torch.unique(torch.cat([vj, cols]))
    num_u = ids.numel()
    pos = torch.full((num_vertices,), -1, dtype=torch.long, device=device)
    pos[ids] = torch.arange(num_u, device=device)
    rout = torch.zeros(vj.numel() + reg.shape[0], num_u, dtype=dtype, device=device)
    rout[torch.arange(vj.numel(), device=device), pos[vj]] = 1.0
    rout[vj.numel() :] = reg[:, ids]
    if vertices:
        run_model = model
        u_idx, vert_to_u = ids, pos
    else:
        run_model = reference.vertex_subset(model, ids)
        u_idx = vert_to_u = torch.arange(num_u, device=device)
    run_model = run_model._replace(
        v_template=run_model.v_template.contiguous(),
        blend_dirs=run_model.blend_dirs.contiguous(),
        joint_template=run_model.joint_template.contiguous(),
        joint_shapedirs=run_model.joint_shapedirs.contiguous(),
        skin_idx=run_model.skin_idx.to(torch.int64).contiguous(),
        skin_w=run_model.skin_w.contiguous(),
    )
    parent, depth, desc, ndepth = _tree_tables(tuple(model.parents), dtype, device)
    return TritonPlan(
        run_model,
        parent,
        depth,
        desc,
        ndepth,
        u_idx.to(torch.int32),
        vert_to_u.to(torch.int32),
        rout.contiguous(),
        int(reg.shape[0]),
        bool(vertices),
        planar_blend_dirs(run_model.blend_dirs),
    )


_PLAN_CACHE: dict = {}
_PLAN_CACHE_SIZE = 16


def _tensor_key(t):
    if not isinstance(t, torch.Tensor):
        return ("obj", id(t))
    return (t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device))


@torch.compiler.disable
def get_plan(model: ModelTensors, keypoint_regressor=None, *, vertices: bool = True) -> TritonPlan:
    """make_plan, cached on the tensors' storage, version, shape, dtype and device (so an
    in-place change of a model tensor rebuilds it)."""
    key = (
        tuple(_tensor_key(t) for t in model if isinstance(t, torch.Tensor)),
        tuple(model.parents),
        None if keypoint_regressor is None else _tensor_key(keypoint_regressor),
        bool(vertices),
    )
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        plan = make_plan(model, keypoint_regressor, vertices=vertices)
        if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
            _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
        _PLAN_CACHE[key] = plan
    return plan


# ----------------------------------------------------------------------------------- launch


def _require_launchable(*tensors: torch.Tensor) -> None:
    """Compiled Triton kernels need CUDA tensors; the interpreter runs on CPU tensors."""
    if INTERPRETED:
        return
    for t in tensors:
        if t.device.type != "cuda":
            raise RuntimeError(
                f"Triton SMPL kernels need CUDA tensors (got a tensor on {t.device}); to run "
                "them on CPU tensors set TRITON_INTERPRET=1 before hmr_fast.kernels is "
                "imported, or use the torch backend"
            )


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _interp_block_b(batch: int) -> int:
    # The interpreter pays per op per program: few, wide programs.
    return min(max(_pow2(batch), 16), 64)


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # only reached with USE_GPU_BLOCKS under the interpreter
    return torch.cuda.get_device_properties(device).multi_processor_count


# The GPU family (kernels' GPU_ARCHS) whose block sizes USE_GPU_BLOCKS runs under the
# interpreter; on CUDA the device's compute capability decides.
INTERPRETED_GPU_ARCH = 90
PRECISIONS = _kf.FP32_PRECISIONS


def _gpu_arch(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETED_GPU_ARCH
    return _kf.gpu_arch(torch.cuda.get_device_capability(device))


def resolve_precision(precision: str | None = None, tf32: bool = False) -> str | None:
    """Validate the user's precision choice; ``tf32=True`` is the old spelling of "tf32".

    Returns the requested precision, or None for "the default for the dtype and device".
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS} or None, got {precision!r}")
    if tf32:
        if precision not in (None, "tf32"):
            raise ValueError(f"precision: tf32=True contradicts precision={precision!r}")
        return "tf32"
    return precision


def select_dot_precision(
    dtype: torch.dtype, device_type: str, precision: str | None = None
) -> tuple[bool, str]:
    """(use tl.dot, tl.dot input_precision) for the blend-shape GEMMs.

    fp64 never uses tl.dot (exact FMA multiply-sums; `precision` does not apply). fp32 uses
    tl.dot with `precision`, by default "tf32x3" on CUDA (tensor cores at about fp32
    accuracy) and "ieee" elsewhere (the interpreter computes exact fp32 products whatever
    it is told).
    """
    if dtype != torch.float32:
        return False, "ieee"
    if precision is None:
        precision = "tf32x3" if device_type == "cuda" else "ieee"
    return True, precision


def _dot_settings(betas: torch.Tensor, precision: str) -> tuple[bool, str]:
    """The op's (USE_DOT, PREC) constexprs; `precision` was resolved by the caller."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    use_dot = betas.dtype == torch.float32
    return use_dot, precision if use_dot else "ieee"


def _launch_arch(device: torch.device) -> int | None:
    """The GPU family whose block sizes the launchers use; None: the interpreter's."""
    if INTERPRETED and not USE_GPU_BLOCKS:
        return None
    return _gpu_arch(device)


def forward_launches(batch: int, num_verts: int, use_dot: bool, prec: str,
                     arch: int | None) -> dict:
    """{kernel: (grid, block config)} of the three forward launches.

    arch: a GPU_ARCHS family, or None for the interpreter's few wide programs. Sample tiles
    are always on grid axis 0 (CUDA allows 2**31 - 1 programs there, 65535 on axes 1, 2).
    """
    if arch is None:
        bb = _interp_block_b(batch)
        sk = dict(BLOCK_B=bb, BLOCK_J=_BLOCK_J, BLOCK_L=16, num_warps=4)
        vx = dict(
            BLOCK_B=bb,
            BLOCK_V=min(1024, _pow2(num_verts)),
            BLOCK_K=64 if use_dot else 16,
            num_warps=4,
        )
        ro = dict(
            BLOCK_B=min(_pow2(batch), 64), BLOCK_J=_BLOCK_J, BLOCK_R=64, BLOCK_U=64, num_warps=4
        )
    else:
        sk = _kf.GPU_SKELETON_FWD if use_dot else _kf.GPU_SKELETON_FWD_F64
        vx = _kf.GPU_VERTEX_FWD[prec, arch] if use_dot else _kf.GPU_VERTEX_FWD_F64
        ro = _kf.GPU_READOUT if use_dot else _kf.GPU_READOUT_F64
    return {
        "skeleton": ((triton_cdiv(batch, sk["BLOCK_B"]),), sk),
        "vertex": (
            (triton_cdiv(batch, vx["BLOCK_B"]), triton_cdiv(num_verts, vx["BLOCK_V"])),
            vx,
        ),
        "readout": ((triton_cdiv(batch, ro["BLOCK_B"]),), ro),
    }


def backward_launches(batch: int, num_verts: int, use_dot: bool, prec: str, arch: int | None,
                      num_sms: int, num_coeffs: int) -> dict:
    """{kernel: (grid, block config)} of the four backward launches, plus the vertex splits
    ("split_rel", "split_coef"); arch as in forward_launches; num_coeffs: KC = L + 9 (J - 1).
    The coefficient kernel's grid axis 2 runs over BLOCK_KC blocks of the coefficients (2
    for SMPL's 217 with the GPU tables' 128)."""
    if arch is None:
        bb = _interp_block_b(batch)
        rb = dict(
            BLOCK_B=min(_pow2(batch), 64), BLOCK_J=_BLOCK_J, BLOCK_R=64, BLOCK_U=64, num_warps=4
        )
        va = dict(
            BLOCK_B=bb if use_dot else 16,
            BLOCK_V=min(128 if use_dot else 64, _pow2(num_verts)),
            BLOCK_K=64,
            BLOCK_J=_BLOCK_J,
            num_warps=4,
        )
        # BLOCK_KC=128 < KC: the interpreter runs the several-KC-block path too. fp64's
        # broadcast product is (BLOCK_B, BLOCK_V, BLOCK_KC): a narrower vertex tile.
        vc = dict(
            BLOCK_B=bb,
            BLOCK_V=min(1024 if use_dot else 64, _pow2(num_verts)),
            BLOCK_KC=128,
            num_warps=4,
        )
        sb = dict(BLOCK_B=bb, BLOCK_J=_BLOCK_J, BLOCK_L=16, BLOCK_S=4, num_warps=4)
        split_rel = split_coef = 1
    else:
        rb = _kb.GPU_READOUT_BWD
        va = _kb.GPU_VERTEX_BWD_REL[prec, arch] if use_dot else _kb.GPU_VERTEX_BWD_REL_F64
        vc = _kb.GPU_VERTEX_BWD_COEF[prec, arch] if use_dot else _kb.GPU_VERTEX_BWD_COEF_F64
        sb = _kb.GPU_SKELETON_BWD if use_dot else _kb.GPU_SKELETON_BWD_F64
        split_rel = _num_splits(batch, num_verts, va, num_sms)
        split_coef = _num_splits(batch, num_verts, vc, num_sms)
    return {
        "readout": ((triton_cdiv(batch, rb["BLOCK_B"]),), rb),
        "rel": ((triton_cdiv(batch, va["BLOCK_B"]), split_rel), va),
        "coef": (
            (
                triton_cdiv(batch, vc["BLOCK_B"]),
                split_coef,
                triton_cdiv(num_coeffs, vc["BLOCK_KC"]),
            ),
            vc,
        ),
        "skeleton": ((triton_cdiv(batch, sb["BLOCK_B"]),), sb),
        "split_rel": split_rel,
        "split_coef": split_coef,
    }


def _pose_parts(pose: torch.Tensor, pose_body: torch.Tensor | None, pose2rot: bool):
    """(root, body) the skeleton kernels read, as two row-strided (B, n) tensors.

    One (B, J*S) pose (pose_body None) is read as itself and its view from column S on;
    otherwise `pose` is the root's (B, S) and pose_body the other joints' (B, (J-1) S).
    Row strides may be 0 (an input expanded from batch 1); columns are contiguous.
    """
    if pose_body is not None:
        return pose, pose_body
    return pose, pose[:, 3 if pose2rot else 9 :]


def _fwd_impl(
    betas: torch.Tensor,
    pose: torch.Tensor,
    pose_body: Optional[torch.Tensor],  # noqa: UP045 (typing form: older torch schema parsing)
    transl: Optional[torch.Tensor],  # noqa: UP045
    camera: Optional[torch.Tensor],  # noqa: UP045
    v_template: torch.Tensor,
    blend_planar: torch.Tensor,  # (KC, 3, VP), the plan's
    joint_template: torch.Tensor,
    joint_shapedirs: torch.Tensor,
    skin_idx: torch.Tensor,
    skin_w: torch.Tensor,
    parent: torch.Tensor,
    depth: torch.Tensor,
    desc: torch.Tensor,
    u_idx: torch.Tensor,
    vert_to_u: torch.Tensor,
    rout: torch.Tensor,
    ndepth: int,
    num_keypoints: int,
    pose2rot: bool,
    precision: str,
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
]:
    """-> (verts (B, Vm, 3), joints (B, J+E, 3), keypoints (B, Q, 3), projected joints
    (B, J+E, 2), projected keypoints (B, Q, 2), world (B, J, 12), rel (B, J, 12),
    coeffs (B, L + 9 (J-1))); the last three are saved for the backward.

    pose: (B, J*S) (S = 3 axis-angle, 9 rotation matrices) with pose_body None, or the root's
    (B, S) with pose_body (B, (J-1) S) (see `_pose_parts`)."""
    root, body = _pose_parts(pose, pose_body, pose2rot)
    _require_launchable(betas, root, body, v_template, blend_planar, skin_idx, rout,
                        *[t for t in (transl, camera) if t is not None])
    batch, num_betas = betas.shape
    num_joints = joint_template.shape[0]
    num_verts, num_skin = skin_idx.shape
    num_coeffs = blend_planar.shape[0]
    num_rows, num_u = rout.shape
    num_kp = num_keypoints
    num_vj = num_rows - num_kp
    new = betas.new_empty
    coeffs = new(batch, num_coeffs)
    world = new(batch, num_joints, 12)
    rel = new(batch, num_joints, 12)
    verts = new(batch, num_verts, 3)
    joints = new(batch, num_joints + num_vj, 3)
    kps = new(batch, num_kp, 3)
    pj = new(batch, num_joints + num_vj, 2)
    pk = new(batch, num_kp, 2)
    if batch == 0:
        return verts, joints, kps, pj, pk, world, rel, coeffs
    if FILL_OUTPUTS_WITH_NAN:
        for t in (coeffs, world, rel, verts, joints, kps, pj, pk):
            t.fill_(float("nan"))
    use_dot, prec = _dot_settings(betas, precision)
    cfg = forward_launches(batch, num_verts, use_dot, prec, _launch_arch(betas.device))
    # A missing translation or camera is a runtime flag: no zero tensor to fill.
    transl_buf = betas if transl is None else transl
    camera_buf = betas if camera is None else camera
    has_t, has_cam = int(transl is not None), int(camera is not None)
    grid, sk = cfg["skeleton"]
    _launch(
        _kf._smpl_skeleton_fwd_kernel,
        grid,
        root,
        body,
        betas,
        joint_template,
        joint_shapedirs,
        parent,
        depth,
        coeffs,
        world,
        rel,
        batch,
        num_betas,
        num_joints,
        ndepth,
        root.stride(0),
        body.stride(0),
        ROT_INPUT=not pose2rot,
        **sk,
    )
    grid, vx = cfg["vertex"]
    _launch(
        _kf._smpl_vertex_fwd_kernel,
        grid,
        coeffs,
        blend_planar,
        v_template,
        skin_idx,
        skin_w,
        rel,
        transl_buf,
        verts,
        batch,
        num_verts,
        blend_planar.shape[2],
        num_coeffs,
        num_skin,
        num_joints,
        has_t,
        USE_DOT=use_dot,
        PREC=prec,
        **vx,
    )
    # Empty outputs still need a valid pointer.
    kps_buf = kps if num_kp else joints
    pk_buf = pk if num_kp else pj
    grid, ro = cfg["readout"]
    _launch(
        _kf._smpl_readout_fwd_kernel,
        grid,
        world,
        transl_buf,
        verts,
        u_idx,
        rout,
        camera_buf,
        joints,
        kps_buf,
        pj,
        pk_buf,
        batch,
        num_verts,
        num_joints,
        num_vj,
        num_kp,
        num_u,
        has_t,
        has_cam,
        **ro,
    )
    return verts, joints, kps, pj, pk, world, rel, coeffs


def _bwd_impl(
    g_verts: Optional[torch.Tensor],  # noqa: UP045 (typing form: older torch schema parsing)
    g_joints: Optional[torch.Tensor],  # noqa: UP045
    g_kps: Optional[torch.Tensor],  # noqa: UP045
    g_pj: Optional[torch.Tensor],  # noqa: UP045
    g_pk: Optional[torch.Tensor],  # noqa: UP045
    betas: torch.Tensor,
    pose: torch.Tensor,
    pose_body: Optional[torch.Tensor],  # noqa: UP045
    camera: Optional[torch.Tensor],  # noqa: UP045
    joints: torch.Tensor,
    kps: torch.Tensor,
    world: torch.Tensor,
    rel: torch.Tensor,
    coeffs: torch.Tensor,
    v_template: torch.Tensor,
    blend_planar: torch.Tensor,  # (KC, 3, VP), the plan's
    joint_template: torch.Tensor,
    joint_shapedirs: torch.Tensor,
    skin_idx: torch.Tensor,
    skin_w: torch.Tensor,
    parent: torch.Tensor,
    depth: torch.Tensor,
    desc: torch.Tensor,
    vert_to_u: torch.Tensor,
    rout: torch.Tensor,
    pose2rot: bool,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> grads of (betas (B, L), pose, pose_body, transl (B, 3), camera (B, 3)).

    The pose gradients have the pose inputs' shapes, dense: with pose_body None one (B, J*S)
    and an empty pose_body gradient; else the root's (B, S) and the body's (B, (J-1) S),
    separate tensors, so autograd hands them to leaf inputs without a copy.

    The output gradients may be None (autograd gave none: read as zeros) or strided (e.g.
    the expanded, all-stride-0 gradients of a `.sum()` loss): the kernels read them through
    their strides, so nothing is filled or copied here.
    """
    _require_launchable(betas, rel, blend_planar)
    batch, num_betas = betas.shape
    num_joints = joint_template.shape[0]
    num_verts, num_skin = skin_idx.shape
    num_coeffs = blend_planar.shape[0]
    num_rows, num_u = rout.shape
    num_kp = kps.shape[1]
    num_vj = num_rows - num_kp
    new = betas.new_empty
    g_betas = new(batch, num_betas)
    g_pose = new(pose.shape)
    pair = pose_body is not None
    g_body = new(pose_body.shape) if pair else new(0)
    # One pose: its whole gradient goes to g_pose (the kernel leaves the second pointer
    # alone; kernels/smpl_bwd.py says why it is not a view of g_pose).
    g_rest = g_body if pair else g_pose
    root, body = _pose_parts(pose, pose_body, pose2rot)
    g_transl = new(batch, 3)
    g_camera = new(batch, 3)
    if batch == 0:
        return g_betas, g_pose, g_body, g_transl, g_camera
    if FILL_OUTPUTS_WITH_NAN:
        for t in (g_betas, g_pose, g_body, g_transl, g_camera):
            t.fill_(float("nan"))
    use_dot, prec = _dot_settings(betas, precision)
    cfg = backward_launches(batch, num_verts, use_dot, prec, _launch_arch(betas.device),
                            _num_sms(betas.device), num_coeffs)
    split_rel, split_coef = cfg["split_rel"], cfg["split_coef"]
    gfk = new(batch, num_joints, 3)
    gu = new(batch, num_u, 3)
    gtr = new(batch, 3)
    grel = new(split_rel, batch, num_joints, 12)
    gtrv = new(split_rel, batch, 3)
    gcoef = new(split_coef, batch, num_coeffs)
    if FILL_OUTPUTS_WITH_NAN:
        for t in (gfk, gu, gtr, grel, gtrv, gcoef):
            t.fill_(float("nan"))
    kps_buf = kps if num_kp else joints
    strided = []  # (pointer, batch, row and component strides, present) per output gradient
    for g in (g_joints, g_kps if num_kp else None, g_pj, g_pk if num_kp else None):
        strided += [joints, 0, 0, 0, 0] if g is None else [g, *g.stride(), 1]
    grid, rb = cfg["readout"]
    _launch(
        _kb._smpl_readout_bwd_kernel,
        grid,
        *strided[0::5],
        joints,
        kps_buf,
        joints if camera is None else camera,
        rout,
        gfk,
        gu,
        g_camera,
        gtr,
        batch,
        num_joints,
        num_vj,
        num_kp,
        num_u,
        *[v for i in range(4) for v in strided[5 * i + 1 : 5 * i + 5]],
        int(camera is not None),
        **rb,
    )

    has_gv = g_verts is not None
    gv_buf = g_verts if has_gv else gu
    gv_strides = g_verts.stride() if has_gv else (0, 0, 0)
    grid, va = cfg["rel"]
    _launch(
        _kb._smpl_vertex_bwd_rel_kernel,
        grid,
        coeffs,
        blend_planar,
        v_template,
        skin_idx,
        skin_w,
        gv_buf,
        gu,
        vert_to_u,
        grel,
        gtrv,
        batch,
        num_verts,
        blend_planar.shape[2],
        num_coeffs,
        num_skin,
        num_joints,
        num_u,
        split_rel,
        *gv_strides,
        HAS_GV=has_gv,
        USE_DOT=use_dot,
        PREC=prec,
        **va,
    )
    grid, vc = cfg["coef"]
    _launch(
        _kb._smpl_vertex_bwd_coef_kernel,
        grid,
        blend_planar,
        skin_idx,
        skin_w,
        rel,
        gv_buf,
        gu,
        vert_to_u,
        gcoef,
        batch,
        num_verts,
        blend_planar.shape[2],
        num_coeffs,
        num_skin,
        num_joints,
        num_u,
        split_coef,
        *gv_strides,
        HAS_GV=has_gv,
        USE_DOT=use_dot,
        PREC=prec,
        **vc,
    )

    grid, sb = cfg["skeleton"]
    _launch(
        _kb._smpl_skeleton_bwd_kernel,
        grid,
        root,
        body,
        betas,
        joint_template,
        joint_shapedirs,
        parent,
        depth,
        desc,
        world,
        gcoef,
        grel,
        gtrv,
        gfk,
        gtr,
        g_betas,
        g_pose,
        g_rest,
        g_transl,
        batch,
        num_betas,
        num_joints,
        split_rel,
        split_coef,
        root.stride(0),
        body.stride(0),
        g_pose.stride(0),
        g_rest.stride(0),
        ROT_INPUT=not pose2rot,
        POSE_PAIR=pair,
        USE_DOT=use_dot,
        **sb,
    )
    return g_betas, g_pose, g_body, g_transl, g_camera


def _num_splits(batch: int, num_verts: int, cfg: dict, num_sms: int) -> int:
    return _kf.num_splits(batch, num_verts, cfg["BLOCK_B"], cfg["BLOCK_V"], num_sms)


def _plain_outputs(betas, pose, pose_body, transl, camera, model: ModelTensors, u_idx, rout,
                   num_kp, pose2rot):
    """What the smpl_fwd op computes, in plain differentiable torch ops (its oracle form).

    model: the plan's ModelTensors (the mesh, or in keypoint mode its vertex subset); u_idx and
    rout: the plan's readout rows and matrix. Returns (verts, joints, kps, pj, pk).
    """
    batch = betas.shape[0]
    if pose_body is not None:
        pose = torch.cat([pose, pose_body], dim=1)
    if transl is None:
        transl = betas.new_zeros(batch, 3)
    if camera is None:  # the op's projections are then zero
        camera = betas.new_zeros(batch, 3)
    if pose2rot:
        rot = reference.rodrigues(pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
    else:
        rot = pose.reshape(batch, -1, 3, 3)
    rest = reference.rest_joints(betas, model.joint_template, model.joint_shapedirs)
    v_posed = reference.blend_shapes(betas, reference.pose_feature(rot), model.v_template,
                                     model.blend_dirs)
    posed, rel = reference.forward_kinematics(rot, rest, model.parents)
    weights = reference.dense_skinning_weights(model.skin_idx, model.skin_w, rel.shape[1])
    verts = reference.skin_dense(v_posed, rel, weights) + transl[:, None]
    readout = torch.einsum("qu,buc->bqc", rout, verts[:, u_idx.long()])
    num_vertex_joints = rout.shape[0] - num_kp
    joints = torch.cat([posed + transl[:, None], readout[:, :num_vertex_joints]], dim=1)
    kps = readout[:, num_vertex_joints:]
    return (verts, joints, kps, reference.weak_perspective(joints, camera),
            reference.weak_perspective(kps, camera))


def _plain_backward(ctx, grads_out) -> tuple:
    """The op's gradients for (betas, pose, pose_body, transl, camera) by differentiating
    `_plain_outputs` at the saved inputs: recorded when create_graph=True (double backward),
    plain tensors when a transform batches the backward."""
    (betas, pose, pose_body, camera, joints, kps, _world, _rel, _coeffs, vt, bd, jt, jsd, si,
     sw, parent, _depth, _desc, _vert_to_u, rout, transl, u_idx) = ctx.saved_tensors
    parents = (-1,) + tuple(int(p) for p in parent[1:].tolist())
    model = ModelTensors(vt, interleaved_blend_dirs(bd, vt.shape[0]), jt, jsd, parents, si, sw,
                         u_idx.new_zeros(0).long())
    inputs = (betas, pose, pose_body, transl, camera)
    wanted = [i for i in range(5) if ctx.needs_input_grad[i] and inputs[i] is not None]
    with torch.enable_grad():
        outs = _plain_outputs(*inputs, model, u_idx, rout, kps.shape[1], ctx.pose2rot)
    pairs = [(o, g) for o, g in zip(outs, grads_out) if g is not None and o.requires_grad]
    if not wanted or not pairs:
        return (None,) * 5
    grads = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted],
                                [g for _, g in pairs], create_graph=torch.is_grad_enabled(),
                                allow_unused=True)
    result = [None] * 5
    for i, g in zip(wanted, grads):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(result)


def _register():
    """Register hmr_fast::smpl_fwd / smpl_bwd and the autograd formula."""
    if INTERPRETED:
        fwd = torch.library.custom_op(f"{_OP_NAMESPACE}::smpl_fwd", mutates_args=())(_fwd_impl)
        fwd.register_fake(_fwd_impl)
        bwd = torch.library.custom_op(f"{_OP_NAMESPACE}::smpl_bwd", mutates_args=())(_bwd_impl)
        bwd.register_fake(_bwd_impl)
    else:
        fwd = torch.library.triton_op(f"{_OP_NAMESPACE}::smpl_fwd", mutates_args=())(_fwd_impl)
        bwd = torch.library.triton_op(f"{_OP_NAMESPACE}::smpl_bwd", mutates_args=())(_bwd_impl)

    def setup_context(ctx, inputs, output):
        (
            betas,
            pose,
            pose_body,
            transl,
            camera,
            vt,
            bd,
            jt,
            jsd,
            si,
            sw,
            parent,
            depth,
            desc,
            u_idx,
            vert_to_u,
            rout,
            _ndepth,
            _num_kp,
            pose2rot,
            precision,
        ) = inputs
        _verts, joints, kps, _pj, _pk, world, rel, coeffs = output
        ctx.mark_non_differentiable(world, rel, coeffs)
        ctx.set_materialize_grads(False)
        ctx.pose2rot = pose2rot
        ctx.precision = precision
        ctx.save_for_backward(
            betas,
            pose,
            pose_body,
            camera,
            joints,
            kps,
            world,
            rel,
            coeffs,
            vt,
            bd,
            jt,
            jsd,
            si,
            sw,
            parent,
            depth,
            desc,
            vert_to_u,
            rout,
            transl,
            u_idx,
        )

    def backward(ctx, g_verts, g_joints, g_kps, g_pj, g_pk, _gw, _gr, _gc):
        grads_out = (g_verts, g_joints, g_kps, g_pj, g_pk)
        if backward_is_recorded_or_batched(*grads_out):
            return _plain_backward(ctx, grads_out) + (None,) * 16
        (
            betas,
            pose,
            pose_body,
            camera,
            joints,
            kps,
            world,
            rel,
            coeffs,
            vt,
            bd,
            jt,
            jsd,
            si,
            sw,
            parent,
            depth,
            desc,
            vert_to_u,
            rout,
            transl,
            _u_idx,
        ) = ctx.saved_tensors

        # Missing and strided (e.g. expanded) gradients go to the kernels as they are.
        g_betas, g_pose, g_body, g_transl, g_camera = torch.ops.hmr_fast.smpl_bwd(
            g_verts,
            g_joints,
            g_kps,
            g_pj,
            g_pk,
            betas,
            pose,
            pose_body,
            camera,
            joints,
            kps,
            world,
            rel,
            coeffs,
            vt,
            bd,
            jt,
            jsd,
            si,
            sw,
            parent,
            depth,
            desc,
            vert_to_u,
            rout,
            ctx.pose2rot,
            ctx.precision,
        )
        return (
            g_betas,
            g_pose,
            None if pose_body is None else g_body,
            None if transl is None else g_transl,
            None if camera is None else g_camera,
        ) + (None,) * 16

    torch.library.register_autograd(
        f"{_OP_NAMESPACE}::smpl_fwd", backward, setup_context=setup_context
    )
    return fwd, bwd


_smpl_fwd_op, _smpl_bwd_op = _register()


# ------------------------------------------------------------------------------ public entry


def _check_tensor(name: str, t, shape: tuple, dtype: torch.dtype, device: torch.device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(t)}")
    if t.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the model's), got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device} (the model's), got {t.device}")


def _dim(t) -> int:
    return t.dim() if isinstance(t, torch.Tensor) else -1


def _columns_dense(t: torch.Tensor) -> torch.Tensor:
    """t (B, n) with contiguous columns, as the kernels read it; the row stride may be
    anything (0 when expanded from batch 1), so only an odd layout is copied."""
    return t if t.shape[1] <= 1 or t.stride(1) == 1 else t.contiguous()


def smpl_forward_triton(
    model: ModelTensors,
    betas: torch.Tensor,
    pose: torch.Tensor,
    transl: torch.Tensor | None = None,
    *,
    pose2rot: bool,
    return_verts: bool,
    keypoint_regressor: torch.Tensor | None = None,
    camera: torch.Tensor | None = None,
    precision: str | None = None,
    tf32: bool = False,
    plan: TritonPlan | None = None,
):
    """SMPL forward with the fused Triton kernels (differentiable).

    Args:
        model: the full model (ModelTensors).
        betas: (B, L).
        pose: (B, J*3) axis-angle (also (B, J, 3)) if pose2rot, else (B, J, 3, 3) rotation
            matrices (also (B, J, 9)); or a pair (global_orient (B, S), body_pose
            (B, (J-1) S)), S = 3 or 9, read in place: no concatenation, and each part's
            gradient is its own dense tensor.
        transl: (B, 3) or None.
        pose2rot: axis-angle input.
        return_verts: False = keypoint mode: only the vertices the 21 vertex joints and the
            keypoint regressor read are skinned (the plan holds that vertex subset).
        keypoint_regressor: (Q, V) over the full mesh, or None.
        camera: (B, 3) weak-perspective [s, tx, ty] or None.
        precision: fp32 blend-shape GEMM precision, "tf32x3" | "ieee" | "tf32", or None for
            the default ("tf32x3" on CUDA, see the module docstring); fp64 ignores it.
        tf32: True is the same as precision="tf32" (backwards compatibility).
        plan: a TritonPlan from make_plan/get_plan for this model, regressor and mode; built
            and cached here when None.
    Returns:
        vertices (B, V, 3) or None, joints (B, J + 21, 3), keypoints (B, Q, 3) or None,
        projected joints (B, J + 21, 2) or None, projected keypoints (B, Q, 2) or None.
    """
    precision = resolve_precision(precision, tf32)
    if torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (*model, keypoint_regressor)
    ):
        # The kernels return no gradient for the constants; silently dropping it would be
        # wrong. The SMPL layer takes its plain torch path in this case.
        raise ValueError(
            "model: the Triton kernels give no gradient for the model constants, and one of "
            "them requires grad; use hmr_fast.SMPL (which falls back to plain torch) or "
            "detach the constants"
        )
    if plan is None:
        _check_model(model)
        plan = get_plan(model, keypoint_regressor, vertices=return_verts)
    elif plan.vertices != bool(return_verts):
        raise ValueError(
            f"plan: built with vertices={plan.vertices} but return_verts={return_verts}"
        )
    m = plan.model
    dtype, device = m.v_template.dtype, m.v_template.device
    num_joints = m.joint_template.shape[0]
    if not isinstance(betas, torch.Tensor) or betas.dim() != 2:
        raise ValueError(
            f"betas: expected shape (B, {m.joint_shapedirs.shape[2]}), got "
            f"{tuple(betas.shape) if isinstance(betas, torch.Tensor) else betas}"
        )
    batch = betas.shape[0]
    _check_tensor("betas", betas, (batch, m.joint_shapedirs.shape[2]), dtype, device)
    size = 3 if pose2rot else 9
    if isinstance(pose, (tuple, list)):
        if len(pose) != 2:
            raise ValueError(f"pose: expected a tensor or a pair (global_orient, body_pose), "
                             f"got a sequence of {len(pose)}")
        _check_tensor("pose[0] (global_orient)", pose[0], (batch, size), dtype, device)
        _check_tensor("pose[1] (body_pose)", pose[1], (batch, (num_joints - 1) * size), dtype,
                      device)
        pose_root, pose_body = (_columns_dense(t) for t in pose)
    else:
        if pose2rot:
            want = (batch, num_joints, 3) if _dim(pose) == 3 else (batch, num_joints * 3)
        else:
            want = (batch, num_joints, 9) if _dim(pose) == 3 else (batch, num_joints, 3, 3)
        _check_tensor("pose", pose, want, dtype, device)
        pose_root, pose_body = _columns_dense(pose.reshape(batch, num_joints * size)), None
    # A missing translation or camera stays None (a kernel flag, no zero fill); contiguous()
    # copies only inputs that are not (e.g. expanded from batch 1).
    if transl is not None:
        _check_tensor("transl", transl, (batch, 3), dtype, device)
        transl = transl.contiguous()
    if camera is not None:
        _check_tensor("camera", camera, (batch, 3), dtype, device)
    verts, joints, kps, pj, pk, _w, _r, _c = torch.ops.hmr_fast.smpl_fwd(
        betas.contiguous(),
        pose_root,
        pose_body,
        transl,
        None if camera is None else camera.contiguous(),
        m.v_template,
        plan.blend_planar,
        m.joint_template,
        m.joint_shapedirs,
        m.skin_idx,
        m.skin_w,
        plan.parent,
        plan.depth,
        plan.desc,
        plan.u_idx,
        plan.vert_to_u,
        plan.rout,
        plan.ndepth,
        plan.num_keypoints,
        bool(pose2rot),
        select_dot_precision(dtype, device.type, precision)[1],
    )
    has_kp = keypoint_regressor is not None or plan.num_keypoints > 0
    return (
        verts if return_verts else None,
        joints,
        kps if has_kp else None,
        pj if camera is not None else None,
        pk if (camera is not None and has_kp) else None,
    )
