"""Parity of an SMPL implementation against a float64 reference, with every input gradient.

Shared by the GPU tests (tests/test_gpu_smpl.py) and the gate of benchmarks/gpu_report.py
(an implementation that fails here is not timed).

The reference is smplx's linear blend skinning as `hmr_fast.ops.naive.lbs` writes it (dense
(V, J) skinning weights, joints regressed from the shaped mesh, sequential kinematics, plain
torch ops, no custom autograd), run in float64 on float64 copies of the layer's public
buffers (`v_template`, `shapedirs`, `posedirs`, `J_regressor`, `lbs_weights`, the vertex
joints, the keypoint regressor). The fused kernels use none of that: they read a precomputed
joint-shape regressor, compact skinning weights and a level-parallel tree, so the two
share no code past the model file. Projection is written out here (HMR's weak perspective,
x = s (X_xy + t)) rather than imported.

Budgets (where each comes from):
* TOL32_M = 2e-5 m: fp32 vertices/joints (README's parity budget, tests/test_dropin_clients.py
  TOL32; BENCHMARKS.md: tf32x3 and ieee measured 5.0-5.5e-7 m in emulation, plain tf32
  2-2.6e-4 m is over it);
* TOL64_M = 1e-9 m: fp64 values (test_dropin_clients.py TOL64);
* REL32_GRAD = 1e-4: fp32 gradients, max abs error over max abs value (REL32_GRAD there);
* REL64_GRAD = 1e-6: fp64 derivatives (REL64 there).
Value errors are scaled by max(1, max |reference|) as in tests/test_smpl_triton.py, which
only matters for the projected outputs.
"""

from __future__ import annotations

import dataclasses

import torch

TOL32_M = 2e-5
TOL64_M = 1e-9
REL32_GRAD = 1e-4
REL64_GRAD = 1e-6

OUTPUTS = ("vertices", "joints", "keypoints", "projected_joints", "projected_keypoints")
INPUTS = ("betas", "body_pose", "global_orient", "transl", "camera")
SMPLX_OUTPUTS = ("vertices", "joints")
SMPLX_INPUTS = ("betas", "body_pose", "global_orient", "transl")


def budgets(dtype: torch.dtype) -> tuple[float, float]:
    """(value tolerance in metres, relative gradient tolerance) for a dtype."""
    return (TOL64_M, REL64_GRAD) if dtype == torch.float64 else (TOL32_M, REL32_GRAD)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3, 3) by Rodrigues' formula, written here (not the package's)."""
    angle = aa.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = aa / angle
    zero = torch.zeros_like(k[:, 0])
    cross = torch.stack(
        [zero, -k[:, 2], k[:, 1], k[:, 2], zero, -k[:, 0], -k[:, 1], k[:, 0], zero], -1
    ).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(cross)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    return eye + s * cross + (1 - c) * cross @ cross


def make_inputs(
    batch: int,
    dtype: torch.dtype,
    device,
    pose2rot: bool,
    generator: torch.Generator | None = None,
    angle_scale: float = 0.6,
) -> dict:
    """Random inputs for every argument, built in float64 on the CPU from `generator` (so the
    same seed gives the same inputs on any device), then cast.

    Axis-angle components ~ N(0, angle_scale) (about 1 rad per joint), betas ~ N(0, 1.5),
    translation ~ N(0, 1), camera scale in [0.5, 1.5] and offset ~ N(0, 0.2). With
    pose2rot=False, the poses are exact rotation matrices of the same distribution, shaped
    as smplx's SMPLLayer takes them: body_pose (B, 23, 3, 3), global_orient (B, 1, 3, 3).
    """
    f64 = torch.float64
    aa = torch.randn(batch, 24, 3, generator=generator, dtype=f64) * angle_scale
    x = {
        "betas": torch.randn(batch, 10, generator=generator, dtype=f64) * 1.5,
        "transl": torch.randn(batch, 3, generator=generator, dtype=f64),
        "camera": torch.cat(
            [
                torch.rand(batch, 1, generator=generator, dtype=f64) + 0.5,
                torch.randn(batch, 2, generator=generator, dtype=f64) * 0.2,
            ],
            1,
        ),
    }
    if pose2rot:
        x["global_orient"] = aa[:, 0].reshape(batch, 3)
        x["body_pose"] = aa[:, 1:].reshape(batch, 69)
    else:
        rot = axis_angle_to_matrix(aa.reshape(-1, 3)).reshape(batch, 24, 3, 3)
        x["global_orient"] = rot[:, :1].contiguous()
        x["body_pose"] = rot[:, 1:].contiguous()
    return {k: v.to(device=device, dtype=dtype) for k, v in x.items()}


def _weak_perspective(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    # HMR's convention: translate, then scale.
    return camera[:, None, :1] * (points[..., :2] + camera[:, None, 1:])


def reference_outputs(layer, inputs: dict, pose2rot: bool) -> dict:
    """float64 outputs of smplx's math on the layer's buffers; `inputs` may be float64
    leaves (their gradients are then the reference gradients)."""
    from hmr_fast.ops import naive

    f64 = torch.float64
    batch = inputs["betas"].shape[0]
    if pose2rot:
        full_pose = torch.cat(
            [inputs["global_orient"].reshape(batch, 3), inputs["body_pose"].reshape(batch, 69)],
            1,
        )
    else:
        full_pose = torch.cat(
            [
                inputs["global_orient"].reshape(batch, 1, 3, 3),
                inputs["body_pose"].reshape(batch, 23, 3, 3),
            ],
            1,
        )
    parents = tuple(int(p) for p in layer.parents.tolist())
    parents = (-1,) + parents[1:]  # smplx stores the root's parent as -1 (or garbage)
    verts, joints = naive.lbs(
        inputs["betas"].to(f64),
        full_pose.to(f64),
        layer.v_template.detach().to(f64),
        layer.shapedirs.detach().to(f64),
        layer.posedirs.detach().to(f64),
        layer.J_regressor.detach().to(f64),
        parents,
        layer.lbs_weights.detach().to(f64),
        pose2rot=pose2rot,
    )
    transl = inputs.get("transl")
    if transl is not None:
        verts = verts + transl.to(f64)[:, None]
        joints = joints + transl.to(f64)[:, None]
    ids = layer.vertex_joint_ids.to(verts.device)
    joints = torch.cat([joints, verts[:, ids]], 1)
    out = {"vertices": verts, "joints": joints, "keypoints": None}
    reg = getattr(layer, "keypoint_regressor", None)
    if reg is not None:
        out["keypoints"] = torch.einsum("qv,bvc->bqc", reg.detach().to(f64), verts)
    camera = inputs.get("camera")
    out["projected_joints"] = None if camera is None else _weak_perspective(joints, camera)
    out["projected_keypoints"] = (
        None if camera is None or out["keypoints"] is None
        else _weak_perspective(out["keypoints"], camera)
    )
    return out


@dataclasses.dataclass
class ParityResult:
    """Errors of one implementation on one input set; `ok` says all were within budget."""

    value_err: dict
    grad_rel: dict
    failures: list
    value_tol: float
    grad_tol: float

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        worst_v = max(self.value_err.values(), default=float("nan"))
        worst_g = max(self.grad_rel.values(), default=float("nan"))
        head = "ok" if self.ok else "FAILED: " + "; ".join(self.failures)
        return (
            f"{head} (max value err {worst_v:.3g} <= {self.value_tol:g}, "
            f"max grad rel {worst_g:.3g} <= {self.grad_tol:g})"
        )


def _field(out, name):
    if isinstance(out, dict):
        return out.get(name)
    return getattr(out, name, None)


def check_parity(
    fn,
    layer,
    inputs: dict,
    *,
    pose2rot: bool,
    return_verts: bool,
    outputs=OUTPUTS,
    grad_inputs=INPUTS,
    weight_seed: int = 0,
    value_tol: float | None = None,
    grad_tol: float | None = None,
) -> ParityResult:
    """Run `fn(**inputs, pose2rot=, return_verts=)` and the float64 reference on the same
    inputs; compare the `outputs` the mode produces (vertices only in full mode; keypoints
    only if the layer has a regressor; projections only with a camera), then the gradients
    of sum(output * w) (w random, from `weight_seed`) w.r.t. every `grad_inputs` entry.

    `layer` supplies the reference's buffers (an hmr_fast SMPL layer). A missing or
    non-finite output or gradient that the reference has is a failure, as is an exception
    (re-raised only for KeyboardInterrupt).
    """
    dtype = inputs["betas"].dtype
    v_tol, g_tol = budgets(dtype)
    value_tol = v_tol if value_tol is None else value_tol
    grad_tol = g_tol if grad_tol is None else grad_tol
    failures: list[str] = []
    value_err: dict[str, float] = {}
    grad_rel: dict[str, float] = {}
    leaves = {k: v.detach().clone().requires_grad_(k in grad_inputs) for k, v in inputs.items()}
    leaves64 = {
        k: v.detach().to(torch.float64).requires_grad_(k in grad_inputs)
        for k, v in inputs.items()
    }
    ref = reference_outputs(layer, leaves64, pose2rot)
    try:
        out = fn(**leaves, pose2rot=pose2rot, return_verts=return_verts)
    except Exception as exc:  # the gate records it; the caller decides what to do
        failures.append(f"raised {type(exc).__name__}: {str(exc)[:160]}")
        return ParityResult(value_err, grad_rel, failures, value_tol, grad_tol)
    wanted = [n for n in outputs if ref.get(n) is not None and (n != "vertices" or return_verts)]
    if not return_verts and _field(out, "vertices") is not None:
        failures.append("vertices returned in keypoint mode")
    pairs = []
    for name in wanted:
        o, r = _field(out, name), ref[name]
        if o is None:
            failures.append(f"{name} missing")
            continue
        if tuple(o.shape) != tuple(r.shape):
            failures.append(f"{name} shape {tuple(o.shape)} != {tuple(r.shape)}")
            continue
        if not torch.isfinite(o).all():
            failures.append(f"{name} not finite")
            continue
        err = (o.detach().to(torch.float64) - r.detach()).abs().max().item()
        value_err[name] = err
        if err > value_tol * max(1.0, r.detach().abs().max().item()):
            failures.append(f"{name} err {err:.3g}")
        pairs.append((o, r))
    if not pairs:
        failures.append("no output to compare")
        return ParityResult(value_err, grad_rel, failures, value_tol, grad_tol)
    gen = torch.Generator().manual_seed(weight_seed)
    weights = [torch.randn(r.shape, generator=gen, dtype=torch.float64).to(r.device)
               for _, r in pairs]
    names = [k for k in grad_inputs if k in leaves]
    try:
        loss = sum((o * w.to(o.dtype)).sum() for (o, _), w in zip(pairs, weights))
        grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    except Exception as exc:
        failures.append(f"backward raised {type(exc).__name__}: {str(exc)[:160]}")
        return ParityResult(value_err, grad_rel, failures, value_tol, grad_tol)
    loss64 = sum((r * w).sum() for (_, r), w in zip(pairs, weights))
    grads64 = torch.autograd.grad(loss64, [leaves64[k] for k in names], allow_unused=True)
    for name, g, gr in zip(names, grads, grads64):
        if gr is None:  # the compared outputs do not depend on it (e.g. camera, no projection)
            continue
        if g is None:
            failures.append(f"grad {name} missing")
            continue
        if not torch.isfinite(g).all():
            failures.append(f"grad {name} not finite")
            continue
        rel = (g.to(torch.float64) - gr).abs().max().item() / max(gr.abs().max().item(), 1e-30)
        grad_rel[name] = rel
        if rel > grad_tol:
            failures.append(f"grad {name} rel {rel:.3g}")
    return ParityResult(value_err, grad_rel, failures, value_tol, grad_tol)
