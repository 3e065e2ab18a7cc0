"""World v2: every pixel a class. Textured, coloured things on stuff, with exact label maps and captions.

As in COCO-Stuff, the stuff classes cover every pixel that no thing covers:

- **things** (`THING_CLASS_NAMES`, 20): "<texture> <colour> shape", a texture (solid, striped, dotted,
  checkered) and a colour (red, green, blue, yellow, purple), drawn as a circle, square, triangle or
  star (the shape is not part of the class). Five are unseen (`THING_UNSEEN_CLASS_NAMES`), one per
  colour, each a new pairing of a texture and a colour that seen classes show.
- **stuff** (`STUFF_CLASS_NAMES`, 6): gravel, wall, fence, water, bricks, tiles; textured greys in
  `BACKGROUND_RANGE` (every channel 90..160, which no thing colour has), of a random tint, each texture
  visible within one 8-pixel patch. "water" and "tiles" are unseen.

An image is 1 to 3 stuff regions (the first fills the image, each later one the half-plane beyond a
random line) and 1 to 3 things on top. The label map is painted by the same boolean masks that paint
the image, so it is exact, and it has no ignored pixel. Images are a pure function of (seed, index).

Seeds of the world (`WORLD_SEEDS`) are disjoint: OTSeg trains on "train", its penalty is tuned on
"validation", tables are reported on "test" and the demo shows "demo"; the CLIP pretrains on captioned
scenes of seeds `CLIP_PRETRAINING_SEED + n`.

```python
>>> from otseg_hf.world.scenes import WorldScenes
>>> world = WorldScenes()
>>> scene = world.generate_scene(0, seed=0)
>>> scene.label.shape, world.class_names[:2], world.unseen_label_ids
((64, 64), ['solid red shape', 'striped red shape'], [1, 6, 11, 12, 19, 23, 25])
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .shapes import (
    BACKGROUND_RANGE,
    COLOURS,
    GENERIC_NOUN,
    OBJECT_TEMPLATES,
    SHAPES,
    SIZES,
    shade,
    shape_mask,
)

THING_COLOURS = ("red", "green", "blue", "yellow", "purple")
THING_TEXTURES = ("solid", "striped", "dotted", "checkered")
THING_CLASS_NAMES = tuple(f"{t} {c} {GENERIC_NOUN}" for c in THING_COLOURS for t in THING_TEXTURES)
# one per colour; every texture keeps >= 3 seen colours, every colour 3 seen textures
THING_UNSEEN_CLASS_NAMES = (
    "striped red shape",
    "dotted green shape",
    "checkered blue shape",
    "solid yellow shape",
    "checkered purple shape",
)
STUFF_CLASS_NAMES = ("gravel", "wall", "fence", "water", "bricks", "tiles")
STUFF_UNSEEN_CLASS_NAMES = ("water", "tiles")
WORLD_V2_CLASS_NAMES = THING_CLASS_NAMES + STUFF_CLASS_NAMES
WORLD_V2_UNSEEN_LABEL_IDS = tuple(
    WORLD_V2_CLASS_NAMES.index(n) for n in THING_UNSEEN_CLASS_NAMES + STUFF_UNSEEN_CLASS_NAMES
)
WORLD_SEEDS = {"train": 0, "validation": 1, "test": 2, "demo": 3}
CLIP_PRETRAINING_SEED = 1000  # + the pretraining run's seed; its held-out evaluation uses + 500
PERIOD = 6  # pixels: every thing texture repeats within one 8-pixel patch
MIN_STUFF_CAPTION_SHARE = 0.15  # a caption names the stuff that covers at least this share of the image


def thing_fill(texture: str, colour: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 canvas of `colour` with its `shade` in `texture` (period `PERIOD`)."""
    yy, xx = np.mgrid[:height, :width]
    half = PERIOD // 2
    if texture == "solid":
        dark = np.zeros((height, width), dtype=bool)
    elif texture == "striped":  # diagonal bands of 3 pixels
        dark = ((yy + xx) // half) % 2 == 1
    elif texture == "dotted":  # a dot of 13 pixels centred in every 6 x 6 cell
        offset = (PERIOD - 1) / 2
        dark = (yy % PERIOD - offset) ** 2 + (xx % PERIOD - offset) ** 2 <= 2.5
    elif texture == "checkered":  # 3 x 3 checks
        dark = (yy // half + xx // half) % 2 == 1
    else:
        raise ValueError(f"unknown thing texture {texture!r}; expected one of {list(THING_TEXTURES)}")
    return np.where(dark[..., None], np.array(shade(colour), np.uint8), np.array(colour, np.uint8))


def stuff_fill(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8 canvas of stuff `kind`, every value in `BACKGROUND_RANGE`."""
    low, high = BACKGROUND_RANGE
    yy, xx = np.mgrid[:height, :width]
    tints = rng.integers(low + 5, high - 5 + 1, size=(2, 3)).astype(np.int64)
    if kind == "gravel":  # independent noise per pixel
        image = rng.integers(low, high + 1, size=(height, width, 3))
    elif kind == "wall":  # one tint, a little noise
        image = tints[0] + rng.integers(-4, 5, size=(height, width, 3))
    elif kind == "fence":  # vertical bars: 2 light pixels, 2 dark ones
        image = np.where(((xx + int(rng.integers(4))) // 2 % 2 == 0)[..., None], tints[0] + 25, tints[0] - 25)
    elif kind == "water":  # horizontal waves of period 8
        phase = rng.uniform(0, 2 * math.pi)
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * yy / 8 + 0.6 * np.sin(2 * math.pi * xx / 16 + phase))
        image = np.rint(tints[0] + wave[..., None] * 35.0)
    elif kind == "bricks":  # rows of 4 pixels, bricks of 8 staggered by half a brick, dark mortar
        shift = int(rng.integers(4))
        row = (yy + shift) // 4
        mortar = ((yy + shift) % 4 == 0) | ((xx + 4 * (row % 2)) % 8 == 0)
        image = np.where(mortar[..., None], tints[0] - 35, tints[0] + 15)
    elif kind == "tiles":  # two tints 50 levels apart in 4 x 4 checks
        dy, dx = rng.integers(4, size=2)
        tints[1] = np.clip(tints[0] + np.where(tints[0] < (low + high) / 2, 50, -50), low, high)
        image = tints[((yy + dy) // 4 + (xx + dx) // 4) % 2]
    else:
        raise ValueError(f"unknown stuff {kind!r}; expected one of {list(STUFF_CLASS_NAMES)}")
    return np.clip(image, low, high).astype(np.uint8)


@dataclass
class Thing:
    """One drawn thing: its class id, texture, colour, shape, size word, centre (y, x), radius and the
    share of its pixels that show (not covered by later things nor outside the image)."""

    label_id: int
    texture: str
    colour: str
    shape: str
    size: str
    center: tuple[float, float]
    radius: float
    visible_fraction: float


@dataclass
class StuffRegion:
    """One stuff region: its class id, its kind and the share of the image it shows in."""

    label_id: int
    kind: str
    visible_fraction: float


@dataclass
class WorldScene:
    """One image: `image` (H, W, 3) uint8, `label` (H, W) uint8 (every pixel a class), `things` in
    drawing order and `stuff` regions in painting order."""

    image: np.ndarray
    label: np.ndarray
    things: list[Thing]
    stuff: list[StuffRegion]


class WorldScenes:
    """Generator of world v2 (see the module docstring).

    Args:
        image_size: side of the square images.
        things_per_image: (min, max) things drawn per image, inclusive.
        stuff_per_image: (min, max) stuff regions per image, inclusive (distinct kinds).
        radius_range: (min, max) circumradius of things, as a fraction of the image side.
        center_margin: keeps each thing's centre this many radii off the borders.
    """

    class_names = list(WORLD_V2_CLASS_NAMES)
    unseen_label_ids = sorted(WORLD_V2_UNSEEN_LABEL_IDS)
    num_things = len(THING_CLASS_NAMES)

    def __init__(
        self,
        image_size: int = 64,
        things_per_image: tuple[int, int] = (1, 3),
        stuff_per_image: tuple[int, int] = (1, 3),
        radius_range: tuple[float, float] = (0.16, 0.32),
        center_margin: float = 0.6,
    ):
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        if not 0 <= things_per_image[0] <= things_per_image[1]:
            raise ValueError(f"things_per_image must be (min, max), 0 <= min <= max, got {things_per_image}")
        if not 1 <= stuff_per_image[0] <= stuff_per_image[1] <= len(STUFF_CLASS_NAMES):
            raise ValueError(
                f"stuff_per_image must be (min, max), 1 <= min <= max <= {len(STUFF_CLASS_NAMES)}, "
                f"got {stuff_per_image}"
            )
        if not 0 < radius_range[0] <= radius_range[1] or not 0 <= center_margin * radius_range[1] < 0.5:
            raise ValueError(f"radius_range {radius_range} / center_margin {center_margin} leave no room")
        self.image_size = (image_size, image_size)
        self.things_per_image = things_per_image
        self.stuff_per_image = stuff_per_image
        self.radius_range = radius_range
        self.center_margin = center_margin

    @property
    def seen_label_ids(self) -> list[int]:
        return [i for i in range(len(self.class_names)) if i not in self.unseen_label_ids]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))

    def generate_scene(self, index: int, seed: int = 0, label_ids: Sequence[int] | None = None) -> WorldScene:
        """Scene `index` of `seed`; its things and stuff drawn among `label_ids` (default: all classes;
        `seen_label_ids` for scenes that never show an unseen class; at least one stuff id needed)."""
        allowed = range(len(self.class_names)) if label_ids is None else sorted({int(i) for i in label_ids})
        thing_ids = [i for i in allowed if 0 <= i < self.num_things]
        stuff_ids = [i for i in allowed if self.num_things <= i < len(self.class_names)]
        if not stuff_ids or len(thing_ids) + len(stuff_ids) != len(allowed):
            raise ValueError(f"label_ids must be class ids with at least one stuff class, got {label_ids}")
        rng = np.random.default_rng([seed, index])
        height, width = self.image_size
        image = np.zeros((height, width, 3), dtype=np.uint8)
        label = np.zeros((height, width), dtype=np.uint8)
        yy, xx = np.mgrid[:height, :width].astype(np.float64) + 0.5
        # 1. stuff: the first region fills the image, each later one the far side of a random line
        count = int(rng.integers(self.stuff_per_image[0], min(self.stuff_per_image[1], len(stuff_ids)) + 1))
        kinds = [stuff_ids[int(i)] for i in rng.permutation(len(stuff_ids))[:count]]
        stuff_masks = []
        for number, label_id in enumerate(kinds):
            if number == 0:
                mask = np.ones((height, width), dtype=bool)
            else:  # a line through a point of the middle half, at any angle
                angle = rng.uniform(0, 2 * math.pi)
                py, px = rng.uniform(0.25, 0.75, size=2) * (height, width)
                mask = (yy - py) * math.sin(angle) + (xx - px) * math.cos(angle) > 0
            fill = stuff_fill(self.class_names[label_id], height, width, rng)
            image[mask], label[mask] = fill[mask], label_id
            stuff_masks.append(mask)
        # 2. things on top, later ones covering earlier ones
        things, owners = [], np.full((height, width), -1)
        if thing_ids:
            num = int(rng.integers(self.things_per_image[0], self.things_per_image[1] + 1))
        else:
            num = 0
        for number in range(num):
            label_id = thing_ids[int(rng.integers(len(thing_ids)))]
            texture, colour, _ = self.class_names[label_id].split()
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            fraction = rng.uniform(*self.radius_range)
            radius = fraction * min(height, width)
            margin = self.center_margin * radius
            center = (rng.uniform(margin, height - margin), rng.uniform(margin, width - margin))
            mask = shape_mask(shape, height, width, center, radius)
            image[mask] = thing_fill(texture, COLOURS[colour], height, width)[mask]
            label[mask] = label_id
            owners[mask] = number
            low, high = self.radius_range
            size = SIZES[min(2, int(3 * (fraction - low) / (high - low))) if high > low else 1]
            things.append(Thing(label_id, texture, colour, shape, size, center, radius, 0.0))
        for number, thing in enumerate(things):
            full = max(int(np.count_nonzero(shape_mask(thing.shape, height, width, thing.center, thing.radius))), 1)
            thing.visible_fraction = np.count_nonzero(owners == number) / full
        stuff = [
            StuffRegion(label_id, self.class_names[label_id], float(np.mean(label == label_id)))
            for label_id in kinds
        ]
        return WorldScene(image, label, things, stuff)

    def generate(self, index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label map (H, W) uint8 of scene `index` of `seed`."""
        scene = self.generate_scene(index, seed)
        return scene.image, scene.label

    def to_dataset(self, num_images: int, seed: int = 0, start: int = 0):
        """A `datasets.Dataset` with PIL `image` (RGB) and `label` (L) columns, scenes start..start+n-1."""
        import datasets

        images, labels = [], []
        for index in range(start, start + num_images):
            image, label = self.generate(index, seed)
            images.append(Image.fromarray(image))
            labels.append(Image.fromarray(label))
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    def split(self, name: str, num_images: int):
        """`num_images` scenes of the split `name` of `WORLD_SEEDS` as a `datasets.Dataset`."""
        if name not in WORLD_SEEDS:
            raise ValueError(f"unknown world split {name!r}; expected one of {list(WORLD_SEEDS)}")
        return self.to_dataset(num_images, seed=WORLD_SEEDS[name])


# ----------------------------------------------------------------------------------------------------
# captions: things as '[size] [texture] colour shape', stuff by its name
# ----------------------------------------------------------------------------------------------------
def thing_phrase(thing: Thing, rng: np.random.Generator, drop_probability: float = 0.15) -> str:
    """'[size] [texture] <colour> <shape>'; the size with probability 1/2, the texture 3/4; with
    `drop_probability` each, only the texture and colour ('striped red shape') or only texture and shape."""
    with_size, with_texture = rng.random() < 0.5, rng.random() < 0.75
    colour, shape = thing.colour, thing.shape
    draw = rng.random()
    if draw < drop_probability:
        shape, with_texture = GENERIC_NOUN, True
    elif draw < 2 * drop_probability:
        colour, with_texture = None, True
    words = [thing.size if with_size else None, thing.texture if with_texture else None, colour, shape]
    return " ".join(word for word in words if word)


def caption_world_scene(scene: WorldScene, rng: np.random.Generator, min_visible: float = 0.5) -> str:
    """'a photo of a A, a B and a C on a S and a T.': the things that show `min_visible` of themselves,
    shuffled, then (with probability 3/4) the stuff covering `MIN_STUFF_CAPTION_SHARE` of the image;
    without a named thing, 'a photo of a S.' (or one of `OBJECT_TEMPLATES` for one stuff)."""
    things = [t for t in scene.things if t.visible_fraction >= min_visible]
    stuff = [s.kind for s in scene.stuff if s.visible_fraction >= MIN_STUFF_CAPTION_SHARE]
    stuff = [stuff[i] for i in rng.permutation(len(stuff))]
    if not things:
        if len(stuff) == 1:
            return OBJECT_TEMPLATES[int(rng.integers(len(OBJECT_TEMPLATES)))].format(stuff[0])
        return "a photo of " + _listing([f"a {s}" for s in stuff]) + "."
    phrases = [f"a {thing_phrase(things[i], rng)}" for i in rng.permutation(len(things))]
    tail = f" on {_listing([f'a {s}' for s in stuff])}" if stuff and rng.random() < 0.75 else ""
    return "a photo of " + _listing(phrases) + tail + "."


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def scene_attributes(scene: WorldScene, min_visible: float = 0.5) -> list[tuple[str | None, str | None, str | None]]:
    """(texture, colour, shape-or-stuff) of what a caption may name: visible things as (texture, colour,
    shape), stuff covering `MIN_STUFF_CAPTION_SHARE` as (None, None, name)."""
    named = [(t.texture, t.colour, t.shape) for t in scene.things if t.visible_fraction >= min_visible]
    named += [(None, None, s.kind) for s in scene.stuff if s.visible_fraction >= MIN_STUFF_CAPTION_SHARE]
    return named


def world_v2_words() -> list[str]:
    """Every word of a world v2 caption or class prompt."""
    words = {"and", "on", GENERIC_NOUN}
    words.update(THING_COLOURS, THING_TEXTURES, SHAPES, SIZES, STUFF_CLASS_NAMES)
    for template in OBJECT_TEMPLATES:
        words.update(template.replace("{}", " ").replace(".", " ").split())
    return sorted(words)


__all__ = [
    "CLIP_PRETRAINING_SEED",
    "STUFF_CLASS_NAMES",
    "STUFF_UNSEEN_CLASS_NAMES",
    "THING_CLASS_NAMES",
    "THING_COLOURS",
    "THING_TEXTURES",
    "THING_UNSEEN_CLASS_NAMES",
    "WORLD_SEEDS",
    "WORLD_V2_CLASS_NAMES",
    "WORLD_V2_UNSEEN_LABEL_IDS",
    "StuffRegion",
    "Thing",
    "WorldScene",
    "WorldScenes",
    "caption_world_scene",
    "scene_attributes",
    "stuff_fill",
    "thing_fill",
    "thing_phrase",
    "world_v2_words",
]
