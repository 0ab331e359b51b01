"""torch.compile with inductor over the fused SMPL op, the SMPL layer and an HMR training step
(issue 12, item 4): no graph break, and the compiled values within the parity budgets.

Skipped without CUDA: only there is the op registered with `torch.library.triton_op`, so
that inductor sees and calls the Triton kernels (the CPU suite compiles with aot_eager over
the interpreter's opaque custom op).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from benchmarks import gpu_parity as gp
from benchmarks.gpu_training import synthetic_batch, train_config
from tests.seeding import rng

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not CUDA,
        reason="needs CUDA: inductor over the compiled Triton SMPL op (run "
        "benchmarks/gpu_check.sh on a GPU machine)",
    ),
]


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(int(rng().integers(2**31)))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Each test compiles its own graphs; leftovers would count against the recompile limit.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def layer():
    from hmr_fast import SMPL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return SMPL(backend="triton", keypoint_regressor="hmr").to("cuda")


@pytest.mark.parametrize("return_verts", [False, True], ids=["keypoints", "full"])
def test_inductor_over_the_fused_op(layer, return_verts):
    """smpl_forward_triton compiled whole by inductor (fullgraph): the generated code calls
    the project's kernels, and its values and gradients are within the fp32 budgets of the
    float64 reference."""
    from torch._inductor.utils import run_and_get_code

    from hmr_fast.ops import smpl_triton as st

    model = layer.model_tensors()
    reg = layer.keypoint_regressor
    plan = st.get_plan(model, reg, vertices=return_verts)

    def fused(betas, body_pose, global_orient, transl, camera, pose2rot=True,
              return_verts=return_verts):
        pose = torch.cat([global_orient, body_pose], 1)
        verts, joints, kps, pj, pk = st.smpl_forward_triton(
            model, betas, pose, transl, pose2rot=True, return_verts=return_verts,
            keypoint_regressor=reg, camera=camera, plan=plan,
        )
        return {"vertices": verts, "joints": joints, "keypoints": kps,
                "projected_joints": pj, "projected_keypoints": pk}

    x = gp.make_inputs(37, torch.float32, "cuda", True, _generator())
    explained = torch._dynamo.explain(fused)(**x)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend="inductor")
    # Inputs that require grad throughout, so that one (training) graph serves every call.
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    comp, code = run_and_get_code(compiled, **leaves)
    assert "smpl" in "\n".join(code).lower(), "inductor's code does not call the SMPL kernels"
    # Compiled and eager run the same kernels: far closer than the budget.
    eager = fused(**leaves)
    for name, value in eager.items():
        if value is not None:
            torch.testing.assert_close(comp[name].detach(), value.detach(), rtol=1e-6, atol=1e-6)
    result = gp.check_parity(compiled, layer, x, pose2rot=True, return_verts=return_verts)
    assert result.ok, result.summary()
    assert set(result.grad_rel) == set(gp.INPUTS)


def test_inductor_over_the_layer(layer):
    """The layer compiled by inductor (fullgraph). Compiled, it takes its plain torch path
    (hmr_fast.ops.dispatch); eager, the fused kernels: both within budget of the reference."""

    def run(betas, body_pose, global_orient, transl, camera, pose2rot=True, return_verts=True):
        out = layer(betas=betas, body_pose=body_pose, global_orient=global_orient,
                    transl=transl, camera=camera, pose2rot=pose2rot,
                    return_verts=return_verts)
        return {name: getattr(out, name) for name in gp.OUTPUTS}

    x = gp.make_inputs(37, torch.float32, "cuda", False, _generator())
    explained = torch._dynamo.explain(run)(**x, pose2rot=False, return_verts=False)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="inductor")
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    for return_verts in (False, True):
        result = gp.check_parity(compiled, layer, x, pose2rot=False, return_verts=return_verts)
        assert result.ok, (return_verts, result.summary())
        # Grad-requiring inputs as in check_parity: the same compiled graph, no recompile.
        eager = run(**leaves, pose2rot=False, return_verts=return_verts)
        comp = compiled(**leaves, pose2rot=False, return_verts=return_verts)
        for name, value in eager.items():
            if value is not None:
                assert (comp[name] - value).abs().max() <= 2 * gp.TOL32_M, name


class TinyEncoder(nn.Module):
    """A small conv stem in place of the ResNet: the step's SMPL, losses and discriminator
    are what this test is about, and inductor compiles a ResNet-50 backward for minutes."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            # No bias before the batch norm: its gradient would be exactly zero in exact
            # arithmetic, i.e. rounding noise that no two implementations share.
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, feature_dim),
        )

    def forward(self, images):
        return self.net(images)


def test_inductor_over_an_hmr_training_step():
    """The encoder half of TrainStep (HMR forward with the fused SMPL, its losses, the fused
    discriminator's adversarial term) compiled by inductor with fullgraph, forward and
    backward: same loss and parameter gradients as eager."""
    from hmr_fast import losses as L
    from hmr_fast.models.hmr import HMR
    from hmr_fast.train.build import build_discriminator
    from hmr_fast.train.distributed import DistInfo
    from hmr_fast.train.ranges import Ranges
    from hmr_fast.train.step import TrainStep, split_fakes

    device = torch.device("cuda")
    pytest.importorskip("yaml", reason="the training config needs PyYAML")
    cfg = train_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = HMR(backbone="resnet18", image_size=64, num_iters=3, smpl_backend="triton",
                    dropout=0.0)
    model.encoder = TinyEncoder(model.feature_dim)
    model = model.to(device).train()  # dropout 0: no RNG, so eager and compiled can agree
    disc = build_discriminator(device, "triton").train()
    step = TrainStep(cfg, model, disc, device, DistInfo(), Ranges())
    batch, _ = synthetic_batch(8, 64, device, _generator())

    def encoder_loss(batch):
        out = model(batch["img"])
        terms = step.supervised_terms(out, batch)
        fake_pose, fake_betas = split_fakes(out["thetas"])
        terms["adv"] = L.encoder_adversarial_loss(disc(fake_pose, fake_betas))
        weights = step.weights()
        return sum(weights[k] * v for k, v in terms.items())

    explained = torch._dynamo.explain(encoder_loss)(batch)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(encoder_loss, fullgraph=True, backend="inductor")
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for fn in (encoder_loss, compiled):
        loss = fn(batch)
        results.append((loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert torch.isfinite(loss_e) and loss_e > 0
    # Eager runs the fused SMPL kernels, compiled the layer's plain path: fp32 budgets.
    assert abs(loss_c.item() - loss_e.item()) <= 1e-4 * abs(loss_e.item()), (loss_c, loss_e)
    for p, ge, gc in zip(params, grads_e, grads_c):
        assert (ge is None) == (gc is None)
        if ge is None:
            continue
        norm = ge.norm().item()
        rel = (gc - ge).norm().item() / max(norm, 1e-30)
        assert rel <= 1e-3 or norm == gc.norm().item() == 0.0, (tuple(p.shape), rel)


def test_inductor_access_analysis_with_this_machines_torch():
    # The CPU suite runs tests/test_inductor_access.py under the pinned torch; here it runs
    # under the GPU machine's (2.11 there), whose analysis API differs, with the real driver.
    from tests import test_inductor_access as access

    access.test_inductor_sees_exactly_each_kernels_outputs()
    access.test_compile_decomposes_the_ops_into_their_kernels_on_fake_cuda()
