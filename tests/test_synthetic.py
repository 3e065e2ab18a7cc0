"""Tests of the synthetic shapes dataset: deterministic, exact label maps, shapes as drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otseg_hf.world.shapes import SyntheticShapes, shape_mask

# the dataset's definition, written out independently of the module
EXPECTED_COLOURS = {
    "red circle": [(220, 40, 40)],
    "blue square": [(40, 70, 220)],
    "green triangle": [(40, 190, 60)],
    "yellow star": [(235, 215, 40)],
    "striped square": [(245, 245, 245), (20, 20, 20)],
}
BACKGROUND = (90, 160)


def test_default_vocabulary_and_split():
    shapes = SyntheticShapes()
    assert shapes.class_names == list(EXPECTED_COLOURS)
    assert shapes.unseen_label_ids == [3, 4] and shapes.seen_label_ids == [0, 1, 2]


def test_deterministic_from_seed_and_index():
    first, second = SyntheticShapes(), SyntheticShapes()
    for index in (0, 5):
        image_a, label_a = first.generate(index, seed=1)
        image_b, label_b = second.generate(index, seed=1)
        assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    assert not np.array_equal(first.generate(0, seed=1)[0], first.generate(0, seed=2)[0])
    assert not np.array_equal(first.generate(0, seed=1)[0], first.generate(1, seed=1)[0])
    # the order of generation does not matter
    assert np.array_equal(SyntheticShapes().generate(5, seed=1)[1], first.generate(5, seed=1)[1])


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 10_000), seed=st.integers(0, 2**31), size=st.integers(16, 72))
def test_label_maps_match_the_drawn_pixels(index, seed, size):
    shapes = SyntheticShapes(image_size=(size, size + 5))
    image, label = shapes.generate(index, seed)
    assert image.shape == (size, size + 5, 3) and image.dtype == np.uint8 and label.shape == (size, size + 5)
    background = label == 255
    assert ((image[background] >= BACKGROUND[0]) & (image[background] <= BACKGROUND[1])).all()
    for class_id, name in enumerate(shapes.class_names):
        pixels = image[label == class_id]
        allowed = np.array(EXPECTED_COLOURS[name])
        assert (pixels[:, None, :] == allowed[None]).all(-1).any(-1).all(), name
    assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 255}
    assert not background.all()  # at least one shape shows


def test_stripes_are_vertical_bands():
    shapes = SyntheticShapes(class_names=["striped square"], unseen_label_ids=[], shapes_per_image=(1, 1))
    image, label = shapes.generate(0, seed=3)
    rows, cols = np.nonzero(label == 0)
    white = (image[rows, cols] == (245, 245, 245)).all(-1)
    assert white.any() and (~white).any()
    assert np.array_equal(white, (cols // 3) % 2 == 0)  # 3-pixel bands starting white at column 0


def winding_number_inside(y, x, vertices):
    """Point-in-polygon by the winding number (a different rule from the module's even-odd test)."""
    winding = 0
    for (y0, x0), (y1, x1) in zip(vertices, vertices[1:] + vertices[:1]):
        cross = (x1 - x0) * (y - y0) - (x - x0) * (y1 - y0)
        if y0 <= y < y1 and cross > 0:
            winding += 1
        elif y1 <= y < y0 and cross < 0:
            winding -= 1
    return winding != 0


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star"])
def test_shape_masks_against_brute_force(shape):
    height, width, center, radius = 30, 34, (14.3, 17.8), 11.0
    mask = shape_mask(shape, height, width, center, radius)
    cy, cx = center
    expected = np.zeros((height, width), bool)
    for i in range(height):
        for j in range(width):
            y, x = i + 0.5, j + 0.5
            if shape == "circle":
                expected[i, j] = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
            elif shape == "square":
                expected[i, j] = max(abs(y - cy), abs(x - cx)) <= radius / math.sqrt(2)
            else:
                points = 3 if shape == "triangle" else 5
                vertices = []
                for k in range(points):  # apex up; star: inner points at 0.45 r between the outer ones
                    angle = -math.pi / 2 + 2 * math.pi * k / points
                    vertices.append((cy + radius * math.sin(angle), cx + radius * math.cos(angle)))
                    if shape == "star":
                        inner = angle + math.pi / points
                        vertices.append(
                            (cy + 0.45 * radius * math.sin(inner), cx + 0.45 * radius * math.cos(inner))
                        )
                expected[i, j] = winding_number_inside(y, x, vertices)
    assert np.array_equal(mask, expected)
    assert mask[int(cy), int(cx)]  # the centre is inside every shape


def test_dataset_columns_and_content():
    shapes = SyntheticShapes(image_size=32)
    dataset = shapes.to_dataset(num_images=24, seed=7)
    assert dataset.column_names == ["image", "label"] and len(dataset) == 24
    item = dataset[3]
    assert item["image"].mode == "RGB" and item["label"].mode == "L" and item["image"].size == (32, 32)
    image, label = shapes.generate(3, seed=7)
    assert np.array_equal(np.asarray(item["image"]), image) and np.array_equal(
        np.asarray(item["label"]), label
    )
    present = set(np.unique(np.concatenate([np.asarray(x).ravel() for x in dataset["label"]])).tolist())
    assert {0, 1, 2, 3, 4} <= present  # seen and unseen classes both occur
    splits = shapes.to_dataset_dict(num_train=4, num_validation=2, seed=7)
    assert np.array_equal(np.asarray(splits["train"][0]["label"]), shapes.generate(0, seed=7)[1])
    assert np.array_equal(np.asarray(splits["validation"][0]["label"]), shapes.generate(0, seed=8)[1])


def test_invalid_vocabulary():
    with pytest.raises(ValueError, match="colour"):
        SyntheticShapes(class_names=["red hexagon"], unseen_label_ids=[])
    with pytest.raises(ValueError, match="out of range"):
        SyntheticShapes(unseen_label_ids=[7])
    with pytest.raises(ValueError, match="duplicated"):
        SyntheticShapes(class_names=["red circle", "red circle"], unseen_label_ids=[])
