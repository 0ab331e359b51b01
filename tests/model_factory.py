"""Random SMPL-format model files for tests, in the real file layouts.

Nothing here is SMPL data: the arrays are random, with SMPL's topology sizes and kinematic
tree, written as the original chumpy pickle, a cleaned pickle (scipy.sparse J_regressor) or
an npz.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from hmr_fast.body import constants

ROOT_PARENT = 4294967295  # uint32 max, as in the original kintree_table


def random_model_data(num_betas: int = 10, seed: int | None = None, max_weights: int = 4,
                      num_vertices: int = constants.NUM_VERTICES) -> dict:
    """A dict with every key of an SMPL model file, random values.

    Skinning weights have 1..max_weights nonzeros per vertex; J_regressor rows average a few
    random vertices; a 19-row cocoplus_regressor is included as HMR's files have one.
    """
    rng = np.random.default_rng(seed)
    v, j = num_vertices, constants.NUM_JOINTS
    weights = np.zeros((v, j))
    for i in range(v):
        count = rng.integers(1, max_weights + 1)
        cols = rng.choice(j, size=count, replace=False)
        weights[i, cols] = rng.random(count) + 0.05
    weights /= weights.sum(1, keepdims=True)

    def regressor(rows):
        reg = np.zeros((rows, v))
        for r in range(rows):
            cols = rng.choice(v, size=8, replace=False)
            reg[r, cols] = rng.random(8) + 0.1
        reg /= reg.sum(1, keepdims=True)
        return scipy.sparse.csc_matrix(reg)

    kintree = np.array([[ROOT_PARENT] + list(constants.PARENTS[1:]), list(range(j))],
                       dtype=np.int64)
    return {
        "v_template": rng.normal(size=(v, 3)) * 0.3,
        "shapedirs": rng.normal(size=(v, 3, num_betas)) * 0.02,
        "posedirs": rng.normal(size=(v, 3, 207)) * 0.01,
        "J_regressor": regressor(j),
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, v, size=(constants.NUM_FACES, 3)).astype(np.uint32),
        "cocoplus_regressor": regressor(19),
    }


def write_clean_pkl(data: dict, path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=2)
    return path


def write_npz(data: dict, path: Path) -> Path:
    arrays = {k: (np.asarray(v.todense()) if scipy.sparse.issparse(v) else v)
              for k, v in data.items()}
    np.savez(path, **arrays)
    return path


def write_chumpy_pkl(data: dict, path: Path) -> Path:
    """Pickle like the original release: dense arrays wrapped in chumpy `Ch` objects.

    A throw-away `chumpy` module is registered only while pickling, so the file refers to
    `chumpy.ch.Ch` exactly as the real files do, and loading it must work without chumpy.
    """
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # the state layout of chumpy.ch.Ch: the value lives in `x`
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self._itr = None
            self._parents = {}
            self._cache = {"r": None, "drs": {}}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    chumpy.ch = chumpy_ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        wrapped = {k: (Ch(v) if k in ("v_template", "shapedirs", "posedirs", "J", "weights")
                       else v) for k, v in data.items()}
        wrapped["J"] = Ch(np.asarray(data["J_regressor"] @ data["v_template"]))
        wrapped["bs_style"], wrapped["bs_type"] = "lbs", "lrotmin"
        with open(path, "wb") as handle:
            pickle.dump(wrapped, handle, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path
