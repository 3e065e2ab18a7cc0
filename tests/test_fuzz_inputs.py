"""Fuzzing the input surfaces: image processor, processor, model forward and the pipelines (tests/fuzz_cases.py
lists the inputs: image modes and sizes, arrays of every dtype / shape / range, non-finite values, bad
arguments). Every input gets a documented error with a message, or a finite result of the right shape, equal to
the sanitised input's result where there is one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fuzz_cases import World, forward_cases, image_processor_cases, pipeline_cases, processor_cases
from fuzz_helpers import bad_outcomes
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz-inputs"))


@pytest.mark.parametrize("build", [image_processor_cases, processor_cases, forward_cases, pipeline_cases],
                         ids=lambda b: b.__name__)  # fmt: skip
def test_every_case_gives_a_clear_error_or_a_good_result(world, build):
    bad = bad_outcomes(build(world))
    assert not bad, "\n".join(bad)


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64]),
    shape=st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),
    elements={"allow_nan": True, "allow_infinity": True},
)


@settings(max_examples=40, deadline=None)
@given(array=ARRAYS)
def test_image_processor_on_any_array(world, array):
    """A documented error, or finite (1, 3, h, w) pixel values; an integral image in 0..255 of any dtype gives
    the uint8 image's pixels."""
    processor = world.image_processor()
    try:
        values = processor(images=array, return_tensors="pt")["pixel_values"]
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    assert values.dim() == 4 and values.shape[:2] == (1, 3) and torch.isfinite(values).all()
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(array).all() and (array == np.round(array)).all()
    if integral and array.min() >= 0 and array.max() <= 255 and array.dtype != np.uint16 and array.max() > 1:
        expected = processor(images=array.astype(np.uint8), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(window=st.integers(-3, 80), stride=st.integers(-3, 80))
def test_sliding_window_arguments(world, window, stride):
    """Any window / stride: a ValueError, or probabilities defined at every pixel."""
    from otseg_hf import sliding_window_inference

    pixels = torch.randn(1, 3, 24, 40)
    try:
        out = sliding_window_inference(world.model, pixels, window_size=window, stride=stride)
    except ValueError as error:
        assert "window" in str(error) or "stride" in str(error)
        assert window < 1 or stride < 1 or stride > window
        return
    assert 1 <= stride <= window
    assert out.probabilities.shape == (1, 5, 24, 40) and torch.isfinite(out.probabilities).all()
