"""The built-in generated datasets (`otseg_hf.world.shapes`) as dataset splits, and the checkpoints the package
ships for the offline zero-shot world."""

from __future__ import annotations

from pathlib import Path

from ..data.splits import DatasetSplit
from .shapes import (
    OBJECT_TEMPLATES,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_UNSEEN_LABEL_IDS,
    WORLD_CLASS_NAMES,
    WORLD_UNSEEN_LABEL_IDS,
    SyntheticShapes,
)

# checkpoints shipped with the package (the offline zero-shot world): the tiny CLIP and OTSeg trained on it
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WORLD_CLIP_DIR = PRETRAINED_DIR / "world-clip"
WORLD_OTSEG_DIR = PRETRAINED_DIR / "world-otseg"

SYNTHETIC = DatasetSplit(
    name="synthetic",
    class_names=tuple(SYNTHETIC_CLASS_NAMES),
    unseen_label_ids=tuple(SYNTHETIC_UNSEEN_LABEL_IDS),
    prompt_templates=("a photo of a {}.",),
    image_size=64,
    inference_window_size=64,
    inference_window_stride=48,
    test_short_side=64,
)

# the offline zero-shot world (otseg_hf.world.shapes.SyntheticShapes.world): 20 colour x shape classes, 5 unseen
WORLD = DatasetSplit(
    name="world",
    class_names=tuple(WORLD_CLASS_NAMES),
    unseen_label_ids=tuple(WORLD_UNSEEN_LABEL_IDS),
    prompt_templates=tuple(OBJECT_TEMPLATES),
    image_size=64,
    inference_window_size=64,
    inference_window_stride=48,
    test_short_side=64,
)
GENERATED = {SYNTHETIC.name: SYNTHETIC, WORLD.name: WORLD}


def generated_dataset(name: str, num_images: int, seed: int, image_size: int | None = None):
    """A `datasets.Dataset` of the built-in generated data `name` ("synthetic" or "world"), images 0..n-1 of
    `seed` (training uses seed 0, evaluation seed 1)."""
    split = GENERATED[name]
    size = image_size or split.image_size
    world = SyntheticShapes.world(image_size=size) if name == WORLD.name else SyntheticShapes(image_size=size)
    return world.to_dataset(num_images, seed=seed)


__all__ = ["GENERATED", "PRETRAINED_DIR", "SYNTHETIC", "WORLD", "WORLD_CLIP_DIR", "WORLD_OTSEG_DIR", "generated_dataset"]
