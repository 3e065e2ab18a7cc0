"""The built-in synthetic shapes: coloured shapes on grey noise, and the drawing primitives world v2 shares.

Every image holds a few shapes ("red circle", "blue square", "striped square", ...); each class is
a colour (or pattern) and a shape. The label map comes from the same masks that paint the image,
so it is exact: a pixel of class k has class k's colour (or pattern), a background pixel (label
`ignore_index`, like VOC's background) has a level in 90..160 on every channel, which no class colour
has. Images are a pure function of (seed, index), so any item can be made alone, in any order. The
default vocabulary has 5 classes, "yellow star" and "striped square" unseen (the synthetic recipes);
the zero-shot world is `otseg_hf.world.scenes` (world v2), which draws with `shape_mask` and `shade`.

    python -m otseg_hf.world.shapes --output-dir data/shapes   # train / validation + id2label.json

```python
>>> from otseg_hf.world.shapes import SyntheticShapes
>>> shapes = SyntheticShapes()  # 5 classes, "yellow star" and "striped square" unseen
>>> dataset = shapes.to_dataset(num_images=64, seed=0)  # datasets.Dataset, columns image, label
>>> shapes.class_names, shapes.seen_label_ids, shapes.unseen_label_ids
```
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# fill colours (RGB); each has a channel outside the background's range 90..160, and so has its shade
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 200),
    "orange": (245, 140, 20),
    "pink": (240, 110, 180),
    "cyan": (40, 200, 210),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# patterns: two colours alternating in vertical stripes of `STRIPE_WIDTH` pixels
PATTERNS = {"striped": ((245, 245, 245), (20, 20, 20))}
STRIPE_WIDTH = 3
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUND_RANGE = (90, 160)  # every background pixel, inclusive bounds per channel
SIZES = ("small", "medium", "large")  # size words of world v2's things: thirds of the radius range

SYNTHETIC_CLASS_NAMES = ("red circle", "blue square", "green triangle", "yellow star", "striped square")
SYNTHETIC_UNSEEN_LABEL_IDS = (3, 4)

# OTSeg's prompt templates (VOC's six and Context's two more), which world v2's captions use too
OBJECT_TEMPLATES = (
    "a photo of a {}.",
    "a portrait of a {}.",
    "a part of a {}.",
    "a segment of a {}.",
    "a photo of small {}.",
    "a photo of medium {}.",
    "a photo of large {}.",
    "a background of a {}.",
)
GENERIC_NOUN = "shape"  # world v2: the noun of its thing classes, whatever their shape


def parse_class_name(name: str) -> tuple[str, str]:
    """'red circle' -> ('red', 'circle'); raise `ValueError` for unknown colours or shapes."""
    parts = name.split()
    if len(parts) != 2 or (parts[0] not in COLOURS and parts[0] not in PATTERNS) or parts[1] not in SHAPES:
        raise ValueError(
            f"synthetic class names are '<colour or pattern> <shape>' with a colour in {sorted(COLOURS)}, "
            f"a pattern in {sorted(PATTERNS)} and a shape in {list(SHAPES)}; got {name!r}"
        )
    return parts[0], parts[1]


def shape_mask(shape: str, height: int, width: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean (height, width) mask of a shape of circumradius `radius` centred at (y, x), tested at
    pixel centres."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64) + 0.5
    cy, cx = center
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if shape == "square":
        half = radius / math.sqrt(2)
        return (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    if shape == "triangle":  # pointing up
        angles = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    elif shape == "star":  # five points, inner radius 0.45 of the outer one
        angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")
    radii = [radius if k % 2 == 0 or shape == "triangle" else 0.45 * radius for k in range(len(angles))]
    vertices = [(cy + r * math.sin(a), cx + r * math.cos(a)) for r, a in zip(radii, angles)]
    return _inside_polygon(yy, xx, vertices)


def _inside_polygon(yy: np.ndarray, xx: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule: a horizontal ray from each point crosses the boundary an odd number of times."""
    inside = np.zeros(yy.shape, dtype=bool)
    for (y0, x0), (y1, x1) in zip(vertices, vertices[1:] + vertices[:1]):
        if y0 == y1:
            continue
        crosses = (y0 > yy) != (y1 > yy)
        x_cross = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_cross)
    return inside


def shade(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The darker colour of a texture: every channel halved (rounded down)."""
    return tuple(channel // 2 for channel in colour)


class SyntheticShapes:
    """Generator of the synthetic shapes dataset: solid shapes (or patterned ones) on grey noise.

    Args:
        class_names: the vocabulary, each '<colour or pattern> <shape>' (see `COLOURS`, `PATTERNS`, `SHAPES`).
        unseen_label_ids: ids of the classes held out in the zero-shot split.
        image_size: (height, width) of every image, or an int for squares.
        shapes_per_image: (min, max) number of shapes drawn per image, inclusive.
        radius_range: (min, max) circumradius as a fraction of the image's shorter side.
        ignore_index: label of the background pixels.
    """

    def __init__(
        self,
        class_names: Sequence[str] = SYNTHETIC_CLASS_NAMES,
        unseen_label_ids: Sequence[int] = SYNTHETIC_UNSEEN_LABEL_IDS,
        image_size: int | tuple[int, int] = 64,
        shapes_per_image: tuple[int, int] = (2, 4),
        radius_range: tuple[float, float] = (0.15, 0.3),
        ignore_index: int = 255,
    ):
        self.class_names = list(class_names)
        self.styles = [parse_class_name(name) for name in self.class_names]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"duplicated class names in {self.class_names}")
        if 0 <= ignore_index < len(self.class_names) or not 0 <= ignore_index <= 255:
            raise ValueError(f"ignore_index must be in {len(self.class_names)}..255, got {ignore_index}")
        self.unseen_label_ids = sorted({int(i) for i in unseen_label_ids})
        if any(not 0 <= i < len(self.class_names) for i in self.unseen_label_ids):
            raise ValueError(
                f"unseen_label_ids {self.unseen_label_ids} out of range for {len(self.class_names)} classes"
            )
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if not 1 <= shapes_per_image[0] <= shapes_per_image[1]:
            raise ValueError(
                f"shapes_per_image must be (min, max) with 1 <= min <= max, got {shapes_per_image}"
            )
        if not 0 < radius_range[0] <= radius_range[1]:
            raise ValueError(f"radius_range must be (min, max) with 0 < min <= max, got {radius_range}")
        self.shapes_per_image = shapes_per_image
        self.radius_range = radius_range
        self.ignore_index = ignore_index

    @property
    def seen_label_ids(self) -> list[int]:
        return [i for i in range(len(self.class_names)) if i not in self.unseen_label_ids]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))

    def generate(self, index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label map (H, W) uint8 number `index` of the set of `seed`."""
        rng = np.random.default_rng([seed, index])
        height, width = self.image_size
        low, high = BACKGROUND_RANGE
        image = rng.integers(low, high + 1, size=(height, width, 3), dtype=np.uint8)  # grey noise
        label = np.full((height, width), self.ignore_index, dtype=np.uint8)
        num_shapes = int(rng.integers(self.shapes_per_image[0], self.shapes_per_image[1] + 1))
        short_side = min(height, width)
        for _ in range(num_shapes):  # later shapes cover earlier ones, in the image and in the label
            label_id = int(rng.integers(len(self.class_names)))
            radius = rng.uniform(*self.radius_range) * short_side
            center = (rng.uniform(0.0, height), rng.uniform(0.0, width))
            style, shape = self.styles[label_id]
            mask = shape_mask(shape, height, width, center, radius)
            if style in PATTERNS:  # vertical stripes of the pattern's two colours
                first, second = PATTERNS[style]
                stripe = (np.arange(width) // STRIPE_WIDTH) % 2 == 0
                fill = np.where(stripe[None, :, None], np.array(first, np.uint8), np.array(second, np.uint8))
                image[mask] = np.broadcast_to(fill, (height, width, 3))[mask]
            else:
                image[mask] = COLOURS[style]
            label[mask] = label_id
        return image, label

    def to_dataset(self, num_images: int, seed: int = 0):
        """A `datasets.Dataset` with PIL `image` (RGB) and `label` (L) columns, items 0..num_images-1."""
        import datasets

        images, labels = [], []
        for index in range(num_images):
            image, label = self.generate(index, seed)
            images.append(Image.fromarray(image))
            labels.append(Image.fromarray(label))
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    def to_dataset_dict(self, num_train: int = 256, num_validation: int = 64, seed: int = 0):
        """`DatasetDict` with a `train` split (seed `seed`) and a `validation` split (seed `seed + 1`)."""
        import datasets

        return datasets.DatasetDict(
            train=self.to_dataset(num_train, seed), validation=self.to_dataset(num_validation, seed + 1)
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic shapes dataset with save_to_disk.")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the DatasetDict")
    parser.add_argument("--num-train", type=int, default=256, help="images in the train split")
    parser.add_argument("--num-validation", type=int, default=64, help="images in the validation split")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train split (validation: seed + 1)")
    args = parser.parse_args(argv)
    shapes = SyntheticShapes(image_size=args.image_size)
    shapes.to_dataset_dict(args.num_train, args.num_validation, args.seed).save_to_disk(str(args.output_dir))
    (args.output_dir / "id2label.json").write_text(json.dumps(shapes.id2label, indent=2) + "\n")
    print(
        f"wrote {args.output_dir}: classes {shapes.class_names}, "
        f"unseen {[shapes.class_names[i] for i in shapes.unseen_label_ids]}"
    )


__all__ = [
    "BACKGROUND_RANGE",
    "COLOURS",
    "GENERIC_NOUN",
    "OBJECT_TEMPLATES",
    "PATTERNS",
    "SHAPES",
    "SIZES",
    "SYNTHETIC_CLASS_NAMES",
    "SYNTHETIC_UNSEEN_LABEL_IDS",
    "SyntheticShapes",
    "parse_class_name",
    "shade",
    "shape_mask",
]


if __name__ == "__main__":
    main()
