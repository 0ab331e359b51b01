"""A NumPy generator for tests, drawn from the global state the root conftest seeds per test
(so a failure replays with HMR_FAST_TEST_SEED)."""

from __future__ import annotations

import numpy as np


def rng() -> np.random.Generator:
    return np.random.default_rng(np.random.randint(2**31))
