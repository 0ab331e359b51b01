"""Root conftest: decides, before any Triton kernel is defined, whether kernels run compiled
(CUDA present) or under Triton's CPU interpreter."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is defined, i.e. before hmr_fast.kernels
    # is imported anywhere in the test session.
    os.environ.setdefault("TRITON_INTERPRET", "1")
