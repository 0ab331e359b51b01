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
from hmr_fast.ops import dispatch, naive, reference

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


class VertexJointSelector(nn.Module):
    """smplx's `VertexJointSelector`: appends mesh vertices (face, feet, fingertips) to the
    kinematic joints. Same buffer name and persistence, so state_dicts match smplx's."""

    def __init__(self, vertex_ids: Sequence[int]):
        super().__init__()
        self.register_buffer("extra_joints_idxs", torch.tensor(list(vertex_ids),
                                                               dtype=torch.long))

    def forward(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """(B, V, 3), (B, J, 3) -> (B, J + E, 3)."""
        return torch.cat([joints, torch.index_select(vertices, 1, self.extra_joints_idxs)], 1)


# The model constants, smplx's buffers: every cached tensor derives from exactly these.
MODEL_CONSTANTS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights",
                   "parents")


def _same_state(old, new) -> bool:
    """Whether two `_constant_state` snapshots describe the same tensors with the same data."""
    return len(old) == len(new) and all(
        (a is None and b is None) or (a is not None and b is not None and a[0] is b[0]
                                      and a[1:] == b[1:])
        for a, b in zip(old, new))


class SMPLLayer(nn.Module):
    """Parameter-free SMPL: every input is given to `forward` (rotation matrices by default,
    as smplx's SMPLLayer).

    The model constants are smplx's buffers with smplx's names, layouts and persistence
    (`v_template`, `shapedirs`, `posedirs`, `J_regressor`, `lbs_weights`, `parents`,
    `faces_tensor`, `vertex_joint_selector.extra_joints_idxs`), so state_dicts load both ways.
    Everything the fast paths read (joint-shape regressor, compact skinning weights, the
    blend-GEMM operand, keypoint-mode subsets, Triton plans) is derived from them and rebuilt
    when any of them changes, in place or by assignment. A call takes the plain torch math
    (`hmr_fast.ops.naive`) whenever a fast path could differ (`hmr_fast.ops.dispatch`):
    tracing, compiling, functorch transforms, forward-mode AD, or a constant requiring grad.

    Args:
        model_path: .pkl/.npz file or a folder of SMPL_{GENDER} files; None uses
            $HMR_FAST_SMPL_DIR or, when unset, the embedded procedural body.
        kid_template_path: with age="kid", the SMIL template .npy (V, 3); as in smplx, its
            centred difference to the file's template becomes one extra shape direction.
        data_struct: an object whose attributes are the model file's keys (smplx's Struct).
        gender: "neutral", "male" or "female".
        age: "adult" or "kid".
        num_betas: shape coefficients to use, up to what the file holds (10 in v1.0, 300 in
            v1.1); more is clamped with a warning, as smplx does. The kid model adds one.
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
        v_template: a template replacing the file's (V, 3).
    """

    NUM_JOINTS = constants.NUM_BODY_JOINTS
    NUM_BODY_JOINTS = constants.NUM_BODY_JOINTS
    SHAPE_SPACE_DIM = 300

    def __init__(self, model_path=None, kid_template_path: str = "", data_struct=None,
                 gender: str = "neutral", age: str = "adult", num_betas: int = 10,
                 dtype: torch.dtype = torch.float32, vertex_ids=None, joint_mapper=None,
                 backend: str = "auto", keypoint_regressor=None, check_inputs: bool = True,
                 precision: str | None = None, ext: str = "pkl", use_hands: bool = True,
                 use_feet_keypoints: bool = True, v_template=None, batch_size: int = 1,
                 **kwargs):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if age not in ("adult", "kid"):
            raise ValueError(f"age must be 'adult' or 'kid', got {age!r}")
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
        self.age = age
        self.batch_size = batch_size
        self.backend = backend
        self.precision = precision
        self.check_inputs = check_inputs
        self.joint_mapper = joint_mapper
        self.dtype = dtype
        self._set_model(data, num_betas, dtype, v_template, kid_template_path)
        ids = _vertex_joint_ids(vertex_ids, use_hands, use_feet_keypoints)
        bad = [i for i in ids if not 0 <= i < self.num_vertices]
        if bad:
            raise ValueError(f"vertex_ids: ids {bad} outside [0, {self.num_vertices})")
        self.vertex_joint_selector = VertexJointSelector(ids)
        self.register_buffer("keypoint_regressor", None, persistent=False)
        if keypoint_regressor is not None:
            self.set_keypoint_regressor(keypoint_regressor)
        self._parents()  # read the tree now, not first inside a tracer

    # ----------------------------------------------------------------------------- model data
    def _set_model(self, data: dict, num_betas: int, dtype: torch.dtype, v_template,
                   kid_template_path) -> None:
        file_template = dense(data["v_template"])
        v_tmpl = file_template if v_template is None else dense(
            v_template.detach().cpu().numpy() if torch.is_tensor(v_template) else v_template)
        shapedirs = dense(data["shapedirs"])
        posedirs = dense(data["posedirs"])
        weights = dense(data["weights"])
        j_regressor = dense(data["J_regressor"])
        num_verts = file_template.shape[0]
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
        shapedirs = shapedirs[:, :, :num_betas]
        if self.age == "kid":
            shapedirs = np.concatenate(
                [shapedirs, _kid_shape_direction(kid_template_path, file_template)], axis=2)
            num_betas += 1
        self._num_betas = num_betas
        parents = _parents_from_kintree(data["kintree_table"])
        reference.tree_levels(parents)  # a bad tree fails here, naming kintree_table

        def buf(name, array, dt=dtype):
            self.register_buffer(name, torch.tensor(np.ascontiguousarray(array), dtype=dt))

        # smplx's buffers, names, layouts and registration order.
        buf("shapedirs", shapedirs)
        self.faces = data["f"] if isinstance(data["f"], np.ndarray) else np.asarray(data["f"])
        buf("faces_tensor", self.faces.astype(np.int64), dt=torch.long)
        buf("v_template", v_tmpl)
        buf("J_regressor", j_regressor)
        buf("posedirs", posedirs.reshape(-1, posedirs.shape[-1]).T)
        buf("parents", np.asarray(parents), dt=torch.long)
        buf("lbs_weights", weights)
        self.extra_regressors = {
            key: torch.as_tensor(dense(value), dtype=dtype)
            for key, value in data.items()
            if key not in ("J_regressor", "weights") and (scipy.sparse.issparse(value) or (
                isinstance(value, np.ndarray) and value.ndim == 2
                and value.shape[1] == num_verts and value.shape[0] != num_verts))
            and "regressor" in key.lower()
        }

    @property
    def num_betas(self) -> int:
        return self._num_betas

    @property
    def num_expression_coeffs(self) -> int:
        return 0

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints_kinematic(self) -> int:
        return self.J_regressor.shape[0]

    @property
    def vertex_joint_ids(self) -> torch.Tensor:
        """(E,) the mesh vertices appended to the joints."""
        return self.vertex_joint_selector.extra_joints_idxs

    def name(self) -> str:
        return "SMPL"

    def create_mean_pose(self, data_struct=None):
        return None

    def get_num_verts(self) -> int:
        return self.v_template.shape[0]

    def get_num_faces(self) -> int:
        return self.faces.shape[0]

    @torch.no_grad()
    def reset_params(self, **params_dict) -> None:
        """Set the named parameters from `params_dict`, zero the others (smplx's)."""
        for param_name, param in self.named_parameters():
            if param_name in params_dict:
                param[:] = torch.as_tensor(params_dict[param_name], dtype=param.dtype,
                                           device=param.device)
            else:
                param.fill_(0)

    def forward_shape(self, betas: torch.Tensor | None = None) -> SMPLOutput:
        """The shaped template v_template + shapedirs · β, as smplx's `forward_shape`."""
        if betas is None:
            betas = self._parameters.get("betas")
        if betas is None:
            betas = self.v_template.new_zeros(1, self.num_betas)
        v_shaped = naive.shape_blend(betas, self.v_template, self.shapedirs)
        return SMPLOutput(vertices=v_shaped, betas=betas, v_shaped=v_shaped)

    # ------------------------------------------------------------------- derived constants
    def _constants(self) -> list:
        """Every tensor a fast path reads or derives from (None where unset)."""
        return ([getattr(self, name) for name in MODEL_CONSTANTS]
                + [self.vertex_joint_selector.extra_joints_idxs, self.keypoint_regressor])

    def _derived(self) -> dict:
        """The cache of tensors derived from the constants, emptied when any constant is
        replaced (identity, storage) or edited in place (version counter)."""
        state = tuple(None if t is None else (t, t._version, t.data_ptr(), t.shape, t.dtype,
                                              t.device)
                      for t in self._constants())
        cache = self.__dict__.get("_derived_cache")
        if cache is None or not _same_state(cache[0], state):
            cache = (state, {})
            self.__dict__["_derived_cache"] = cache
        return cache[1]

    def __getstate__(self):
        # Derived tensors are rebuilt on demand: keep them out of pickles and deep copies.
        state = self.__dict__.copy()
        state.pop("_derived_cache", None)
        return state

    def _parents(self) -> tuple[int, ...]:
        """The kinematic tree as a tuple, from the `parents` buffer (re-read only when that
        buffer is replaced or edited, so tracers rarely see the read). Compiled code reads the
        tuple the last eager call (or construction, or `.to()`) left."""
        cached = self.__dict__.get("_parents_cache")
        if cached is not None and torch.compiler.is_compiling():
            return cached[1]
        buffer = self.parents
        state = (buffer, buffer._version, buffer.data_ptr(), buffer.device)
        if cached is None or not _same_state((cached[0],), (state,)):
            parents = tuple(int(p) for p in buffer.tolist())
            if parents and parents[0] != -1:
                parents = (-1,) + parents[1:]  # smplx stores the root's parent as -1
            reference.tree_levels(parents)
            cached = (state, parents)
            self.__dict__["_parents_cache"] = cached
        return cached[1]

    def model_tensors(self) -> reference.ModelTensors:
        """The constants in the layout the fast paths read (see `reference.ModelTensors`),
        derived from the public buffers and cached until one of them changes."""
        derived = self._derived()
        model = derived.get("model")
        if model is None:
            with torch.no_grad():
                model = _derive_model_tensors(self, self._parents())
            derived["model"] = model
        return model

    @property
    def blend_dirs(self) -> torch.Tensor:
        """(L + P, V * 3) [shapedirs rows; posedirs], derived (read-only)."""
        return self.model_tensors().blend_dirs

    @property
    def joint_template(self) -> torch.Tensor:
        """(J, 3) J_regressor · v_template, derived (read-only)."""
        return self.model_tensors().joint_template

    @property
    def joint_shapedirs(self) -> torch.Tensor:
        """(J, 3, L) J_regressor · shapedirs, derived (read-only)."""
        return self.model_tensors().joint_shapedirs

    @property
    def skin_idx(self) -> torch.Tensor:
        """(V, K) joint ids of each vertex's nonzero skinning weights, derived (read-only)."""
        return self.model_tensors().skin_idx

    @property
    def skin_w(self) -> torch.Tensor:
        """(V, K) those weights, derived (read-only)."""
        return self.model_tensors().skin_w

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

    def _keypoint_mode(self):
        """Model and keypoint regressor restricted to the vertices joints/keypoints read."""
        derived = self._derived()
        cached = derived.get("keypoint_mode")
        if cached is None:
            with torch.no_grad():
                needed = [self.vertex_joint_ids]
                if self.keypoint_regressor is not None:
                    needed.append(self.keypoint_regressor.abs().sum(0).nonzero()[:, 0])
                ids = torch.unique(torch.cat(needed))
                sub_regressor = None
                if self.keypoint_regressor is not None:
                    sub_regressor = self.keypoint_regressor[:, ids].contiguous()
                cached = (reference.vertex_subset(self.model_tensors(), ids), sub_regressor)
            derived["keypoint_mode"] = cached
        return cached

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_derived_cache", None)
        result = super()._apply(fn, *args, **kwargs)
        self.dtype = self.v_template.dtype
        if not torch.compiler.is_compiling():
            self._parents()  # re-read the moved tree now, not first inside a tracer
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

        One reduction over all inputs first (a cat and a sum, then one sync on CUDA, not one
        per input): NaN and inf propagate through a sum. So can a finite overflow; the
        per-input pass then clears it. The sync is the price of raising at the call: the
        host must see the value, and a device-side assert (torch._assert_async) would leave
        the CUDA context unusable instead of raising. ``check_inputs=False`` removes it;
        benchmarks/gpu_report.py times both. Skipped where reading a value back is impossible
        or would be recorded: tracing, compiling, functorch transforms, wrapped tensors
        (smplx's behaviour there) and CUDA graph capture.
        """
        if not self.check_inputs or not inputs or dispatch.recording():
            return
        if not all(dispatch.is_plain_tensor(v) for v in inputs.values()):
            return
        values = [value.detach().reshape(-1) for value in inputs.values()]
        if values[0].is_cuda and torch.cuda.is_current_stream_capturing():
            return  # a CUDA graph being captured: no value exists yet, and replays run no Python
        if math.isfinite(float(torch.cat(values).sum())):
            return
        for name, value in inputs.items():
            if not torch.isfinite(value.detach()).all():
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
        # (not max(..., default=): torch 2.11's dynamo breaks the graph on that keyword)
        batch = max(sizes.values()) if sizes else 1
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
        elif global_orient is None or body_pose is None:  # (an eye is a launch on CUDA)
            eye = torch.eye(3, dtype=dtype, device=device)
            if global_orient is None:
                global_orient = eye.expand(batch, 1, 3, 3)
            if body_pose is None:
                body_pose = eye.expand(batch, self.NUM_BODY_JOINTS, 3, 3)
        if betas is None:
            betas = torch.zeros(batch, self.num_betas, dtype=dtype, device=device)
        # Only inputs of batch 1 are expanded and reshapes use -1: a traced or exported graph
        # then keeps the batch dimension dynamic instead of baking in the example's size.
        betas = _broadcast(betas, batch)
        if betas.shape[1] < self.num_betas:
            betas = torch.cat([betas, betas.new_zeros(betas.shape[0],
                                                      self.num_betas - betas.shape[1])], dim=1)
        global_orient = _broadcast(global_orient, batch)
        body_pose = _broadcast(body_pose, batch)
        transl = None if transl is None else _broadcast(transl, batch)
        camera = None if camera is None else _broadcast(camera, batch)
        mapped = self.joint_mapper is not None
        # A joint mapper sees joints before translation, as in smplx; projection then waits.
        vertices, joints, keypoints, proj_joints, proj_keypoints = self._backend_forward(
            betas, global_orient, body_pose, None if mapped else transl, pose2rot,
            return_verts, None if mapped else camera)
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
            full_pose=self._full_pose(global_orient, body_pose, pose2rot)
            if return_full_pose else None, global_orient=global_orient,
            # smplx's SMPL leaves `transl` unset in its output.
            transl=None, betas=betas, body_pose=body_pose, keypoints=keypoints,
            projected_joints=proj_joints, projected_keypoints=proj_keypoints)

    def _resolve_backend(self, tensor: torch.Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        return "triton" if tensor.is_cuda else "torch"

    def _full_pose(self, global_orient, body_pose, pose2rot: bool) -> torch.Tensor:
        """(B, 72) axis-angle, or (B, 24, 3, 3) rotation matrices: smplx's ``full_pose``."""
        if pose2rot:
            return torch.cat([global_orient, body_pose], dim=1)
        return torch.cat([global_orient.reshape(-1, 1, 3, 3),
                          body_pose.reshape(-1, self.NUM_BODY_JOINTS, 3, 3)], dim=1)

    def _backend_forward(self, betas, global_orient, body_pose, transl, pose2rot, return_verts,
                         camera):
        """(vertices, joints, keypoints, projected joints, projected keypoints)."""
        if dispatch.plain_reason([betas, global_orient, body_pose, transl, camera],
                                 self._constants()) is not None:
            vertices, joints, keypoints = self._plain_forward(
                betas, self._full_pose(global_orient, body_pose, pose2rot), transl, pose2rot)
        elif self._resolve_backend(betas) == "triton":
            # The kernels read the two pose tensors in place: no concatenation launch, and
            # each gets its own dense gradient (no copy into a leaf's .grad).
            size = 3 if pose2rot else 9
            pose = (global_orient.reshape(-1, size),
                    body_pose.reshape(-1, self.NUM_BODY_JOINTS * size))
            return self._triton_forward(betas, pose, transl, pose2rot, return_verts, camera)
        else:
            full_pose = self._full_pose(global_orient, body_pose, pose2rot)
            if return_verts:
                model, regressor = self.model_tensors(), self.keypoint_regressor
            else:
                model, regressor = self._keypoint_mode()
            vertices, joints, keypoints = reference.smpl_forward(
                model, betas, full_pose, transl, regressor, fused_cpu=True,
                pose2rot=pose2rot)
        proj_joints = proj_keypoints = None
        if camera is not None:
            proj_joints = reference.weak_perspective(joints, camera)
            if keypoints is not None:
                proj_keypoints = reference.weak_perspective(keypoints, camera)
        return vertices, joints, keypoints, proj_joints, proj_keypoints

    def _plain_forward(self, betas, full_pose, transl, pose2rot):
        """smplx's math on the public buffers (`hmr_fast.ops.naive`): every autograd mode,
        transform and tracer sees plain torch ops, and gradients reach every constant."""
        vertices, joints = naive.lbs(betas, full_pose, self.v_template, self.shapedirs,
                                     self.posedirs, self.J_regressor, self._parents(),
                                     self.lbs_weights, pose2rot=pose2rot)
        if transl is not None:
            vertices = vertices + transl[:, None]
            joints = joints + transl[:, None]
        joints = self.vertex_joint_selector(vertices, joints)
        keypoints = None
        if self.keypoint_regressor is not None:
            keypoints = torch.einsum("qv,bvc->bqc", self.keypoint_regressor, vertices)
        return vertices, joints, keypoints

    def _triton_forward(self, betas, pose, transl, pose2rot, return_verts, camera):
        from hmr_fast.ops import smpl_triton

        # Plans (kernel tables, the keypoint-mode vertex subset) live with the other derived
        # tensors, so an edit of any constant rebuilds them.
        derived = self._derived()
        key = ("triton_plan", bool(return_verts))
        plan = derived.get(key)
        if plan is None:
            with torch.no_grad():
                plan = smpl_triton.make_plan(self.model_tensors(), self.keypoint_regressor,
                                             vertices=bool(return_verts))
            derived[key] = plan
        return smpl_triton.smpl_forward_triton(
            self.model_tensors(), betas, pose, transl, pose2rot=pose2rot,
            return_verts=return_verts, keypoint_regressor=self.keypoint_regressor,
            camera=camera, plan=plan, precision=self.precision)

    def extra_repr(self) -> str:
        source = self.model_path or "embedded procedural body"
        return (f"model={source}, gender={self.gender}, age={self.age}, "
                f"num_betas={self.num_betas}, backend={self.backend}")


def _broadcast(value: torch.Tensor, batch: int) -> torch.Tensor:
    """`value` (1 or B, ...) as (B, ...); untouched when it already has B rows."""
    return value if value.shape[0] == batch else value.expand(batch, *value.shape[1:])


def _derive_model_tensors(layer: SMPLLayer, parents: tuple) -> reference.ModelTensors:
    """The fast paths' ModelTensors from the layer's public buffers (no autograd)."""
    v_template, shapedirs = layer.v_template.detach(), layer.shapedirs.detach()
    posedirs, j_regressor = layer.posedirs.detach(), layer.J_regressor.detach()
    dtype = v_template.dtype
    num_verts, _, num_betas = shapedirs.shape
    blend_dirs = torch.cat([shapedirs.reshape(num_verts * 3, num_betas).t(), posedirs])
    blend_dirs = blend_dirs.to(dtype).contiguous()
    # The joint-shape regressor replaces regressing the shaped mesh; formed in float64.
    j64 = j_regressor.double()
    joint_template = (j64 @ v_template.double()).to(dtype)
    joint_shapedirs = torch.einsum("jv,vcl->jcl", j64, shapedirs.double()).to(dtype)
    skin_idx, skin_w = compact_skinning_weights(layer.lbs_weights.detach().cpu().double()
                                                .numpy())
    dense_blend = None
    if v_template.device.type == "cpu" and dtype == torch.float32:
        dense_blend = reference.dense_blend_weight(v_template, blend_dirs)
    device = v_template.device
    return reference.ModelTensors(
        v_template.contiguous(), blend_dirs, joint_template.contiguous(),
        joint_shapedirs.contiguous(), parents,
        torch.as_tensor(skin_idx, device=device),
        torch.as_tensor(skin_w, dtype=dtype, device=device),
        layer.vertex_joint_ids, dense_blend)


def _kid_shape_direction(path, file_template: np.ndarray) -> np.ndarray:
    """smplx's kid shape direction: the SMIL template, centred, minus the file's template.

    Returns (V, 3, 1).
    """
    if not path or not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"kid_template_path: age='kid' needs the SMIL template .npy "
                                f"(V, 3); got {path!r}, which is not a file")
    try:
        smil = np.asarray(np.load(os.fspath(path)), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ValueError(f"kid_template_path: could not read {path!r} as .npy ({err})") from None
    if smil.shape != file_template.shape:
        raise ValueError(f"kid_template_path: expected an array of shape {file_template.shape}"
                         f" in {path!r}, got {smil.shape}")
    smil = smil - smil.mean(axis=0)
    return (smil - file_template)[:, :, None]


class SMPL(SMPLLayer):
    """Drop-in `smplx.SMPL`: optional learnable betas/global_orient/body_pose/transl, and
    axis-angle poses by default (pose2rot=True)."""

    def __init__(self, model_path=None, kid_template_path: str = "", data_struct=None,
                 create_betas: bool = True, betas=None, num_betas: int = 10,
                 create_global_orient: bool = True, global_orient=None,
                 create_body_pose: bool = True, body_pose=None, create_transl: bool = True,
                 transl=None, dtype: torch.dtype = torch.float32, batch_size: int = 1,
                 **kwargs):
        # smplx's positional order, so positional client calls bind the same way.
        super().__init__(model_path=model_path, kid_template_path=kid_template_path,
                         data_struct=data_struct, num_betas=num_betas, dtype=dtype,
                         batch_size=batch_size, **kwargs)
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
        # smplx reads the attributes, so a subclass's replacements are honoured too.
        betas = betas if betas is not None else getattr(self, "betas", None)
        body_pose = body_pose if body_pose is not None else getattr(self, "body_pose", None)
        global_orient = (global_orient if global_orient is not None
                         else getattr(self, "global_orient", None))
        transl = transl if transl is not None else getattr(self, "transl", None)
        return self._run(betas, body_pose, global_orient, transl, return_verts,
                         return_full_pose, pose2rot, camera)


def create(model_path=None, model_type: str = "smpl", **kwargs) -> SMPL:
    """smplx.create for SMPL: a folder is searched in `model_path/smpl` and `model_path`."""
    if model_type.lower() != "smpl":
        raise ValueError(f"model_type: hmr-fast provides 'smpl' only, got {model_type!r}")
    return SMPL(model_path=model_path, **kwargs)
