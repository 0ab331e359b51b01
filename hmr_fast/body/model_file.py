"""Reading SMPL model files: original chumpy pickles (without chumpy), cleaned pickles, npz.

The original SMPL `.pkl` files pickle several arrays as chumpy `Ch` objects. chumpy no longer
installs on current Python/numpy, so the unpickler below maps every `chumpy.*` class to a
stand-in that keeps the pickled state, and the loader takes the array from it (`x`, the value
a `Ch` holds). scipy.sparse matrices (J_regressor, HMR's cocoplus_regressor) load as they are.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                 "kintree_table", "f")
GENDERS = ("neutral", "male", "female")
MODEL_DIR_ENV = "HMR_FAST_SMPL_DIR"

# Names the model files go by: smplx's convention first, then the original release's.
_FILE_NAMES = {
    "neutral": ("SMPL_NEUTRAL", "basicModel_neutral_lbs_10_207_0_v1.0.0",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0"),
    "male": ("SMPL_MALE", "basicmodel_m_lbs_10_207_0_v1.0.0", "basicModel_m_lbs_10_207_0_v1.0.0",
             "basicmodel_m_lbs_10_207_0_v1.1.0"),
    "female": ("SMPL_FEMALE", "basicModel_f_lbs_10_207_0_v1.0.0",
               "basicmodel_f_lbs_10_207_0_v1.1.0"),
}


class _ChumpyStandIn:
    """Takes the place of any chumpy class while unpickling; keeps the pickled state."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state

    def to_array(self) -> np.ndarray:
        state = getattr(self, "_state", None)
        if isinstance(state, Mapping):
            for key in ("x", "a"):
                if key in state:
                    value = state[key]
                    return value.to_array() if isinstance(value, _ChumpyStandIn) else \
                        np.asarray(value)
        raise ValueError("a chumpy object in the file holds no array ('x') in its state")


class _ModelUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        return super().find_class(module, name)


def _to_plain(value):
    """chumpy stand-ins to numpy arrays; everything else unchanged."""
    if isinstance(value, _ChumpyStandIn):
        return value.to_array()
    return value


def resolve_model_path(model_path: str | os.PathLike | None, gender: str = "neutral",
                       ext: str | None = None) -> Path | None:
    """The model file to load, or None for the embedded procedural body.

    Args:
        model_path: a .pkl/.npz file, a directory holding SMPL_{GENDER}.{pkl,npz} (also in a
            `smpl/` subfolder, or under the original release's names), or None to use
            $HMR_FAST_SMPL_DIR when set.
        gender: neutral, male or female.
        ext: preferred extension in a directory ("pkl" or "npz"); both are tried.
    Raises:
        ValueError: unknown gender.
        FileNotFoundError: nothing found, naming every path searched.
    """
    gender = gender.lower() if isinstance(gender, str) else gender
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if model_path is None:
        env_dir = os.environ.get(MODEL_DIR_ENV)
        if not env_dir:
            return None
        model_path = env_dir
    path = Path(model_path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"SMPL model_path {str(path)!r} does not exist")
    exts = ("pkl", "npz") if ext in (None, "pkl") else ("npz", "pkl")
    searched = []
    for folder in (path, path / "smpl"):
        for stem in _FILE_NAMES[gender]:
            for suffix in exts:
                candidate = folder / f"{stem}.{suffix}"
                searched.append(str(candidate))
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(
        f"no SMPL model file for gender {gender!r} in {str(path)!r}; searched: "
        + ", ".join(searched))


def load_model_file(path: str | os.PathLike) -> dict:
    """Read an SMPL model file into a dict of numpy arrays / scipy.sparse matrices.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: truncated or not a model file, or required keys missing (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=True) as npz:
                data = {key: npz[key] for key in npz.files}
        else:
            with open(path, "rb") as handle:
                data = _ModelUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, ImportError, IndexError, TypeError, KeyError) as err:
        raise ValueError(f"{str(path)!r} is not a readable SMPL model file "
                         f"(truncated or wrong format): {type(err).__name__}: {err}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{str(path)!r} is not an SMPL model file: it holds a "
                         f"{type(data).__name__}, expected a dict of arrays")
    data = {key: _to_plain(value) for key, value in data.items()}
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"SMPL model file {str(path)!r} lacks required keys {missing} "
                         f"(has {sorted(data)})")
    return data


def dense(array) -> np.ndarray:
    """scipy.sparse or array-like to a dense float64 numpy array."""
    if scipy.sparse.issparse(array):
        return np.asarray(array.todense(), dtype=np.float64)
    return np.asarray(array, dtype=np.float64)
