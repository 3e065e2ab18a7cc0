"""A built-in synthetic zero-shot segmentation world: coloured, textured shapes on varied backgrounds.

Every image holds a few shapes ("red circle", "blue square", "striped square", ...); each class is
a colour (or pattern) and a shape. The label map comes from the same masks that paint the image,
so it is exact: a pixel of class k has class k's colour (or, with a texture, its half-intensity
shade), a background pixel (label `ignore_index`, like VOC's background) has a level in 90..160 on
every channel, which no class colour or shade has. Images are a pure function of (seed, index), so
any item can be made alone, in any order.

Two vocabularies are built in:

- the default one (5 classes, "yellow star" and "striped square" unseen): solid shapes on grey noise;
- the *world* (`SyntheticShapes.world()`): 5 colours x 4 shapes = 20 classes, each object solid,
  striped or dotted, on noisy, plain, checkered or gradient backgrounds, with a 15 / 5 split in which
  every unseen class is a new combination of a colour and a shape that seen classes show. Scenes come
  with captions (`caption_scene`) whose words `CAPTION_WORDS` lists, for pretraining a tiny CLIP.

    python -m otseg_hf.world.shapes --output-dir data/shapes [--world]   # train / validation + id2label.json

```python
>>> import numpy as np
>>> from otseg_hf.world.shapes import SyntheticShapes, caption_scene
>>> shapes = SyntheticShapes()  # 5 classes, "yellow star" and "striped square" unseen
>>> dataset = shapes.to_dataset(num_images=64, seed=0)  # datasets.Dataset, columns image, label
>>> shapes.class_names, shapes.seen_label_ids, shapes.unseen_label_ids
>>> world = SyntheticShapes.world()
>>> scene = world.generate_scene(0, seed=0, label_ids=world.seen_label_ids)  # seen classes only
>>> caption_scene(scene, np.random.default_rng(0))  # e.g. 'a photo of a dotted red circle and a ...'
```
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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

# textures of a coloured shape: its colour, with the shade (colour // 2) in diagonal bands of
# `STRIPE_WIDTH` pixels or in dots on a grid of `DOT_PERIOD` pixels; patterns keep their own look
TEXTURES = ("solid", "striped", "dotted")
DOT_PERIOD = 6
# backgrounds, all inside BACKGROUND_RANGE: per-pixel noise, one tint with a little noise, two tints
# in checks, or a linear blend of two tints
BACKGROUNDS = ("noise", "plain", "checkered", "gradient")
BACKGROUND_WORDS = {"noise": "noisy", "plain": "plain", "checkered": "checkered", "gradient": "gradient"}
SIZES = ("small", "medium", "large")  # thirds of the radius range

SYNTHETIC_CLASS_NAMES = ("red circle", "blue square", "green triangle", "yellow star", "striped square")
SYNTHETIC_UNSEEN_LABEL_IDS = (3, 4)

WORLD_COLOURS = ("red", "green", "blue", "yellow", "purple")
WORLD_CLASS_NAMES = tuple(f"{colour} {shape}" for colour in WORLD_COLOURS for shape in SHAPES)
# one unseen class per colour; every colour keeps 3 seen shapes and every shape >= 3 seen colours
WORLD_UNSEEN_CLASS_NAMES = ("red star", "green circle", "blue triangle", "yellow square", "purple triangle")
WORLD_UNSEEN_LABEL_IDS = tuple(WORLD_CLASS_NAMES.index(name) for name in WORLD_UNSEEN_CLASS_NAMES)
# colours that only pretraining shows, in every shape, so that shapes are learnt across many fills;
# the world's classes come first, so WORLD_UNSEEN_LABEL_IDS hold for this vocabulary too
PRETRAINING_EXTRA_COLOURS = ("orange", "pink", "cyan")
PRETRAINING_CLASS_NAMES = WORLD_CLASS_NAMES + tuple(
    f"{colour} {shape}" for colour in PRETRAINING_EXTRA_COLOURS for shape in SHAPES
)

# caption language: OTSeg's prompt templates (VOC's six and Context's two more) describe one object;
# scenes list their visible objects, and sometimes the background
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
GENERIC_NOUN = "shape"  # stands for the shape when a phrase names only colour and texture


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


def texture_fill(texture: str, colour: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 canvas of `colour` in `texture`, aligned to the image's pixel grid."""
    yy, xx = np.mgrid[:height, :width]
    if texture == "solid":
        dark = np.zeros((height, width), dtype=bool)
    elif texture == "striped":  # diagonal bands, the first one (at the top-left corner) in `colour`
        dark = ((yy + xx) // STRIPE_WIDTH) % 2 == 1
    elif texture == "dotted":  # a 12-pixel dot centred in every DOT_PERIOD x DOT_PERIOD cell
        offset = (DOT_PERIOD - 1) / 2
        dark = (yy % DOT_PERIOD - offset) ** 2 + (xx % DOT_PERIOD - offset) ** 2 <= 2.5
    else:
        raise ValueError(f"unknown texture {texture!r}; expected one of {list(TEXTURES)}")
    return np.where(dark[..., None], np.array(shade(colour), np.uint8), np.array(colour, np.uint8))


def draw_background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8 background of `kind` (see `BACKGROUNDS`), every value in BACKGROUND_RANGE."""
    low, high = BACKGROUND_RANGE
    if kind == "noise":
        return rng.integers(low, high + 1, size=(height, width, 3), dtype=np.uint8)
    if kind == "plain":
        tint = rng.integers(low + 10, high - 10 + 1, size=3)
        image = tint + rng.integers(-6, 7, size=(height, width, 3))
    elif kind == "checkered":
        tints = rng.integers(low, high + 1, size=(2, 3))
        cell = int(rng.integers(4, 13))
        dy, dx = rng.integers(cell, size=2)
        yy, xx = np.mgrid[:height, :width]
        image = tints[((yy + dy) // cell + (xx + dx) // cell) % 2]
    elif kind == "gradient":
        tints = rng.integers(low, high + 1, size=(2, 3)).astype(np.float64)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[:height, :width] / max(height - 1, width - 1, 1)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)  # 0..1 across the image
        image = np.rint(tints[0] + ramp[..., None] * (tints[1] - tints[0]))
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {list(BACKGROUNDS)}")
    return np.clip(image, low, high).astype(np.uint8)


@dataclass
class SceneObject:
    """One drawn shape.

    Args:
        label_id: its class id.
        style: its colour, or its pattern for pattern classes.
        shape: its shape.
        texture: its texture; the pattern's name for pattern classes.
        size: its size word, from the radius's third of the radius range.
        center: (y, x) in pixels.
        radius: circumradius in pixels.
        visible_fraction: share of its pixels that show: not covered by later shapes, nor outside the image.
    """

    label_id: int
    style: str
    shape: str
    texture: str
    size: str
    center: tuple[float, float]
    radius: float
    visible_fraction: float


@dataclass
class Scene:
    """One image of the world.

    Args:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8 class ids, `ignore_index` on the background.
        instances: (H, W) uint8 index into `objects` of the shape each pixel shows, 255 on the background.
        objects: the shapes in drawing order (later ones cover earlier ones).
        background: the background kind (see `BACKGROUNDS`).
    """

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    objects: list[SceneObject]
    background: str


class SyntheticShapes:
    """Generator of the synthetic shapes dataset.

    Args:
        class_names: the vocabulary, each '<colour or pattern> <shape>' (see `COLOURS`, `PATTERNS`, `SHAPES`).
        unseen_label_ids: ids of the classes held out in the zero-shot split.
        image_size: (height, width) of every image, or an int for squares.
        shapes_per_image: (min, max) number of shapes drawn per image, inclusive.
        radius_range: (min, max) circumradius as a fraction of the image's shorter side.
        ignore_index: label of the background pixels.
        textures: textures drawn (uniformly) for coloured shapes; see `TEXTURES`.
        backgrounds: background kinds drawn (uniformly) for images; see `BACKGROUNDS`.
        center_margin: keeps each centre this many radii off the image's borders (0: anywhere in the
            image, so shapes are often cut off; 1: circles stay whole).

    With one texture and one background (the defaults: solid shapes on noise) nothing is drawn to
    choose them, so the images are those of earlier versions of this generator.
    """

    def __init__(
        self,
        class_names: Sequence[str] = SYNTHETIC_CLASS_NAMES,
        unseen_label_ids: Sequence[int] = SYNTHETIC_UNSEEN_LABEL_IDS,
        image_size: int | tuple[int, int] = 64,
        shapes_per_image: tuple[int, int] = (2, 4),
        radius_range: tuple[float, float] = (0.15, 0.3),
        ignore_index: int = 255,
        textures: Sequence[str] = ("solid",),
        backgrounds: Sequence[str] = ("noise",),
        center_margin: float = 0.0,
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
        for name, values, known in (
            ("textures", textures, TEXTURES),
            ("backgrounds", backgrounds, BACKGROUNDS),
        ):
            if not values or any(value not in known for value in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct values among {list(known)}, got {list(values)}")
        if not 0 <= center_margin * radius_range[1] < 0.5:
            raise ValueError(
                f"center_margin must be >= 0 and leave room for centres (margin * max radius < 0.5 of the "
                f"shorter side), got {center_margin} with radius_range {radius_range}"
            )
        self.shapes_per_image = shapes_per_image
        self.center_margin = center_margin
        self.radius_range = radius_range
        self.ignore_index = ignore_index
        self.textures = tuple(textures)
        self.backgrounds = tuple(backgrounds)

    @classmethod
    def world(cls, image_size: int | tuple[int, int] = 64, **kwargs) -> SyntheticShapes:
        """The zero-shot world: `WORLD_CLASS_NAMES` (20) with `WORLD_UNSEEN_CLASS_NAMES` (5) unseen, 1 to 3
        shapes of radius 0.16..0.32 per image, centres 0.6 radii off the borders, every texture and
        every background. `kwargs` override."""
        settings = dict(
            class_names=WORLD_CLASS_NAMES,
            unseen_label_ids=WORLD_UNSEEN_LABEL_IDS,
            image_size=image_size,
            shapes_per_image=(1, 3),
            radius_range=(0.16, 0.32),
            textures=TEXTURES,
            backgrounds=BACKGROUNDS,
            center_margin=0.6,
        )
        return cls(**{**settings, **kwargs})

    @property
    def seen_label_ids(self) -> list[int]:
        return [i for i in range(len(self.class_names)) if i not in self.unseen_label_ids]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))

    def class_colours(self, label_id: int) -> list[tuple[int, int, int]]:
        """The colours a pixel of class `label_id` can have."""
        style = self.styles[label_id][0]
        if style in PATTERNS:
            return list(PATTERNS[style])
        if self.textures == ("solid",):
            return [COLOURS[style]]
        return [COLOURS[style], shade(COLOURS[style])]

    def generate_scene(self, index: int, seed: int = 0, label_ids: Sequence[int] | None = None) -> Scene:
        """Scene number `index` of the set of `seed`, its shapes' classes drawn among `label_ids`
        (default: every class), e.g. `seen_label_ids` for data that never shows an unseen class."""
        choices = list(range(len(self.class_names))) if label_ids is None else [int(i) for i in label_ids]
        if not choices or any(not 0 <= i < len(self.class_names) for i in choices):
            raise ValueError(f"label_ids must be a non-empty list of class ids, got {label_ids}")
        rng = np.random.default_rng([seed, index])
        height, width = self.image_size
        background = _pick(self.backgrounds, rng)
        image = draw_background(background, height, width, rng)
        label = np.full((height, width), self.ignore_index, dtype=np.uint8)
        instances = np.full((height, width), 255, dtype=np.uint8)
        num_shapes = int(rng.integers(self.shapes_per_image[0], self.shapes_per_image[1] + 1))
        short_side = min(height, width)
        objects, areas = [], []
        for number in range(num_shapes):
            label_id = choices[int(rng.integers(len(choices)))]
            fraction = rng.uniform(*self.radius_range)
            radius = fraction * short_side
            margin = self.center_margin * radius
            center = (rng.uniform(margin, height - margin), rng.uniform(margin, width - margin))
            texture = _pick(self.textures, rng)
            style, shape = self.styles[label_id]
            mask = shape_mask(shape, height, width, center, radius)
            if style in PATTERNS:  # later shapes cover earlier ones, in the image and in the label
                first, second = PATTERNS[style]
                stripe = (np.arange(width) // STRIPE_WIDTH) % 2 == 0
                fill = np.where(stripe[None, :, None], np.array(first, np.uint8), np.array(second, np.uint8))
                image[mask] = np.broadcast_to(fill, (height, width, 3))[mask]
                texture = style
            else:
                image[mask] = texture_fill(texture, COLOURS[style], height, width)[mask]
            label[mask] = label_id
            instances[mask] = number
            low, high = self.radius_range
            size = SIZES[min(2, int(3 * (fraction - low) / (high - low))) if high > low else 1]
            objects.append(SceneObject(label_id, style, shape, texture, size, center, radius, 0.0))
            areas.append(_full_area(shape, radius))
        for number, (item, area) in enumerate(zip(objects, areas)):
            item.visible_fraction = min(1.0, np.count_nonzero(instances == number) / area)
        return Scene(image, label, instances, objects, background)

    def generate(self, index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label map (H, W) uint8 number `index` of the set of `seed`."""
        scene = self.generate_scene(index, seed)
        return scene.image, scene.label

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


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    """A uniform choice; a single option draws nothing, so adding options leaves default images alone."""
    return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]


def _full_area(shape: str, radius: float) -> int:
    """Pixels of the whole shape (nothing covering it, nothing cut off), centred on a pixel corner."""
    side = 2 * math.ceil(radius) + 2
    return max(int(np.count_nonzero(shape_mask(shape, side, side, (side / 2, side / 2), radius))), 1)


# ----------------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------------
def object_phrase(
    item: SceneObject,
    rng: np.random.Generator | None = None,
    with_size: bool | None = None,
    with_texture: bool | None = None,
    drop_probability: float = 0.1,
) -> str:
    """'[size] [texture] colour shape', e.g. 'small striped red circle'.

    Args:
        item: the object.
        rng: draws the optional parts; without it the phrase is the full one (size left out).
        with_size, with_texture: force a part in or out; by default each is in with probability 1/2.
        drop_probability: chance (with `rng`) of naming only the colour ('red shape') and, as often,
            only the shape ('striped circle'), so that words are also learnt alone.
    """
    if rng is None:
        with_size = bool(with_size)
        with_texture = True if with_texture is None else with_texture
    if with_size is None:
        with_size = bool(rng.random() < 0.5)
    if with_texture is None:
        with_texture = bool(rng.random() < 0.5)
    colour, shape = item.style, item.shape
    if item.style in PATTERNS:  # the pattern is the colour and the texture at once
        with_texture = False
    elif rng is not None and drop_probability > 0:
        draw = rng.random()
        if draw < drop_probability:
            shape = GENERIC_NOUN
        elif draw < 2 * drop_probability:
            colour = None
    words = [item.size if with_size else None, item.texture if with_texture else None, colour, shape]
    return " ".join(word for word in words if word)


def caption_scene(scene: Scene, rng: np.random.Generator, min_visible: float = 0.5) -> str:
    """A caption of the objects that show at least `min_visible` of themselves.

    One object: one of `OBJECT_TEMPLATES` around its phrase (the size templates only with its size).
    Several: 'a photo of a A, a B and a C.', the order shuffled. Either way, half of the captions end
    with 'on a <background> background' before the full stop; an image without a visible object is
    'a photo of a <background> background.'.
    """
    visible = [item for item in scene.objects if item.visible_fraction >= min_visible]
    background = f"{BACKGROUND_WORDS[scene.background]} background"
    on_background = f" on a {background}" if rng.random() < 0.5 else ""
    if not visible:
        return f"a photo of a {background}."
    if len(visible) == 1:
        item = visible[0]
        templates = [t for t in OBJECT_TEMPLATES if not any(f" {size} " in t for size in SIZES)]
        templates.append(f"a photo of {item.size} {{}}.")
        template = templates[int(rng.integers(len(templates)))]
        phrase = object_phrase(item, rng, with_size=False if item.size in template else None)
        return template.format(phrase)[:-1] + on_background + "."
    phrases = [f"a {object_phrase(visible[i], rng)}" for i in rng.permutation(len(visible))]
    return "a photo of " + ", ".join(phrases[:-1]) + " and " + phrases[-1] + on_background + "."


def caption_words() -> list[str]:
    """Every word a caption, a phrase or a class-name prompt (with `OBJECT_TEMPLATES`) can contain."""
    words = {"and", "on", GENERIC_NOUN, "background"}
    words.update(COLOURS, PATTERNS, SHAPES, TEXTURES, SIZES, BACKGROUND_WORDS.values())
    for template in OBJECT_TEMPLATES:
        words.update(template.replace("{}", " ").replace(".", " ").split())
    return sorted(words)


CAPTION_WORDS = tuple(caption_words())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic shapes dataset with save_to_disk.")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the DatasetDict")
    parser.add_argument("--num-train", type=int, default=256, help="images in the train split")
    parser.add_argument("--num-validation", type=int, default=64, help="images in the validation split")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train split (validation: seed + 1)")
    parser.add_argument(
        "--world",
        action="store_true",
        help="the 20-class world (textures, backgrounds) instead of the 5 classes",
    )
    args = parser.parse_args(argv)
    if args.world:
        shapes = SyntheticShapes.world(image_size=args.image_size)
    else:
        shapes = SyntheticShapes(image_size=args.image_size)
    shapes.to_dataset_dict(args.num_train, args.num_validation, args.seed).save_to_disk(str(args.output_dir))
    (args.output_dir / "id2label.json").write_text(json.dumps(shapes.id2label, indent=2) + "\n")
    print(
        f"wrote {args.output_dir}: classes {shapes.class_names}, "
        f"unseen {[shapes.class_names[i] for i in shapes.unseen_label_ids]}"
    )


__all__ = [
    "BACKGROUNDS",
    "CAPTION_WORDS",
    "COLOURS",
    "OBJECT_TEMPLATES",
    "PRETRAINING_CLASS_NAMES",
    "PRETRAINING_EXTRA_COLOURS",
    "PATTERNS",
    "SHAPES",
    "SIZES",
    "SYNTHETIC_CLASS_NAMES",
    "SYNTHETIC_UNSEEN_LABEL_IDS",
    "TEXTURES",
    "WORLD_CLASS_NAMES",
    "WORLD_COLOURS",
    "WORLD_UNSEEN_CLASS_NAMES",
    "WORLD_UNSEEN_LABEL_IDS",
    "Scene",
    "SceneObject",
    "SyntheticShapes",
    "caption_scene",
    "draw_background",
    "object_phrase",
    "parse_class_name",
    "shade",
    "shape_mask",
    "texture_fill",
]


if __name__ == "__main__":
    main()
