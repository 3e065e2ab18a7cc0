"""One preprocessing stack: the training transforms and the image processor resize images and label maps
identically, and both follow the reference's cv2 rules (spec section 9) as transcribed in tests/spec_resize.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otseg_hf import OTSegImageProcessor
from otseg_hf.data.transforms import RandomRescale, to_arrays
from otseg_hf.evaluation.evaluate import EvaluationSet
from otseg_hf.evaluation.metrics import confusion_matrix
from otseg_hf.model.image_transforms import check_label_ids, rescale_size
from otseg_hf.model.loss_targets import check_labels
from tests.spec_resize import spec_bilinear, spec_nearest

RAW = dict(do_rescale=False, do_normalize=False, do_pad=False)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    long=st.integers(8, 96),
    short=st.integers(4, 48),
    num_ids=st.integers(2, 256),
    seed=st.integers(0, 2**32 - 1),
)
def test_training_and_image_processor_resize_alike_and_as_the_spec(height, width, long, short, num_ids, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    label = rng.integers(0, num_ids, size=(height, width)).astype(np.int64)
    long, short = max(long, short), min(long, short)

    # the training path: mmseg's Resize at ratio 1 (the drawn ratio only scales the target)
    train_image, train_label = RandomRescale((long, short), (1.0, 1.0))(image, label, rng)
    # the image processor at the same scale
    processor = OTSegImageProcessor(size={"shortest_edge": short, "longest_edge": long}, **RAW)
    out = processor(image, segmentation_maps=label, return_tensors="np")
    test_image, test_label = out["pixel_values"][0].transpose(1, 2, 0), out["labels"][0]

    new_height, new_width = train_label.shape
    assert test_label.shape == (new_height, new_width)
    expected_label = spec_nearest(label, new_height, new_width)
    np.testing.assert_array_equal(train_label, expected_label)
    np.testing.assert_array_equal(test_label, expected_label)
    if (new_height, new_width) != (height, width):
        expected_image = spec_bilinear(image, new_height, new_width)
    else:
        expected_image = image
    np.testing.assert_array_equal(train_image, expected_image)
    np.testing.assert_array_equal(test_image, expected_image.astype(np.float32))


@pytest.mark.parametrize(
    "size, scale, expected",
    [
        ((375, 500), (2048, 512), (512, 683)),
        ((100, 1000), (2048, 512), (205, 2048)),
        ((17, 5000), (64, 32), (1, 64)),
    ],
)
def test_rescale_size_is_mmcvs(size, scale, expected):
    """mmcv: factor = min(long / long side, short / short side), sides int(x * factor + 0.5) (hand-computed)."""
    assert rescale_size(*size, min(scale), max(scale)) == expected


def test_training_reads_images_and_labels_as_the_image_processor():
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, size=(5, 6), dtype=np.uint16)
    label = rng.integers(0, 4, size=(5, 6)).astype(np.float64)  # integral floats are accepted by both
    image, read = to_arrays(grey16, label)
    processed = OTSegImageProcessor(do_resize=False, **RAW)(
        grey16, segmentation_maps=label, return_tensors="np"
    )
    np.testing.assert_array_equal(read, processed["labels"][0])
    expected = np.floor(grey16.astype(np.float64) * 255 / 65535 + 0.5)  # 16 bits -> 0..255, rounded
    np.testing.assert_allclose(image[..., 0], expected, atol=1)
    with pytest.raises(ValueError, match="fractional"):
        to_arrays(grey16, label + 0.5)


def test_one_label_validator_everywhere():
    """The same ids are named in the same words by the training check, the loss, evaluation and metrics."""
    label = np.array([[0, 3, 255], [7, 3, 21]])
    message = (
        r"label ids \[3, 7, 21\] .*are outside the 3 classes \(0\.\.2\) and are not the ignore index 255"
    )
    with pytest.raises(ValueError, match=message):
        check_label_ids(label, 3)
    with pytest.raises(ValueError, match=message):
        check_labels(torch.from_numpy(label)[None], 3, 255)
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.zeros_like(label), label, 3, 255)
    rows = [{"image": np.zeros((2, 3, 3), np.uint8), "label": label}]
    with pytest.raises(ValueError, match=r"label ids \[3, 7, 21\] in row 0 are outside"):
        EvaluationSet(rows, OTSegImageProcessor(), num_classes=3)[0]
