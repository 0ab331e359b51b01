"""Every kernel the fused SMPL path would launch on CUDA, the project's and torch's.

The Triton kernels run under the interpreter here, on CPU tensors, but the host code around
them is the CUDA path's: each aten op it dispatches that computes (fills, zeros, copies,
``.contiguous()``, cat, reductions, arithmetic) is one CUDA kernel there. A
``TorchDispatchMode`` counts those; views, allocations (``empty*``) and ops on empty tensors
launch nothing and are not counted. The project's own launches are counted at
``smpl_triton._launch`` (and torch ops the interpreter issues inside a launch are not, since
on CUDA the launch is one kernel). A host sync (``.item()``, ``float(t)``, ``bool(t)``:
``aten._local_scalar_dense``) is recorded separately.

Targets (issue 12): forward 3 launches, backward 4, no host sync, in full and keypoint mode,
also for a ``.sum()`` loss (expanded, stride-0 output gradients) and for outputs that get no
gradient. The same holds for the ``hmr_fast.SMPL`` layer with ``check_inputs=False``, from
its separate global_orient and body_pose to the gradients in leaf tensors' ``.grad``; the
default input check costs exactly a cat, a sum and one host sync.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hmr_fast import SMPL
from hmr_fast.ops import smpl_triton as st
from hmr_fast.ops.reference import rodrigues
from tests.test_smpl_triton import random_inputs, random_model, sparse_regressor

# Ops that launch nothing on CUDA: allocation and metadata.
_FREE = {
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::new_empty",
    "aten::new_empty_strided",
    "aten::sym_size",
    "aten::sym_stride",
    "aten::sym_numel",
    "aten::sym_storage_offset",
    "aten::is_contiguous",
    "aten::is_same_size",
}
_PROJECT_OPS = {"hmr_fast::smpl_fwd": st._fwd_impl, "hmr_fast::smpl_bwd": st._bwd_impl}
_SYNCS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal"}


def _numel(out) -> int:
    tensors = [t for t in (out if isinstance(out, (tuple, list)) else [out])
               if isinstance(t, torch.Tensor)]
    return max((t.numel() for t in tensors), default=1)


class LaunchCounter(TorchDispatchMode):
    """Counts the kernels the dispatched aten ops and the project's launcher would start."""

    def __init__(self):
        super().__init__()
        self.torch_ops: list[str] = []
        self.project: list[str] = []
        self.syncs: list[str] = []
        self._inside_launch = 0
        self.active = 0

    def __enter__(self):
        self.active += 1
        return super().__enter__()

    def __exit__(self, *exc):
        self.active -= 1
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in _PROJECT_OPS:
            # The project's registered ops are no kernels themselves: run their bodies with
            # this mode on and count what those dispatch and launch.
            with self:
                return _PROJECT_OPS[name](*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        if self._inside_launch:
            return out  # the interpreter's own host work: one kernel on CUDA
        if name in _SYNCS:
            self.syncs.append(name)
        elif not (func.is_view or name in _FREE or _numel(out) == 0):
            self.torch_ops.append(name)
        return out

    @property
    def total(self) -> int:
        return len(self.torch_ops) + len(self.project) + len(self.syncs)


@pytest.fixture
def counter(monkeypatch):
    c = LaunchCounter()
    real = st._launch

    def counting_launch(kernel, *args, **kw):
        if c.active:
            c.project.append(getattr(kernel, "__name__", str(kernel)))
        c._inside_launch += 1
        try:
            real(kernel, *args, **kw)
        finally:
            c._inside_launch -= 1

    monkeypatch.setattr(st, "_launch", counting_launch)
    return c


def _forward(model, reg, inputs, return_verts, use_transl=True, use_camera=True):
    betas, pose, transl, camera = inputs
    return st.smpl_forward_triton(
        model,
        betas,
        pose,
        transl if use_transl else None,
        pose2rot=True,
        return_verts=return_verts,
        keypoint_regressor=reg,
        camera=camera if use_camera else None,
    )


@pytest.mark.parametrize("return_verts", [True, False], ids=["full", "keypoint"])
@pytest.mark.parametrize("use_transl,use_camera", [(True, True), (False, True), (False, False)],
                         ids=["transl+camera", "camera", "bare"])
def test_forward_launches_three_kernels_and_never_syncs(counter, return_verts, use_transl,
                                                        use_camera):
    model = random_model(120, dtype=torch.float32)
    reg = sparse_regressor(120, dtype=torch.float32)
    inputs = random_inputs(5, 10, torch.float32)
    st.get_plan(model, reg, vertices=return_verts)  # built once per model, outside the count
    with counter:
        outs = _forward(model, reg, inputs, return_verts, use_transl, use_camera)
    assert outs[1].shape == (5, 45, 3)
    print("forward launches:", counter.project, counter.torch_ops, counter.syncs)
    assert counter.syncs == []
    assert counter.torch_ops == []
    assert len(counter.project) == 3


@pytest.mark.parametrize("return_verts", [True, False], ids=["full", "keypoint"])
@pytest.mark.parametrize("loss", ["weighted", "sum", "projected_only"])
def test_backward_launches_four_kernels(counter, return_verts, loss):
    model = random_model(120, dtype=torch.float32)
    reg = sparse_regressor(120, dtype=torch.float32)
    inputs = random_inputs(5, 10, torch.float32)
    outs = [o for o in _forward(model, reg, inputs, return_verts) if o is not None]
    if loss == "weighted":
        # Dense, contiguous gradients for every output.
        pairs = [(o, torch.randn_like(o)) for o in outs]
    elif loss == "sum":
        # What `.sum()` hands backward: expanded (all strides 0) gradients.
        pairs = [(o, torch.ones((), dtype=o.dtype).expand(o.shape)) for o in outs]
    else:
        # HMR's 2D loss: only the projected keypoints get a gradient.
        pairs = [(outs[-1], torch.randn_like(outs[-1]))]
    with counter:
        grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs],
                                    allow_unused=True)
    print("backward launches:", counter.project, counter.torch_ops, counter.syncs)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert counter.syncs == []
    assert counter.torch_ops == []
    assert len(counter.project) == 4


def test_counter_sees_torch_kernels_and_syncs(counter):
    # The counter itself can fail: fills, copies, cats and reductions count, views and
    # allocations do not, and a host read-back is a sync.
    x = torch.randn(4, 3)
    with counter:
        x.new_zeros(4, 3)
        x.expand(2, 4, 3).contiguous()
        torch.cat([x, x])
        s = x.sum()
        x.view(12)
        x.new_empty(5)
        float(s)
    assert counter.torch_ops == ["aten::new_zeros", "aten::clone", "aten::cat", "aten::sum"]
    assert counter.syncs == ["aten::_local_scalar_dense"]


def _layer(check_inputs: bool) -> SMPL:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the procedural stand-in body
        return SMPL(backend="triton", check_inputs=check_inputs, create_transl=False)


def _layer_inputs(batch: int, pose2rot: bool, shared_orient: bool = False) -> dict:
    gen = torch.Generator().manual_seed(batch)
    if pose2rot:
        orient, body = 0.3 * torch.randn(batch, 3, generator=gen), \
            0.3 * torch.randn(batch, 69, generator=gen)
    else:
        aa = 0.3 * torch.randn(batch * 24, 3, generator=gen)
        rot = rodrigues(aa)
        rot = rot.reshape(batch, 24, 3, 3)
        orient, body = rot[:, :1].clone(), rot[:, 1:].clone()
    if shared_orient:  # one orientation for the whole batch: expanded, row stride 0
        orient = orient[:1]
    leaves = dict(betas=torch.randn(batch, 10, generator=gen), global_orient=orient,
                  body_pose=body, transl=torch.randn(batch, 3, generator=gen),
                  camera=torch.rand(batch, 3, generator=gen) + 0.5)
    return {k: v.requires_grad_(True) for k, v in leaves.items()}


@pytest.mark.parametrize("return_verts", [True, False], ids=["full", "keypoint"])
@pytest.mark.parametrize("pose2rot", [True, False], ids=["axis-angle", "rotmat"])
def test_layer_launches_three_forward_four_backward_into_leaf_grads(counter, pose2rot,
                                                                    return_verts):
    layer = _layer(check_inputs=False)
    x = _layer_inputs(4, pose2rot)
    layer(**x, pose2rot=pose2rot, return_verts=return_verts)  # the plan, outside the count
    with counter:
        out = layer(**x, pose2rot=pose2rot, return_verts=return_verts)
    print("layer forward:", counter.project, counter.torch_ops, counter.syncs)
    assert (counter.project, counter.torch_ops, counter.syncs) == (
        ["_smpl_skeleton_fwd_kernel", "_smpl_vertex_fwd_kernel", "_smpl_readout_fwd_kernel"],
        [], [])
    outs = [o for o in (out.vertices, out.joints, out.projected_joints) if o is not None]
    grads = [torch.randn_like(o) for o in outs]
    counter.project.clear()
    with counter:
        # Into every leaf's .grad, as an optimiser step sees them: separate dense gradients
        # for global_orient and body_pose, so autograd copies nothing.
        torch.autograd.backward(outs, grads)
    print("layer backward:", counter.project, counter.torch_ops, counter.syncs)
    assert len(counter.project) == 4
    assert counter.torch_ops == [] and counter.syncs == []
    for name, leaf in x.items():
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape, name
        assert torch.isfinite(leaf.grad).all(), name


def test_layer_reads_an_expanded_orientation_in_place(counter):
    # A batch-1 global_orient broadcast to the batch is read through row stride 0: no copy.
    layer = _layer(check_inputs=False)
    x = _layer_inputs(3, True, shared_orient=True)
    layer(**x, pose2rot=True)
    with counter:
        out = layer(**x, pose2rot=True)
    assert counter.torch_ops == [] and counter.syncs == [] and len(counter.project) == 3
    full = layer(**{k: v.expand(3, -1) if k == "global_orient" else v for k, v in x.items()},
                 pose2rot=True)
    torch.testing.assert_close(out.vertices, full.vertices, rtol=0, atol=0)


def test_layer_default_input_check_costs_one_cat_one_sum_one_sync(counter):
    # The documented price of check_inputs=True (benchmarks/gpu_report.py times it on CUDA).
    layer = _layer(check_inputs=True)
    x = _layer_inputs(2, True)
    layer(**x, pose2rot=True)
    with counter:
        layer(**x, pose2rot=True)
    assert counter.torch_ops == ["aten::cat", "aten::sum"]
    assert counter.syncs == ["aten::_local_scalar_dense"]
    assert len(counter.project) == 3
