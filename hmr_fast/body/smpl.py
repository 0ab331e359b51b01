"""`SMPL`, `SMPLLayer` and `create`: a drop-in, faster `smplx.SMPL`.

The layer owns the model constants in the layout every backend shares
(`hmr_fast.ops.reference.ModelTensors`), checks its inputs, and hands the math to a backend:

* ``"torch"``: `hmr_fast.ops.reference`, the fast CPU path and the oracle of the kernels;
* ``"triton"``: the fused kernels in `hmr_fast.ops.smpl_triton`;
* ``"auto"``: triton for CUDA tensors, torch otherwise.

With ``return_verts=False`` only the vertices that the joints (and the keypoint regressor, if
any) read are computed: "keypoint mode".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse
import torch
from torch import nn

from hmr_fast.body import constants
from hmr_fast.body.model_file import dense, load_model_file, resolve_model_path
from hmr_fast.ops import reference

BACKENDS = ("auto", "torch", "triton")
PRECISIONS = (None, "tf32x3", "ieee", "tf32")
_FLOAT_DTYPES = (torch.float32, torch.float64)


@dataclass
class SMPLOutput:
    """The fields of smplx's `SMPLOutput`, plus `keypoints` when a regressor is set and the
    weak-perspective projections when `forward` was given a `camera`."""

    vertices: torch.Tensor | None = None
    joints: torch.Tensor | None = None
    full_pose: torch.Tensor | None = None
    global_orient: torch.Tensor | None = None
    transl: torch.Tensor | None = None
    v_shaped: torch.Tensor | None = None
    betas: torch.Tensor | None = None
    body_pose: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    projected_joints: torch.Tensor | None = None
    projected_keypoints: torch.Tensor | None = None

    def __getitem__(self, key):
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def __iter__(self):
        return self.keys()

    def keys(self):
        return iter([f.name for f in fields(self)])

    def values(self):
        return iter([getattr(self, f.name) for f in fields(self)])

    def items(self):
        return iter([(f.name, getattr(self, f.name)) for f in fields(self)])


def _parents_from_kintree(kintree_table: np.ndarray) -> tuple[int, ...]:
    """Parent list from kintree_table (2, J); the root's uint32-max parent becomes -1."""
    kintree = np.asarray(kintree_table).astype(np.int64)
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise ValueError(f"kintree_table: expected shape (2, J), got {kintree.shape}")
    id_to_col = {int(kintree[1, i]): i for i in range(kintree.shape[1])}
    parents = [-1] * kintree.shape[1]
    for i in range(1, kintree.shape[1]):
        parents[i] = id_to_col.get(int(kintree[0, i]), -1)
    return tuple(parents)


def compact_skinning_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero skinning weights per vertex, K = the file's most per vertex.

    Args:
        weights: (V, J) dense.
    Returns:
        skin_idx: (V, K) int64 joint ids (padding points at joint 0 with weight 0).
        skin_w: (V, K) float64 weights, exactly the file's values.
    """
    k = max(int((weights != 0).sum(axis=1).max()), 1)
    order = np.argsort(-np.abs(weights), axis=1, kind="stable")[:, :k]
    skin_w = np.take_along_axis(weights, order, axis=1)
    skin_idx = np.where(skin_w != 0, order, 0)
    return skin_idx.astype(np.int64), skin_w


def _as_dense_regressor(regressor, num_vertices: int, name: str) -> np.ndarray:
    if isinstance(regressor, (str, os.PathLike)):
        path = os.fspath(regressor)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: regressor file {path!r} does not exist")
        regressor = np.load(path)
    if torch.is_tensor(regressor):
        regressor = regressor.detach().cpu().numpy()
    array = dense(regressor)
    if array.ndim != 2 or array.shape[1] != num_vertices:
        raise ValueError(f"{name}: expected shape (K, {num_vertices}), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return array


def _vertex_joint_ids(vertex_ids, use_hands: bool, use_feet_keypoints: bool) -> list[int]:
    """smplx's VertexJointSelector order: face, then feet, then fingertips."""
    if vertex_ids is None:
        ids = list(constants.VERTEX_JOINT_IDS)
        face, feet, hands = ids[:5], ids[5:11], ids[11:]
        return face + (feet if use_feet_keypoints else []) + (hands if use_hands else [])
    if isinstance(vertex_ids, Mapping):
        face = ["nose", "reye", "leye", "rear", "lear"]
        feet = ["LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
        tips = [f"{side}{f}" for side in "lr" for f in ("thumb", "index", "middle", "ring",
                                                         "pinky")]
        names = face + (feet if use_feet_keypoints else []) + (tips if use_hands else [])
        missing = [n for n in names if n not in vertex_ids]
        if missing:
            raise ValueError(f"vertex_ids: missing entries {missing}")
        return [int(vertex_ids[n]) for n in names]
    return [int(i) for i in vertex_ids]


class SMPLLayer(nn.Module):
    """Parameter-free SMPL: every input is given to `forward` (rotation matrices by default,
    as smplx's SMPLLayer).

    Args:
        model_path: .pkl/.npz file or a folder of SMPL_{GENDER} files; None uses
            $HMR_FAST_SMPL_DIR or, when unset, the embedded procedural body.
        gender: "neutral", "male" or "female".
        num_betas: shape coefficients to use, up to what the file holds (10 in v1.0, 300 in
            v1.1); more is clamped with a warning, as smplx does.
        dtype: torch.float32 or torch.float64.
        vertex_ids: smplx-style dict of landmark vertex ids, or a list of vertex ids to append
            to the 24 joints; defaults to smplx's 21.
        joint_mapper: optional callable applied to the (B, J, 3) joints, as in smplx.
        backend: "auto", "torch" or "triton".
        keypoint_regressor: (K, V) array/tensor/scipy.sparse, a .npy path, or "hmr" for HMR's
            19 keypoints; the output's `keypoints` are then (B, K, 3).
        precision: the Triton path's fp32 blend-shape GEMMs: None (default: "tf32x3" on CUDA,
            split-precision tensor cores at fp32 accuracy), "ieee" (CUDA cores) or "tf32"
            (opt-in, about 2e-4 m error); see hmr_fast.ops.smpl_triton. The torch path
            always computes in the model's dtype.
        check_inputs: validate shapes, dtypes, devices and finiteness of every input. Turning
            it off saves the checks (and a device sync for the finiteness check on CUDA).
        ext: preferred extension when model_path is a folder.
    """

    NUM_JOINTS = constants.NUM_BODY_JOINTS
    NUM_BODY_JOINTS = constants.NUM_BODY_JOINTS
    SHAPE_SPACE_DIM = 300

    def __init__(self, model_path=None, gender: str = "neutral", num_betas: int = 10,
                 dtype: torch.dtype = torch.float32, vertex_ids=None, joint_mapper=None,
                 backend: str = "auto", keypoint_regressor=None, check_inputs: bool = True,
                 precision: str | None = None,
                 ext: str = "pkl", use_hands: bool = True, use_feet_keypoints: bool = True,
                 v_template=None, data_struct=None, **kwargs):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if data_struct is not None:
            data = {key: getattr(data_struct, key) for key in vars(data_struct)}
            self.model_path = None
        else:
            path = resolve_model_path(model_path, gender, ext)
            if path is None:
                from hmr_fast.body.procedural import load_procedural_body

                data = load_procedural_body()
            else:
                data = load_model_file(path)
            self.model_path = None if path is None else str(path)
        self.gender = gender
        self.backend = backend
        self.precision = precision
        self.check_inputs = check_inputs
        self.joint_mapper = joint_mapper
        self.dtype = dtype
        self._set_model(data, num_betas, dtype, v_template)
        ids = _vertex_joint_ids(vertex_ids, use_hands, use_feet_keypoints)
        bad = [i for i in ids if not 0 <= i < self.num_vertices]
        if bad:
            raise ValueError(f"vertex_ids: ids {bad} outside [0, {self.num_vertices})")
        self.register_buffer("vertex_joint_ids", torch.tensor(ids, dtype=torch.long),
                             persistent=False)
        self.register_buffer("keypoint_regressor", None, persistent=False)
        self._subset_cache: dict = {}
        if keypoint_regressor is not None:
            self.set_keypoint_regressor(keypoint_regressor)

    # ----------------------------------------------------------------------------- model data
    def _set_model(self, data: dict, num_betas: int, dtype: torch.dtype, v_template) -> None:
        v_tmpl = dense(data["v_template"] if v_template is None else v_template)
        shapedirs = dense(data["shapedirs"])
        posedirs = dense(data["posedirs"])
        weights = dense(data["weights"])
        j_regressor = dense(data["J_regressor"])
        faces = np.asarray(data["f"]).astype(np.int64)
        num_verts = v_tmpl.shape[0]
        checks = {
            "v_template": (v_tmpl, (num_verts, 3)),
            "shapedirs": (shapedirs, (num_verts, 3, shapedirs.shape[-1])),
            "posedirs": (posedirs, (num_verts, 3, posedirs.shape[-1])),
            "weights": (weights, (num_verts, weights.shape[-1])),
            "J_regressor": (j_regressor, (weights.shape[-1], num_verts)),
        }
        for key, (array, shape) in checks.items():
            if array.shape != shape:
                raise ValueError(f"model file key {key!r}: expected shape {shape}, "
                                 f"got {array.shape}")
        num_joints = weights.shape[1]
        if posedirs.shape[-1] != 9 * (num_joints - 1):
            raise ValueError(f"model file key 'posedirs': expected {9 * (num_joints - 1)} pose "
                             f"correctives for {num_joints} joints, got {posedirs.shape[-1]}")
        available = shapedirs.shape[-1]
        if num_betas > available:
            import warnings

            warnings.warn(f"num_betas={num_betas} but the model file holds {available} shape "
                          f"coefficients; using {available}", stacklevel=3)
            num_betas = available
        if num_betas < 1:
            raise ValueError(f"num_betas must be >= 1, got {num_betas}")
        self.num_betas = self._num_betas = num_betas
        shapedirs = shapedirs[:, :, :num_betas]
        self.parents_tuple = _parents_from_kintree(data["kintree_table"])
        skin_idx, skin_w = compact_skinning_weights(weights)
        blend_dirs = np.concatenate(
            [shapedirs.reshape(-1, num_betas).T, posedirs.reshape(-1, posedirs.shape[-1]).T])

        # Model constants stay out of state_dict: the model file is their source of truth,
        # and HMR checkpoints would otherwise carry ~20 MB of them.
        def buf(name, array, dt=dtype):
            self.register_buffer(name, torch.tensor(np.ascontiguousarray(array), dtype=dt),
                                 persistent=False)

        buf("v_template", v_tmpl)
        buf("blend_dirs", blend_dirs)
        # Precomputed in float64: the joint-shape regressor replaces regressing the mesh.
        buf("joint_template", j_regressor @ v_tmpl)
        buf("joint_shapedirs", np.einsum("jv,vcl->jcl", j_regressor, shapedirs))
        buf("J_regressor", j_regressor)
        buf("lbs_weights", weights)
        buf("skin_idx", skin_idx, dt=torch.long)
        buf("skin_w", skin_w)
        buf("parents", np.asarray(self.parents_tuple), dt=torch.long)
        buf("faces_tensor", faces, dt=torch.long)
        self.faces = faces
        self.num_vertices = num_verts
        self.num_joints_kinematic = num_joints
        self.extra_regressors = {
            key: torch.as_tensor(dense(value), dtype=dtype)
            for key, value in data.items()
            if key not in ("J_regressor", "weights") and (scipy.sparse.issparse(value) or (
                isinstance(value, np.ndarray) and value.ndim == 2
                and value.shape[1] == num_verts and value.shape[0] != num_verts))
            and "regressor" in key.lower()
        }

    @property
    def shapedirs(self) -> torch.Tensor:
        """(V, 3, L), smplx's layout (a view of `blend_dirs`)."""
        return self.blend_dirs[: self.num_betas].t().reshape(self.num_vertices, 3, -1)

    @property
    def posedirs(self) -> torch.Tensor:
        """(207, V * 3), smplx's layout (a view of `blend_dirs`)."""
        return self.blend_dirs[self.num_betas:]

    def model_tensors(self) -> reference.ModelTensors:
        """The constants in the layout every backend reads (plus, for fp32 on CPU, the
        template-augmented blend weight of the oneDNN GEMM, built once and cached)."""
        dense = None
        if (self.blend_dirs.device.type == "cpu" and self.blend_dirs.dtype == torch.float32
                and not torch.compiler.is_compiling()):
            # Versions in the key: an in-place edit of the buffers rebuilds the weight.
            key = ("dense_blend", self.blend_dirs.data_ptr(), self.blend_dirs._version,
                   self.v_template.data_ptr(), self.v_template._version)
            dense = self._subset_cache.get(key)
            if dense is None:
                dense = reference.dense_blend_weight(self.v_template, self.blend_dirs)
                for stale in [k for k in self._subset_cache if k[0] == "dense_blend"]:
                    del self._subset_cache[stale]
                self._subset_cache[key] = dense
        return reference.ModelTensors(
            self.v_template, self.blend_dirs, self.joint_template, self.joint_shapedirs,
            self.parents_tuple, self.skin_idx, self.skin_w, self.vertex_joint_ids, dense)

    def hmr_keypoint_regressor(self, path=None) -> torch.Tensor:
        """HMR's 19 keypoints (14 LSP joints, nose, left/right eye, left/right ear) as a
        (19, V) dense regressor.

        From `path` (.npy, (19, V) or (14, V)) when given, else the file's
        `cocoplus_regressor`. A 14-row regressor gets the five face vertices appended as
        one-hot rows (constants.HMR_FACE_VERTEX_IDS).
        """
        if path is not None:
            rows = _as_dense_regressor(path, self.num_vertices, "hmr keypoint regressor")
        elif "cocoplus_regressor" in self.extra_regressors:
            rows = self.extra_regressors["cocoplus_regressor"].double().numpy()
        else:
            raise ValueError(
                f"the SMPL model file {self.model_path!r} holds no 'cocoplus_regressor'; pass "
                "HMR's keypoint regressor as a .npy path ((19, 6890) or (14, 6890))")
        if rows.shape[0] == 14:
            face = np.zeros((5, self.num_vertices))
            face[np.arange(5), list(constants.HMR_FACE_VERTEX_IDS)] = 1.0
            rows = np.concatenate([rows, face])
        if rows.shape[0] != 19:
            raise ValueError(f"hmr keypoint regressor: expected 19 or 14 rows, got {rows.shape[0]}")
        return torch.as_tensor(rows, dtype=self.dtype, device=self.v_template.device)

    def set_keypoint_regressor(self, regressor) -> None:
        """Set the (K, V) regressor whose keypoints every forward returns (or None)."""
        if regressor is None:
            self.keypoint_regressor = None
        else:
            rows = (self.hmr_keypoint_regressor() if isinstance(regressor, str)
                    and regressor == "hmr" else
                    torch.as_tensor(_as_dense_regressor(regressor, self.num_vertices,
                                                        "keypoint_regressor"), dtype=self.dtype))
            self.keypoint_regressor = rows.to(self.v_template.device)
        self._subset_cache.clear()

    def _keypoint_mode(self):
        """Model and keypoint regressor restricted to the vertices joints/keypoints read."""
        key = (self.v_template.device, self.v_template.dtype,
               None if self.keypoint_regressor is None else self.keypoint_regressor.data_ptr())
        cached = self._subset_cache.get(key)
        if cached is None:
            needed = [self.vertex_joint_ids]
            if self.keypoint_regressor is not None:
                needed.append(self.keypoint_regressor.abs().sum(0).nonzero()[:, 0])
            ids = torch.unique(torch.cat(needed))
            sub_regressor = None
            if self.keypoint_regressor is not None:
                sub_regressor = self.keypoint_regressor[:, ids].contiguous()
            cached = (ids, sub_regressor)
            self._subset_cache[key] = cached
        ids, sub_regressor = cached
        return reference.vertex_subset(self.model_tensors(), ids), sub_regressor

    def _apply(self, fn, *args, **kwargs):
        self._subset_cache = {}
        result = super()._apply(fn, *args, **kwargs)
        self.dtype = self.v_template.dtype
        return result

    # ----------------------------------------------------------------------------- checks
    def _check(self, name: str, value, shapes: Sequence[tuple], device, batch: int | None):
        """Validate one input; returns its batch size."""
        if not torch.is_tensor(value):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (the model's), got {value.dtype}")
        if value.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} (the model's device), "
                             f"got one on {value.device}")
        tail = tuple(value.shape[1:])
        if value.dim() < 1 or not any(tail == s for s in shapes):
            expected = " or ".join("(B, " + ", ".join(map(str, s)) + ")" for s in shapes)
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
        return value.shape[0]

    def _check_finite(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Raise, naming the argument, if an input holds NaN or inf.

        One reduction over all inputs first (one sync on CUDA, not one per input): NaN and inf
        propagate through a sum. So can a finite overflow; the per-input pass then clears it.
        """
        # A data-dependent branch would break a torch.compile graph; compiled callers opt out.
        if not self.check_inputs or not inputs or torch.compiler.is_compiling():
            return
        values = [value.detach().reshape(-1) for value in inputs.values()]
        if math.isfinite(float(torch.cat(values).sum())):
            return
        for name, value in inputs.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: contains NaN or inf (pass check_inputs=False to "
                                 "skip this check)")

    def _prepare(self, betas, body_pose, global_orient, transl, camera, pose2rot: bool):
        device = self.v_template.device
        if pose2rot:
            pose_shapes, orient_shapes = [(self.NUM_BODY_JOINTS * 3,)], [(3,)]
        else:
            pose_shapes = [(self.NUM_BODY_JOINTS, 3, 3), (self.NUM_BODY_JOINTS * 9,)]
            orient_shapes = [(1, 3, 3), (3, 3), (9,)]
        inputs = {"betas": betas, "body_pose": body_pose, "global_orient": global_orient,
                  "transl": transl, "camera": camera}
        shapes = {"betas": [(n,) for n in range(1, self.num_betas + 1)],
                  "body_pose": pose_shapes, "global_orient": orient_shapes, "transl": [(3,)],
                  "camera": [(3,)]}
        sizes = {}
        for name, value in inputs.items():
            if value is None:
                continue
            if name == "betas" and torch.is_tensor(value) and value.dim() == 2 \
                    and value.shape[1] > self.num_betas:
                raise ValueError(f"betas: the model uses num_betas={self.num_betas}, got "
                                 f"{value.shape[1]} coefficients (shape {tuple(value.shape)})")
            sizes[name] = self._check(name, value, shapes[name], device, None)
        self._check_finite({name: inputs[name] for name in sizes})
        batch = max(sizes.values(), default=1)
        wrong = {k: v for k, v in sizes.items() if v not in (1, batch)}
        if wrong:
            raise ValueError(f"mismatched batch sizes {sizes}: each input must have batch "
                             f"size {batch} or 1")
        return batch

    # ----------------------------------------------------------------------------- forward
    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None,
                return_verts: bool = True, return_full_pose: bool = False,
                pose2rot: bool = False, camera=None, **kwargs) -> SMPLOutput:
        return self._run(betas, body_pose, global_orient, transl, return_verts,
                         return_full_pose, pose2rot, camera)

    def _run(self, betas, body_pose, global_orient, transl, return_verts, return_full_pose,
             pose2rot, camera=None) -> SMPLOutput:
        batch = self._prepare(betas, body_pose, global_orient, transl, camera, pose2rot)
        device, dtype = self.v_template.device, self.dtype
        if pose2rot:
            if global_orient is None:
                global_orient = torch.zeros(batch, 3, dtype=dtype, device=device)
            if body_pose is None:
                body_pose = torch.zeros(batch, self.NUM_BODY_JOINTS * 3, dtype=dtype,
                                        device=device)
        else:
            eye = torch.eye(3, dtype=dtype, device=device)
            if global_orient is None:
                global_orient = eye.expand(batch, 1, 3, 3)
            if body_pose is None:
                body_pose = eye.expand(batch, self.NUM_BODY_JOINTS, 3, 3)
        if betas is None:
            betas = torch.zeros(batch, self.num_betas, dtype=dtype, device=device)
        betas = betas.expand(batch, -1)
        if betas.shape[1] < self.num_betas:
            betas = torch.cat([betas, betas.new_zeros(batch, self.num_betas - betas.shape[1])],
                              dim=1)
        global_orient = global_orient.expand(batch, *global_orient.shape[1:])
        body_pose = body_pose.expand(batch, *body_pose.shape[1:])
        if pose2rot:
            full_pose = torch.cat([global_orient, body_pose], dim=1)
        else:
            full_pose = torch.cat([global_orient.reshape(batch, 1, 3, 3),
                                   body_pose.reshape(batch, self.NUM_BODY_JOINTS, 3, 3)], dim=1)
        if transl is not None:
            transl = transl.expand(batch, 3)
        if camera is not None:
            camera = camera.expand(batch, 3)
        mapped = self.joint_mapper is not None
        # A joint mapper sees joints before translation, as in smplx; projection then waits.
        vertices, joints, keypoints, proj_joints, proj_keypoints = self._backend_forward(
            betas, full_pose, None if mapped else transl, pose2rot, return_verts,
            None if mapped else camera)
        if mapped:
            joints = self.joint_mapper(joints)
            if transl is not None:
                joints = joints + transl[:, None]
                vertices = None if vertices is None else vertices + transl[:, None]
                keypoints = None if keypoints is None else keypoints + transl[:, None]
            if camera is not None:
                proj_joints = reference.weak_perspective(joints, camera)
                proj_keypoints = None if keypoints is None else reference.weak_perspective(
                    keypoints, camera)
        return SMPLOutput(
            vertices=vertices if return_verts else None, joints=joints,
            full_pose=full_pose if return_full_pose else None, global_orient=global_orient,
            transl=transl, betas=betas, body_pose=body_pose, keypoints=keypoints,
            projected_joints=proj_joints, projected_keypoints=proj_keypoints)

    def _resolve_backend(self, tensor: torch.Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        return "triton" if tensor.is_cuda else "torch"

    def _backend_forward(self, betas, full_pose, transl, pose2rot, return_verts, camera):
        """(vertices, joints, keypoints, projected joints, projected keypoints)."""
        if self._resolve_backend(betas) == "triton":
            return self._triton_forward(betas, full_pose, transl, pose2rot, return_verts, camera)
        if return_verts:
            model, regressor = self.model_tensors(), self.keypoint_regressor
        else:
            model, regressor = self._keypoint_mode()
        vertices, joints, keypoints = reference.smpl_forward(
            model, betas, full_pose, transl, regressor, fused_cpu=True, pose2rot=pose2rot)
        proj_joints = proj_keypoints = None
        if camera is not None:
            proj_joints = reference.weak_perspective(joints, camera)
            if keypoints is not None:
                proj_keypoints = reference.weak_perspective(keypoints, camera)
        return vertices, joints, keypoints, proj_joints, proj_keypoints

    def _triton_forward(self, betas, full_pose, transl, pose2rot, return_verts, camera):
        from hmr_fast.ops import smpl_triton

        # Plans (kernel tables, the keypoint-mode vertex subset) are built once per mode and
        # kept here, so a torch.compile'd caller traces no host-side table building.
        key = ("triton_plan", bool(return_verts), self.v_template.device, self.dtype)
        plan = self._subset_cache.get(key)
        if plan is None:
            plan = smpl_triton.get_plan(self.model_tensors(), self.keypoint_regressor,
                                        vertices=bool(return_verts))
            self._subset_cache[key] = plan
        return smpl_triton.smpl_forward_triton(
            self.model_tensors(), betas, full_pose, transl, pose2rot=pose2rot,
            return_verts=return_verts, keypoint_regressor=self.keypoint_regressor,
            camera=camera, plan=plan, precision=self.precision)

    def extra_repr(self) -> str:
        source = self.model_path or "embedded procedural body"
        return (f"model={source}, gender={self.gender}, num_betas={self.num_betas}, "
                f"backend={self.backend}, skin_k={self.skin_idx.shape[1]}")


class SMPL(SMPLLayer):
    """Drop-in `smplx.SMPL`: optional learnable betas/global_orient/body_pose/transl, and
    axis-angle poses by default (pose2rot=True)."""

    def __init__(self, model_path=None, create_betas: bool = True, betas=None,
                 create_global_orient: bool = True, global_orient=None,
                 create_body_pose: bool = True, body_pose=None, create_transl: bool = True,
                 transl=None, batch_size: int = 1, num_betas: int = 10,
                 dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__(model_path=model_path, num_betas=num_betas, dtype=dtype, **kwargs)
        self.batch_size = batch_size
        defaults = {
            "betas": (create_betas, betas, (batch_size, self.num_betas)),
            "global_orient": (create_global_orient, global_orient, (batch_size, 3)),
            "body_pose": (create_body_pose, body_pose, (batch_size, self.NUM_BODY_JOINTS * 3)),
            "transl": (create_transl, transl, (batch_size, 3)),
        }
        for name, (create, init, shape) in defaults.items():
            if not create:
                continue
            value = (torch.zeros(shape, dtype=dtype) if init is None else
                     torch.as_tensor(init, dtype=dtype).clone().detach())
            self.register_parameter(name, nn.Parameter(value, requires_grad=True))

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None,
                return_verts: bool = True, return_full_pose: bool = False,
                pose2rot: bool = True, camera=None, **kwargs) -> SMPLOutput:
        params = self._parameters
        betas = betas if betas is not None else params.get("betas")
        body_pose = body_pose if body_pose is not None else params.get("body_pose")
        global_orient = global_orient if global_orient is not None else params.get(
            "global_orient")
        transl = transl if transl is not None else params.get("transl")
        return self._run(betas, body_pose, global_orient, transl, return_verts,
                         return_full_pose, pose2rot, camera)


def create(model_path=None, model_type: str = "smpl", **kwargs) -> SMPL:
    """smplx.create for SMPL: a folder is searched in `model_path/smpl` and `model_path`."""
    if model_type.lower() != "smpl":
        raise ValueError(f"model_type: hmr-fast provides 'smpl' only, got {model_type!r}")
    return SMPL(model_path=model_path, **kwargs)
