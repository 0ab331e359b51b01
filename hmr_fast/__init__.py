"""hmr-fast: HMR (Kanazawa et al., CVPR 2018) and a fast, drop-in SMPL layer.

    from hmr_fast import SMPL          # same API as smplx.SMPL
    from hmr_fast import HMR, Discriminator
    model = hmr_fast.load_pretrained("model_checkpoint.pt")   # SPIN's or hmr-fast's weights
"""

from hmr_fast.body.smpl import SMPL, SMPLLayer, SMPLOutput, create

__version__ = "0.1.0"
__all__ = ["SMPL", "SMPLLayer", "SMPLOutput", "create", "HMR", "Discriminator",
           "load_pretrained"]

_LAZY = {
    "HMR": "hmr_fast.models.hmr",
    "Discriminator": "hmr_fast.models.discriminator",
    "load_pretrained": "hmr_fast.pretrained",
}


def __getattr__(name):
    # The models pull in torchvision; keep `import hmr_fast` light for SMPL-only users.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hmr_fast' has no attribute {name!r}")
