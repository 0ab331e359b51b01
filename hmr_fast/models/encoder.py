"""Image encoders for HMR: images (B, 3, S, S) -> global features (B, F).

A small registry keeps the backbone a seam: the regressor only needs ``(module, feature_dim)``
from :func:`build_encoder`, so another backbone is one :func:`register_encoder` call away.

Weights are never downloaded: ``pretrained`` is a path to a local torchvision state_dict
(e.g. ``resnet50-11ad3fa6.pth``), ``"hub"`` for torchvision's file of that backbone in torch's
hub checkpoint cache (``$TORCH_HOME/hub/checkpoints``, filled by any earlier
``torchvision.models.resnet50(weights=...)`` on the machine), or None for random
initialisation.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torchvision
from torch import nn

# name -> (factory(pretrained) -> module, feature_dim)
_ENCODERS: dict[str, tuple[Callable[[str | None], nn.Module], int]] = {}


def register_encoder(name: str, feature_dim: int):
    """Decorator: registers ``factory(pretrained: str | None) -> nn.Module`` under ``name``.

    The module must map (B, 3, S, S) images to (B, feature_dim) features.
    """

    def deco(factory):
        _ENCODERS[name] = (factory, feature_dim)
        return factory

    return deco


def available_encoders() -> tuple[str, ...]:
    return tuple(sorted(_ENCODERS))


def build_encoder(name: str, pretrained: str | os.PathLike | None = None) -> tuple[nn.Module, int]:
    """Builds a registered encoder. Returns (module, feature_dim)."""
    if name not in _ENCODERS:
        raise ValueError(f"backbone must be one of {available_encoders()}, got {name!r}")
    factory, feature_dim = _ENCODERS[name]
    return factory(None if pretrained is None else os.fspath(pretrained)), feature_dim


# torchvision's ImageNet weight files, by backbone (the names its download URLs end in),
# preferred first: IMAGENET1K_V1, the weights the paper-era ResNets had, then V2.
HUB_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}


def hub_weights(arch: str) -> str:
    """The path of torchvision's ImageNet weights for ``arch`` in torch's hub cache; a clear
    FileNotFoundError naming the folder and the files looked for when absent."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    names = HUB_FILES.get(arch, ())
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"pretrained='hub': none of {list(names)} in {folder} (nothing is downloaded: copy "
        f"torchvision's {arch} ImageNet weights there, or pass their path)")


def load_local_state_dict(path: str) -> dict:
    """A state_dict from a local file (a bare state_dict or a checkpoint with 'state_dict')."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained: backbone weights file {path!r} does not exist (weights are never "
            "downloaded; pass a local torchvision state_dict, or None for random init)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained: {path!r} does not hold a state_dict")
    return state


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier: (B, 3, S, S) -> (B, F) average-pooled."""

    def __init__(self, arch: str, pretrained: str | None = None):
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        if pretrained is not None:
            if pretrained == "hub":
                pretrained = hub_weights(arch)
            state = load_local_state_dict(pretrained)
            # The ImageNet classifier is dropped below; its weights are not needed.
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            own = net.state_dict()
            wrong = [f"{k}: file {tuple(v.shape)}, {arch} {tuple(own[k].shape)}"
                     for k, v in state.items() if k in own and tuple(v.shape) != own[k].shape]
            if wrong:
                raise ValueError(f"pretrained: {pretrained!r} is not a torchvision {arch} "
                                 f"state_dict ({len(wrong)} shapes differ, e.g. {wrong[0]})")
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"pretrained: {pretrained!r} is not a torchvision {arch} state_dict "
                    f"(missing keys {missing[:5]}, unexpected keys {unexpected[:5]})"
                )
        net.fc = nn.Identity()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


for _arch, _dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)):
    register_encoder(_arch, _dim)(
        lambda pretrained, arch=_arch: ResNetEncoder(arch, pretrained=pretrained)
    )
