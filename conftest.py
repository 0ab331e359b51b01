"""Root conftest: decides, before any Triton kernel is defined, whether kernels run compiled
(CUDA present) or under Triton's CPU interpreter; and seeds every test.

Seeds: each test starts with Python's, NumPy's and torch's global generators seeded from its
node id (stable across runs and machines), printed on failure by pytest's captured output.
``HMR_FAST_TEST_SEED=N pytest ...`` replays a run with another seed; tests that need their
own generator take one with ``tests.seeding.rng()``, drawn from the seeded global state.
"""

import os
import random
import zlib

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is defined, i.e. before hmr_fast.kernels
    # is imported anywhere in the test session.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed_every_test(request):
    override = os.environ.get("HMR_FAST_TEST_SEED")
    seed = int(override) if override else zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    print(f"test seed {seed} (replay: HMR_FAST_TEST_SEED={seed})")
    yield
