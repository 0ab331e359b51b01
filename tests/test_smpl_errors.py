"""Bad input to the SMPL layer gets a clear error naming the argument, never a deep traceback."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hmr_fast import SMPL
from tests.model_factory import random_model_data, write_clean_pkl


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_clean_pkl(random_model_data(), tmp_path_factory.mktemp("m") / "SMPL_NEUTRAL.pkl")


@pytest.fixture(scope="module")
def model(model_file):
    return SMPL(str(model_file))


@pytest.mark.parametrize("kwargs, names", [
    ({"body_pose": torch.zeros(2, 68)}, ["body_pose", "(B, 69)", "(2, 68)"]),
    ({"transl": torch.zeros(2, 2)}, ["transl", "(B, 3)", "(2, 2)"]),
    ({"body_pose": torch.zeros(2, 23, 3)}, ["body_pose", "(B, 69)", "(2, 23, 3)"]),
    ({"global_orient": torch.zeros(3)}, ["global_orient", "(B, 3)", "(3,)"]),
    ({"betas": torch.zeros(2, 11)}, ["betas", "num_betas=10", "11"]),
    ({"body_pose": torch.zeros(2, 69), "betas": torch.zeros(3, 10)}, ["batch", "2", "3"]),
    ({"body_pose": torch.zeros(2, 23, 3, 3), "pose2rot": False,
      "global_orient": torch.zeros(2, 4)}, ["global_orient", "(2, 4)"]),
])
def test_shape_errors_name_argument_expected_and_received(model, kwargs, names):
    with pytest.raises(ValueError) as info:
        model(**kwargs)
    for name in names:
        assert name in str(info.value), (name, str(info.value))


@pytest.mark.parametrize("value", [torch.zeros(1, 69, dtype=torch.int64),
                                   torch.zeros(1, 69, dtype=torch.float64)])
def test_dtype_errors(model, value):
    with pytest.raises(TypeError, match=f"body_pose.*{value.dtype}"):
        model(body_pose=value)


def test_non_tensor_input(model):
    with pytest.raises(TypeError, match="betas.*Tensor.*ndarray"):
        model(betas=np.zeros((1, 10), np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name, shape", [("betas", (2, 10)), ("body_pose", (2, 69)),
                                         ("global_orient", (2, 3)), ("transl", (2, 3))])
def test_non_finite_inputs(model, bad, name, shape):
    value = torch.randn(shape)
    value[1, 0] = bad
    with pytest.raises(ValueError, match=f"{name}: contains NaN or inf"):
        model(**{name: value})


def test_check_inputs_flag_turns_the_check_off(model_file):
    fast = SMPL(str(model_file), check_inputs=False)
    pose = torch.zeros(1, 69)
    pose[0, 0] = float("nan")
    assert torch.isnan(fast(body_pose=pose).vertices).any()


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        SMPL(str(tmp_path / "nope.pkl"))
    with pytest.raises(FileNotFoundError) as info:
        SMPL(str(tmp_path), gender="female")
    assert "SMPL_FEMALE.pkl" in str(info.value) and "SMPL_FEMALE.npz" in str(info.value)


def test_truncated_and_non_model_files(tmp_path, model_file):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(model_file.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.pkl"):
        SMPL(str(truncated))
    listing = tmp_path / "list.pkl"
    listing.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="list.pkl.*list"):
        SMPL(str(listing))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        SMPL(str(text))


def test_missing_keys_are_named(tmp_path):
    data = random_model_data()
    del data["posedirs"], data["weights"]
    path = write_clean_pkl(data, tmp_path / "partial.pkl")
    with pytest.raises(ValueError, match=r"partial.pkl.*\['posedirs', 'weights'\]"):
        SMPL(str(path))


def test_wrong_array_shape_in_file(tmp_path):
    data = random_model_data()
    data["posedirs"] = data["posedirs"][:, :, :200]
    with pytest.raises(ValueError, match="posedirs.*207.*200"):
        SMPL(str(write_clean_pkl(data, tmp_path / "bad.pkl")))


def test_unknown_gender_and_backend(model_file):
    for kwargs, words in (({"gender": "robot"}, ["gender", "'robot'", "neutral", "female"]),
                          ({"backend": "cuda"}, ["backend", "'cuda'", "torch", "triton"])):
        with pytest.raises(ValueError) as info:
            SMPL(str(model_file), **kwargs)
        assert all(word in str(info.value) for word in words), str(info.value)


def test_bad_dtype_argument(model_file):
    with pytest.raises(TypeError, match="dtype.*float16"):
        SMPL(str(model_file), dtype=torch.float16)


def test_bad_regressor(model_file):
    with pytest.raises(ValueError, match=r"keypoint_regressor.*\(K, 6890\).*\(3, 5\)"):
        SMPL(str(model_file), keypoint_regressor=np.ones((3, 5)))
