"""Plain-PyTorch SMPL math: the oracle for the Triton kernels and the CPU path of the layer.

Every function is small and pure, with the tensor shapes in its docstring (B samples,
V vertices, J = 24 joints, L shape coefficients, K skinning weights per vertex,
P = 207 pose-corrective inputs). The math is SMPL's (Loper et al. 2015) exactly as smplx
computes it, reorganised to do less work:

* rest joints come from a precomputed joint-shape regressor (J_regressor · shapedirs), so
  the shaped mesh is never regressed;
* shape and pose blend shapes are one GEMM over [β, pose feature];
* forward kinematics runs level by level over the tree (9 levels, not 23 steps);
* skinning reads each vertex's few nonzero weights, not a dense (V, J) product.

Called plainly, every function here is plain PyTorch: the oracle. The layer's CPU path calls
the same functions with two opt-ins: `ModelTensors.dense_blend` routes the blend GEMM through
oneDNN, and ``fused_cpu=True`` skins with the numba loops of `skin_cpu` and, when no gradient
is needed, replaces everything before the GEMM with one numba call (`skeleton_cpu`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from hmr_fast.ops import skin_cpu
from hmr_fast.ops.dispatch import backward_must_be_plain, plain_reason
from hmr_fast.ops.kernels_loader import kernels_package
from hmr_fast.ops.tree import tree_levels  # noqa: F401  (re-exported: smpl, smpl_triton)

kernels_package()  # hmr_fast.kernels also in a source checkout that was not pip-installed
# The Rodrigues constants (smplx's 1e-8 shift, the Taylor threshold) have one source, shared
# with the Triton kernels and the numba skeleton: kernels/constants.py (imports nothing).
from hmr_fast.kernels.constants import SMALL_ANGLE_SQ as _SMALL_ANGLE_SQ  # noqa: E402
from hmr_fast.kernels.constants import SMPLX_ANGLE_EPS as _SMPLX_ANGLE_EPS  # noqa: E402


class ModelTensors(NamedTuple):
    """The constants an SMPL forward reads, in the layout every backend shares.

    v_template: (V, 3).
    blend_dirs: (L + P, V * 3): L shape directions, then the 207 pose correctives, each row
        flattened vertex-major (index 3 * v + c), as smplx's posedirs.
    joint_template: (J, 3) = J_regressor · v_template.
    joint_shapedirs: (J, 3, L) = J_regressor · shapedirs.
    parents: length-J tuple, parents[0] = -1.
    skin_idx: (V, K) int64 joint ids of each vertex's nonzero skinning weights.
    skin_w: (V, K) those weights, zero-padded.
    vertex_joint_ids: (E,) int64 mesh vertices appended to the joints (smplx's 21).
    dense_blend: optional (V * 3, 1 + L + P) = [v_template | blend_dirs^T], contiguous: the
        weight of `blend_shapes`' oneDNN GEMM on CPU (`dense_blend_weight`); None = addmm.
    """

    v_template: torch.Tensor
    blend_dirs: torch.Tensor
    joint_template: torch.Tensor
    joint_shapedirs: torch.Tensor
    parents: tuple
    skin_idx: torch.Tensor
    skin_w: torch.Tensor
    vertex_joint_ids: torch.Tensor
    dense_blend: torch.Tensor | None = None


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle to rotation matrices, smplx-compatible and differentiable at zero.

    R = I + sin(a)/a · K + (1 - cos a)/a² · K², with K the cross-product matrix of the
    (1e-8-shifted, as in smplx) axis-angle vector and a its norm.

    Args:
        axis_angle: (N, 3).
    Returns:
        (N, 3, 3) rotation matrices.
    """
    shifted = axis_angle + _SMPLX_ANGLE_EPS
    angle_sq = (shifted * shifted).sum(-1)
    small = angle_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    angle = safe_sq.sqrt()
    half_sin = torch.sin(0.5 * angle)
    # (1 - cos a)/a² written as 2 sin²(a/2)/a² stays accurate for small a in fp32.
    sin_term = torch.where(small, 1.0 - angle_sq / 6.0 + angle_sq * angle_sq / 120.0,
                           torch.sin(angle) / angle)
    cos_term = torch.where(small, 0.5 - angle_sq / 24.0 + angle_sq * angle_sq / 720.0,
                           2.0 * half_sin * half_sin / safe_sq)
    # smplx builds K from the unshifted vector over the shifted norm: K(θ)/a.
    kx, ky, kz = axis_angle.unbind(-1)
    zeros = torch.zeros_like(kx)
    k = torch.stack([zeros, -kz, ky, kz, zeros, -kx, -ky, kx, zeros], dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_term[:, None, None] * k + cos_term[:, None, None] * (k @ k)


def pose_feature(rot_mats: torch.Tensor) -> torch.Tensor:
    """Pose-corrective input vec(R_j - I) for the 23 non-root joints.

    Args:
        rot_mats: (B, 24, 3, 3).
    Returns:
        (B, 207).
    """
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def rest_joints(betas: torch.Tensor, joint_template: torch.Tensor,
                joint_shapedirs: torch.Tensor) -> torch.Tensor:
    """Rest-pose joints from the precomputed joint-shape regressor.

    J_regressor · (v_template + shapedirs · β) = J_template + J_shapedirs · β.

    Args:
        betas: (B, L).
        joint_template: (J, 3) = J_regressor · v_template.
        joint_shapedirs: (J, 3, L) = J_regressor · shapedirs.
    Returns:
        (B, J, 3).
    """
    return joint_template + torch.einsum("bl,jcl->bjc", betas, joint_shapedirs)


def blend_shapes(betas: torch.Tensor, pose_feat: torch.Tensor, v_template: torch.Tensor,
                 blend_dirs: torch.Tensor, dense_blend: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Shape and pose blend shapes as one GEMM over [β, pose feature].

    Args:
        betas: (B, L).
        pose_feat: (B, P).
        v_template: (V, 3).
        blend_dirs: (L + P, V * 3), shapedirs rows first, then smplx's posedirs layout.
        dense_blend: None, or `dense_blend_weight(v_template, blend_dirs)`: the same GEMM
            then runs through oneDNN where `onednn_gemm_usable` says it can.
    Returns:
        v_posed: (B, V, 3), stored vertex-major ((V, 3, B) in memory) for `skin`.
    """
    coeffs = torch.cat([betas, pose_feat], dim=1)
    if (dense_blend is not None and onednn_gemm_usable(coeffs)
            and plain_reason([coeffs], [v_template, blend_dirs, dense_blend]) is None):
        offsets = _OneDNNBlend.apply(coeffs, dense_blend, blend_dirs)
    else:
        # Transposed GEMM: the (V*3, B) result is the layout skinning wants.
        offsets = torch.addmm(v_template.reshape(-1, 1), blend_dirs.t(), coeffs.t())
    return offsets.view(-1, 3, coeffs.shape[0]).permute(2, 0, 1)


def blend_planar(augmented: torch.Tensor, v_template: torch.Tensor, blend_dirs: torch.Tensor,
                 dense_blend: torch.Tensor | None = None) -> torch.Tensor:
    """`blend_shapes` over prebuilt coefficient rows, without autograd (the fused CPU path).

    Args:
        augmented: (B, 1 + L + P) = [1 | β | pose feature], contiguous.
        v_template, blend_dirs, dense_blend: as in `blend_shapes`.
    Returns:
        (V * 3, B) contiguous: v_posed as the planar (V, 3, B) layout of `skin_cpu`.
    """
    if dense_blend is not None and onednn_gemm_usable(augmented):
        return _onednn_blend(augmented, dense_blend)
    return torch.addmm(v_template.reshape(-1, 1), blend_dirs.t(), augmented[:, 1:].t())


def dense_blend_weight(v_template: torch.Tensor, blend_dirs: torch.Tensor) -> torch.Tensor:
    """[v_template | blend_dirs^T]: (V * 3, 1 + L + P), contiguous (the oneDNN GEMM weight)."""
    return torch.cat([v_template.reshape(-1, 1), blend_dirs.t()], dim=1).contiguous()


def onednn_gemm_usable(coeffs: torch.Tensor) -> bool:
    """Whether `blend_shapes` may take the oneDNN GEMM for these coefficients.

    On this project's AVX-512 AMD machine MKL's sgemm runs its generic path, while oneDNN
    dispatches on CPU features: the (20670 x 218) x (218 x 64) blend GEMM takes 1.9 ms against
    MKL's 3.9 ms, and its transposed backward 1.4 ms against 3.4 ms (2 threads, 2026-11-25).
    fp32 CPU tensors only (oneDNN has no fp64 GEMM); traced code keeps the plain addmm.
    """
    return (coeffs.dtype == torch.float32 and coeffs.device.type == "cpu"
            and _onednn_linear() is not None and not torch.compiler.is_compiling())


@functools.cache
def _onednn_linear():
    """torch's oneDNN linear op (y = x · Wᵀ, any leading sizes), or None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None
    return lambda x, weight: op(x, weight, None, "none", [], "")


def _onednn_blend(augmented: torch.Tensor, dense_blend: torch.Tensor) -> torch.Tensor:
    """(V*3, B) = dense_blend · augmentedᵀ through oneDNN, for augmented = [1 | coeffs]."""
    # y = x · Wᵀ with x = dense_blend (V*3, 1+L+P) and W = augmented (B, 1+L+P).
    return _onednn_linear()(dense_blend, augmented)


class _OneDNNBlend(torch.autograd.Function):
    """offsets (V*3, B) = [1 | coeffs] · dense_blendᵀ, transposed, through oneDNN.

    The constants get no gradient (they are the model file's buffers); the coefficients'
    gradient is blend_dirs · g, one more oneDNN GEMM over the same weights.
    """

    @staticmethod
    def forward(ctx, coeffs, dense_blend, blend_dirs):
        ones = coeffs.new_ones(coeffs.shape[0], 1)
        offsets = _onednn_blend(torch.cat([ones, coeffs], dim=1), dense_blend)
        ctx.save_for_backward(blend_dirs)
        return offsets

    @staticmethod
    def backward(ctx, grad_offsets):
        (blend_dirs,) = ctx.saved_tensors
        grad_coeffs = None
        if ctx.needs_input_grad[0] and backward_must_be_plain(grad_offsets):
            # Recorded (double backward) or batched: the same product in plain torch.
            grad_coeffs = (blend_dirs @ grad_offsets).t()
        elif ctx.needs_input_grad[0]:
            # (L+P, B) = blend_dirs (L+P, V*3) · g (V*3, B): y = x · Wᵀ with W = gᵀ.
            grad = grad_offsets.contiguous()
            grad_coeffs = _onednn_linear()(blend_dirs, grad.t()).t()
        return grad_coeffs, None, None


@functools.lru_cache(maxsize=16)
def _level_plan(parents: tuple[int, ...]):
    """Per level: (joint ids, their parents' positions in the breadth-first order), and the
    permutation from breadth-first order back to joint order."""
    levels = tree_levels(parents)
    bfs = [j for level in levels for j in level]
    pos = {j: i for i, j in enumerate(bfs)}
    steps = tuple((level, tuple(pos[parents[j]] for j in level)) for level in levels[1:])
    return levels[0], steps, tuple(pos[j] for j in range(len(parents)))


def forward_kinematics(rot_mats: torch.Tensor, joints: torch.Tensor, parents: tuple[int, ...]):
    """World transforms by composing local ones level by level over the tree.

    G_j = G_parent(j) · [R_j | J_j - J_parent(j)];  A_j = [G_j^R | G_j^t - G_j^R J_j].

    Args:
        rot_mats: (B, J, 3, 3) local rotations.
        joints: (B, J, 3) rest joints.
        parents: length J tuple, parents[0] = -1.
    Returns:
        posed_joints: (B, J, 3) world joint positions (G_j^t).
        rel_transforms: (B, J, 3, 4) skinning transforms A_j.
    """
    roots, steps, to_joint_order = _level_plan(tuple(parents))
    batch, num_joints = joints.shape[:2]
    rel_joints = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, list(parents[1:])]], dim=1)
    # Local transforms as (B, J, 4, 4) so one matmul composes rotation and translation.
    bottom = joints.new_zeros(batch, num_joints, 1, 4)
    bottom[..., 3] = 1.0
    local = torch.cat([torch.cat([rot_mats, rel_joints[..., None]], dim=-1), bottom], dim=-2)
    world = local[:, list(roots), :3]  # (B, n, 3, 4), grows in breadth-first order
    for level, parent_pos in steps:
        world = torch.cat([world, world[:, list(parent_pos)] @ local[:, list(level)]], dim=1)
    world = world[:, list(to_joint_order)]
    rot, posed_joints = world[..., :3], world[..., 3]
    corr = posed_joints - (rot @ joints[..., None])[..., 0]
    return posed_joints, torch.cat([rot, corr[..., None]], dim=-1)


def skin(v_posed: torch.Tensor, rel_transforms: torch.Tensor, skin_idx: torch.Tensor,
         skin_w: torch.Tensor, transl: torch.Tensor | None = None,
         fused_cpu: bool = False) -> torch.Tensor:
    """Linear blend skinning over each vertex's K nonzero weights.

    v_i = Σ_k w_ik · A_{j_ik} · [v_posed_i; 1].

    Args:
        v_posed: (B, V, 3); fastest when stored vertex-major, as `blend_shapes` leaves it.
        rel_transforms: (B, J, 3, 4).
        skin_idx: (V, K) int64 joint ids of the nonzero weights.
        skin_w: (V, K) the weights (zero padding where a vertex has fewer than K).
        transl: (B, 3) added to every vertex, or None.
        fused_cpu: take the fused numba loops of `skin_cpu` where they can run (the layer's
            CPU path); False keeps this module's torch composition (the oracle).
    Returns:
        (B, V, 3), contiguous.
    """
    if plain_reason([v_posed, rel_transforms, transl], [skin_w]) is not None:
        # Traced, transformed, forward-mode or learnable weights: plain dense skinning.
        weights = dense_skinning_weights(skin_idx, skin_w, rel_transforms.shape[1])
        vertices = skin_dense(v_posed, rel_transforms, weights)
        return vertices if transl is None else vertices + transl[:, None]
    if fused_cpu and skin_cpu.usable(v_posed):
        return _SkinCPU.apply(v_posed, rel_transforms, skin_idx, skin_w, transl)
    return _Skin.apply(v_posed, rel_transforms, skin_idx, skin_w, transl)


def _blended_column(skin_idx, skin_w, table, m: int) -> torch.Tensor:
    """Column m of every vertex's blended transform Σ_k w_ik A_{j_ik}[:, m], as (V, 3, B).

    One weighted `embedding_bag` over the (J, 3·B) table of column m: a fused gather-and-sum
    over the compact weights.
    """
    blended = F.embedding_bag(skin_idx, table[m], per_sample_weights=skin_w, mode="sum")
    return blended.view(skin_idx.shape[0], 3, -1)


class _Skin(torch.autograd.Function):
    """Skinning on planar (V, 3, B) slabs with a hand-written backward.

    Going column by column keeps each temporary at (V, 3, B) and every elementwise op
    contiguous: 2.7x faster on CPU at B=64 than blending the whole 3x4 transform at once
    (1.3 ms against 3.5 ms, one thread, 2026-11-25). Autograd through slices of such a slab
    would zero a full-size gradient per slice; the backward recomputes the columns instead.
    """

    @staticmethod
    def forward(ctx, v_posed, rel_transforms, skin_idx, skin_w, transl):
        batch, num_joints = rel_transforms.shape[:2]
        # table[m, j] = column m of A_j, ordered (row c, sample b).
        table = rel_transforms.permute(3, 1, 2, 0).reshape(4, num_joints, 3 * batch)
        v = v_posed.permute(1, 2, 0)  # (V, 3, B)
        out = _blended_column(skin_idx, skin_w, table, 3)
        for m in range(3):
            out.addcmul_(_blended_column(skin_idx, skin_w, table, m), v[:, m:m + 1])
        ctx.save_for_backward(v, table, skin_idx, skin_w, v_posed, rel_transforms)
        # Back to smplx's (B, V, 3) layout with the translation added in the same pass.
        result = out.new_empty(batch, out.shape[0], 3)
        if transl is None:
            return result.copy_(out.permute(2, 0, 1))
        return torch.add(out.permute(2, 0, 1), transl[:, None], out=result)

    @staticmethod
    def backward(ctx, grad_out):
        v, table, skin_idx, skin_w, v_posed, rel_transforms = ctx.saved_tensors
        if backward_must_be_plain(grad_out):
            return skin_backward_plain(ctx.needs_input_grad, grad_out, v_posed,
                                       rel_transforms, skin_idx, skin_w)
        num_verts, _, batch = v.shape
        num_joints = table.shape[1]
        g = grad_out.permute(1, 2, 0).contiguous()  # (V, 3, B)
        grad_v = grad_rel = grad_transl = None
        if ctx.needs_input_grad[4]:
            grad_transl = grad_out.sum(1)
        if ctx.needs_input_grad[0]:
            # dL/dv_m = Σ_c T[c, m] g_c: the transpose of the blended rotation.
            grad_v = torch.stack([_blended_column(skin_idx, skin_w, table, m).mul_(g).sum(1)
                                  for m in range(3)], dim=1).permute(2, 0, 1)
        if ctx.needs_input_grad[1]:
            # dL/dA_j = Σ_i w_ij g_i [v_i; 1]^T: W^T times per-vertex outer products. A dense
            # (J, V) W^T GEMM beats a scatter over the K weights on CPU.
            weights_t = skin_w.new_zeros(num_joints, num_verts)
            weights_t.scatter_add_(0, skin_idx.t(), skin_w.t())
            columns = [weights_t @ (g * v[:, m:m + 1]).view(num_verts, -1) for m in range(3)]
            columns.append(weights_t @ g.view(num_verts, -1))
            grad_table = torch.stack(columns, dim=1).view(num_joints, 4, 3, batch)
            grad_rel = grad_table.permute(3, 0, 2, 1)
        return grad_v, grad_rel, None, None, grad_transl


def skin_dense(v_posed: torch.Tensor, rel_transforms: torch.Tensor,
               lbs_weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning with the dense weights: v_i = Σ_j w_ij A_j [v_i; 1].

    Args:
        v_posed: (B, V, 3).
        rel_transforms: (B, J, 3, 4).
        lbs_weights: (V, J).
    Returns:
        (B, V, 3).
    """
    batch, num_joints = rel_transforms.shape[:2]
    blended = lbs_weights @ rel_transforms.reshape(batch, num_joints, 12)
    blended = blended.reshape(batch, -1, 3, 4)
    return (blended[..., :3] @ v_posed[..., None])[..., 0] + blended[..., 3]


def dense_skinning_weights(skin_idx: torch.Tensor, skin_w: torch.Tensor,
                           num_joints: int) -> torch.Tensor:
    """The (V, J) dense weights behind the compact (V, K) ones (differentiable in skin_w)."""
    dense = skin_w.new_zeros(skin_w.shape[0], num_joints)
    return dense.scatter_add(1, skin_idx, skin_w)


def skin_backward_plain(needs_input_grad, grad_out, v_posed, rel_transforms, skin_idx,
                        skin_w):
    """`skin`'s gradients in plain differentiable torch ops (for double backward and for
    batched backward passes): the backward the fast skinning functions fall back to.

    Args:
        needs_input_grad: the Function's flags for (v_posed, rel_transforms, skin_idx,
            skin_w, transl).
        grad_out: (B, V, 3).
        v_posed: (B, V, 3); rel_transforms: (B, J, 3, 4); skin_idx, skin_w: (V, K).
    Returns:
        The five gradients, None where not needed.
    """
    batch, num_joints = rel_transforms.shape[:2]
    weights = dense_skinning_weights(skin_idx, skin_w, num_joints)
    grad_v = grad_rel = grad_transl = None
    if needs_input_grad[0]:
        # matmul, not einsum: the legacy vmap of autograd.functional has no einsum rule.
        blended = weights @ rel_transforms.reshape(batch, num_joints, 12)
        rot = blended.reshape(batch, -1, 3, 4)[..., :3]
        grad_v = (rot.transpose(-1, -2) @ grad_out[..., None])[..., 0]
    if needs_input_grad[1]:
        homogeneous = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=-1)
        outer = grad_out[..., :, None] * homogeneous[..., None, :]  # (B, V, 3, 4)
        grad_rel = weights.t() @ outer.reshape(batch, -1, 12)
        grad_rel = grad_rel.reshape(batch, num_joints, 3, 4)
    if needs_input_grad[4]:
        grad_transl = grad_out.sum(1)
    return grad_v, grad_rel, None, None, grad_transl


class _SkinCPU(torch.autograd.Function):
    """`skin` through the fused CPU loops of `skin_cpu`, forward and backward."""

    @staticmethod
    def forward(ctx, v_posed, rel_transforms, skin_idx, skin_w, transl):
        v = v_posed.permute(1, 2, 0).contiguous()  # (V, 3, B): free after `blend_shapes`
        transforms = rel_transforms.permute(1, 2, 3, 0).contiguous()  # (J, 3, 4, B)
        ctx.save_for_backward(v, transforms, skin_idx, skin_w, v_posed, rel_transforms)
        return skin_cpu.skin_forward(v, transforms, skin_idx, skin_w, transl)

    @staticmethod
    def backward(ctx, grad_out):
        v, transforms, skin_idx, skin_w, v_posed, rel_transforms = ctx.saved_tensors
        if backward_must_be_plain(grad_out):
            return skin_backward_plain(ctx.needs_input_grad, grad_out, v_posed,
                                       rel_transforms, skin_idx, skin_w)
        grad_v = grad_rel = grad_transl = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            g = grad_out.permute(1, 2, 0).contiguous()
            grad_planar, grad_transforms = skin_cpu.skin_backward(g, v, transforms, skin_idx,
                                                                  skin_w)
            grad_v = grad_planar.permute(2, 0, 1)
            grad_rel = grad_transforms.permute(3, 0, 1, 2)
        if ctx.needs_input_grad[4]:
            grad_transl = grad_out.sum(1)
        return grad_v, grad_rel, None, None, grad_transl


def weak_perspective(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """HMR's weak-perspective projection: translate, then scale.

    x̂ = s · (X_xy + t), in [-1, 1] crop coordinates.

    Args:
        points: (B, N, 3).
        camera: (B, 3) = [s, tx, ty].
    Returns:
        (B, N, 2).
    """
    return camera[:, None, :1] * (points[..., :2] + camera[:, None, 1:])


def vertex_subset(model: ModelTensors, vertex_ids: torch.Tensor) -> ModelTensors:
    """The model restricted to some vertices (keypoint mode skins only these).

    Args:
        model: full model tensors.
        vertex_ids: (S,) int64 mesh vertex ids.
    Returns:
        ModelTensors over S vertices; vertex_joint_ids re-indexed into the subset.
    """
    cols = (vertex_ids[:, None] * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
    position = torch.full((model.v_template.shape[0],), -1, dtype=torch.long,
                          device=vertex_ids.device)
    position[vertex_ids] = torch.arange(vertex_ids.numel(), device=vertex_ids.device)
    return ModelTensors(
        v_template=model.v_template[vertex_ids].contiguous(),
        blend_dirs=model.blend_dirs[:, cols].contiguous(),
        joint_template=model.joint_template,
        joint_shapedirs=model.joint_shapedirs,
        parents=model.parents,
        skin_idx=model.skin_idx[vertex_ids].contiguous(),
        skin_w=model.skin_w[vertex_ids].contiguous(),
        vertex_joint_ids=position[model.vertex_joint_ids],
    )


def smpl_forward(model: ModelTensors, betas: torch.Tensor, pose: torch.Tensor,
                 transl: torch.Tensor | None = None,
                 keypoint_regressor: torch.Tensor | None = None, fused_cpu: bool = False,
                 pose2rot: bool = False):
    """The whole SMPL forward.

    Args:
        model: ModelTensors (possibly a `vertex_subset`).
        betas: (B, L).
        pose: (B, J, 3, 3) local rotations, root first; with pose2rot, (B, J * 3) axis-angle.
        transl: (B, 3) or None.
        keypoint_regressor: (Q, V) over the model's vertices, or None.
        fused_cpu: the layer's CPU path: skin with the fused CPU loops (see `skin`) and, when
            no gradient is needed, run everything before the blend GEMM as one compiled call
            (`skeleton_cpu`). False keeps plain torch (the oracle).
        pose2rot: whether `pose` is axis-angle (converted by `rodrigues`).
    Returns:
        vertices: (B, V, 3).
        joints: (B, J + E, 3): FK joints, then the vertex joints.
        keypoints: (B, Q, 3) or None.
    """
    if fused_cpu and _fused_skeleton_usable(model, betas, pose, transl):
        posed_joints, vertices = _fused_cpu_forward(model, betas, pose, transl, pose2rot)
    else:
        rot_mats = pose
        if pose2rot:
            rot_mats = rodrigues(pose.reshape(-1, 3)).view(betas.shape[0], -1, 3, 3)
        joints = rest_joints(betas, model.joint_template, model.joint_shapedirs)
        v_posed = blend_shapes(betas, pose_feature(rot_mats), model.v_template,
                               model.blend_dirs, model.dense_blend)
        posed_joints, rel = forward_kinematics(rot_mats, joints, model.parents)
        vertices = skin(v_posed, rel, model.skin_idx, model.skin_w, transl, fused_cpu)
    if transl is not None:
        posed_joints = posed_joints + transl[:, None]
    joints = torch.cat([posed_joints, vertices[:, model.vertex_joint_ids]], dim=1)
    keypoints = None
    if keypoint_regressor is not None:
        keypoints = torch.einsum("qv,bvc->bqc", keypoint_regressor, vertices)
    return vertices, joints, keypoints


def _fused_skeleton_usable(model: ModelTensors, betas, pose, transl) -> bool:
    """Whether `smpl_forward` may take `_fused_cpu_forward`: CPU tensors of one float dtype,
    eager code, numba present, and no gradient to record (the fused path has no backward)."""
    from hmr_fast.ops import skeleton_cpu  # imported here: it needs numba to be useful

    tensors = [betas, pose, model.v_template, model.blend_dirs, model.joint_template,
               model.joint_shapedirs]
    if transl is not None:
        tensors.append(transl)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return plain_reason(tensors, []) is None and skeleton_cpu.usable(*tensors)


def _fused_cpu_forward(model: ModelTensors, betas, pose, transl, pose2rot: bool):
    """`smpl_forward`'s posed joints (B, J, 3) and vertices (B, V, 3) without autograd: one
    compiled skeleton call, the blend GEMM over its coefficient rows, the fused skinning."""
    from hmr_fast.ops import skeleton_cpu

    skeleton = skeleton_cpu.skeleton_forward(betas, pose, model.joint_template,
                                             model.joint_shapedirs, model.parents, pose2rot)
    v_planar = blend_planar(skeleton.coeffs, model.v_template, model.blend_dirs,
                            model.dense_blend)
    vertices = skin_cpu.skin_forward(v_planar.view(-1, 3, betas.shape[0]), skeleton.transforms,
                                     model.skin_idx, model.skin_w, transl)
    return skeleton.posed_joints, vertices
