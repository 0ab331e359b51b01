"""`load_pretrained`: released HMR-family weights as one eval-mode module.

    model = hmr_fast.load_pretrained("model_checkpoint.pt", mean_params="smpl_mean_params.npz")
    out = model(images)        # images (B, 3, 224, 224), ImageNet-normalised RGB crops
    out["rotmats"], out["betas"], out["cam"], out["vertices"], out["joints"]

The format is recognised by the checkpoint's contents, not its name:

* hmr-fast's own checkpoints (`hmr-fast train`, any backbone; the crop size is the one it
  was trained with, `model.image_size`);
* SPIN's released format (`hmr_fast.models.spin`): ``{'model': state_dict, ...}`` or a bare
  state_dict, a ResNet-50 plus `fc1`, `fc2`, `decpose`, `decshape`, `deccam` and the
  `init_*` buffers; without the buffers the mean parameters come from `mean_params`.

Anything else is refused with the keys that were found and the formats supported.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from hmr_fast.ops.reference import rodrigues

SPIN_KEYS = ("conv1.weight", "layer4.0.conv1.weight", "fc1.weight", "fc2.weight",
             "decpose.weight", "decshape.weight", "deccam.weight")
SPIN_BUFFERS = ("init_pose", "init_shape", "init_cam")
FORMATS = ("hmr-fast checkpoint (`hmr-fast train`: 'model' and 'config' entries)",
           "SPIN checkpoint ({'model': state_dict} or a state_dict with "
           + ", ".join(SPIN_KEYS) + ")")


class PretrainedHMR(nn.Module):
    """A pretrained regressor and the SMPL layer that turns its parameters into a mesh.

    forward(images (B, 3, S, S)) -> dict of ``rotmats`` (B, 24, 3, 3), ``betas`` (B, 10),
    ``cam`` (B, 3) = [s, tx, ty] of the last iteration, ``vertices`` (B, V, 3) and ``joints``
    (B, 45, 3) (the SMPL layer's: 24 kinematic joints, then smplx's 21 vertex joints).
    """

    def __init__(self, regressor: nn.Module, smpl: nn.Module | None, kind: str,
                 image_size: int, crop_padding: str = "zero"):
        super().__init__()
        self.regressor = regressor
        self.smpl = smpl
        self.kind = kind
        self.image_size = image_size
        # What filled its training crops beyond the image (SPIN's: black; hmr-fast's: the
        # checkpoint's crop_padding): prediction crops the same way.
        self.crop_padding = crop_padding

    def _check(self, images) -> None:
        size = self.image_size
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1:] != (3, size,
                                                                                   size):
            got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"images: expected (B, 3, {size}, {size}) ImageNet-normalised "
                             f"RGB crops, got {got}")
        if not images.is_floating_point():
            raise TypeError(f"images: expected a floating-point tensor, got {images.dtype}")

    def forward(self, images: torch.Tensor) -> dict:
        self._check(images)
        if self.kind == "hmr-fast":
            out = self.regressor(images, return_verts=True)
            batch = images.shape[0]
            rotmats = rodrigues(out["pose"].reshape(-1, 3)).reshape(batch, -1, 3, 3)
            return {"rotmats": rotmats, "betas": out["betas"], "cam": out["cam"],
                    "vertices": out["vertices"], "joints": out["joints_3d"]}
        rotmats, betas, cam = self.regressor(images)
        body = self.smpl(betas=betas, body_pose=rotmats[:, 1:], global_orient=rotmats[:, :1],
                         pose2rot=False)
        return {"rotmats": rotmats, "betas": betas, "cam": cam, "vertices": body.vertices,
                "joints": body.joints}


def _read(path: str, map_location):
    """torch.load, safely where the file allows it. hmr-fast's own checkpoints hold RNG
    states (numpy arrays), which only the full unpickler reads; the user chose the file."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as err:
        raise ValueError(f"checkpoint {path!r}: not a readable torch file ({err})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"checkpoint {path!r}: not a readable torch file ({err})") from None


def _describe(state) -> str:
    if not isinstance(state, dict):
        return f"a {type(state).__name__}"
    keys = list(state)
    text = f"top-level keys {keys[:12]}" + (" ..." if len(keys) > 12 else "")
    inner = state.get("model")
    if isinstance(inner, dict):
        sub = list(inner)
        text += f"; 'model' holds {len(sub)} entries, e.g. {sub[:8]}"
    return text


def _spin_state(state) -> dict | None:
    """The SPIN state_dict inside `state` ('model' entry or bare; DataParallel's 'module.'
    prefix removed), or None if `state` is not SPIN's format."""
    if not isinstance(state, dict):
        return None
    inner = state.get("model", state)
    if not isinstance(inner, dict):
        return None
    if inner and all(str(k).startswith("module.") for k in inner):
        inner = {k[len("module."):]: v for k, v in inner.items()}
    if all(k in inner and torch.is_tensor(inner[k]) for k in SPIN_KEYS):
        return inner
    return None


def _default_smpl(smpl, map_location) -> nn.Module:
    from hmr_fast.body.smpl import SMPLLayer

    if smpl is None or isinstance(smpl, (str, os.PathLike)):
        smpl = SMPLLayer(model_path=smpl)
    return smpl.to(map_location)


def load_pretrained(path, mean_params=None, map_location="cpu", smpl=None) -> PretrainedHMR:
    """Load released weights (see the module docstring) as an eval-mode `PretrainedHMR`.

    Args:
        path: the checkpoint file (for hmr-fast, also a run directory).
        mean_params: SPIN's `smpl_mean_params.npz`; read only when the checkpoint lacks the
            `init_pose`/`init_shape`/`init_cam` buffers.
        map_location: device to load onto.
        smpl: the SMPL layer for SPIN's parameters: a module, a model path, or None for
            $HMR_FAST_SMPL_DIR / the embedded body (hmr-fast checkpoints carry their own).
    """
    from hmr_fast.models import spin

    path = os.fspath(path)
    if os.path.isdir(path):
        from hmr_fast.train.build import load_trained_model

        model, cfg = load_trained_model(path, map_location)
        return PretrainedHMR(model, None, "hmr-fast", int(cfg.image_size),
                             cfg.crop_padding).eval()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    state = _read(path, map_location)
    if isinstance(state, dict) and "config" in state and isinstance(state.get("model"), dict):
        from hmr_fast.train.build import load_trained_model

        model, cfg = load_trained_model(path, map_location)
        return PretrainedHMR(model, None, "hmr-fast", int(cfg.image_size),
                             cfg.crop_padding).eval()
    weights = _spin_state(state)
    if weights is None:
        raise ValueError(f"checkpoint {path!r}: unrecognised format ({_describe(state)}); "
                         "supported: " + "; ".join(FORMATS))
    has_buffers = all(k in weights for k in SPIN_BUFFERS)
    if not has_buffers and mean_params is None:
        raise ValueError(f"checkpoint {path!r} is SPIN's format without the init_pose/"
                         "init_shape/init_cam buffers: pass mean_params= (SPIN's "
                         "smpl_mean_params.npz)")
    means = None if has_buffers else spin.load_mean_params(mean_params)
    regressor = spin.SPINRegressor(means)
    if not has_buffers:
        weights = {**weights, **{f"{spin.BUFFER_FOR_KEY[k]}": torch.as_tensor(v).reshape(1, -1)
                                 for k, v in means.items()}}
    from hmr_fast.train.checkpoint import load_model_weights

    load_model_weights(regressor, weights, "SPIN regressor", path)
    return PretrainedHMR(regressor.to(map_location), _default_smpl(smpl, map_location),
                         "spin", spin.IMAGE_SIZE).eval()
