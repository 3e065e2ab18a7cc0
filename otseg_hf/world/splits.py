"""The built-in generated datasets (`otseg_hf.world.shapes`) as dataset splits, and the checkpoints the package
ships for the offline zero-shot world."""

from __future__ import annotations

from ..cli.choices import PRETRAINED_DIR, WORLD_CLIP_DIR, WORLD_OTSEG_DIR, WORLD_OTSEG_TRANSDUCTIVE_DIR
from ..data.splits import DatasetSplit
from .scenes import WORLD_SEEDS, WORLD_V2_CLASS_NAMES, WORLD_V2_UNSEEN_LABEL_IDS, WorldScenes
from .shapes import OBJECT_TEMPLATES, SYNTHETIC_CLASS_NAMES, SYNTHETIC_UNSEEN_LABEL_IDS, SyntheticShapes

# the checkpoints shipped with the package (the offline zero-shot world: the tiny CLIP and OTSeg trained on it,
# inductive and transductive) are PRETRAINED_DIR's WORLD_*_DIR, defined in cli/choices.py (the scripts' defaults)

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

# the offline zero-shot world (otseg_hf.world.scenes.WorldScenes, world v2): 20 thing classes (texture x colour)
# and 6 stuff classes, every pixel a class; 5 things and 2 stuff unseen
WORLD = DatasetSplit(
    name="world",
    class_names=tuple(WORLD_V2_CLASS_NAMES),
    unseen_label_ids=tuple(WORLD_V2_UNSEEN_LABEL_IDS),
    prompt_templates=tuple(OBJECT_TEMPLATES),
    image_size=64,
    inference_window_size=64,
    inference_window_stride=48,
    test_short_side=64,
)
GENERATED = {SYNTHETIC.name: SYNTHETIC, WORLD.name: WORLD}


# seeds of the generated data's splits: disjoint, so nothing reported was trained or tuned on
GENERATED_SPLIT_SEEDS = dict(WORLD_SEEDS)  # train 0, validation 1 (tuning), test 2 (reported), demo 3


def generated_dataset(name: str, num_images: int, seed: int, image_size: int | None = None):
    """A `datasets.Dataset` of the built-in generated data `name` ("synthetic" or "world"), images 0..n-1 of
    `seed` (`GENERATED_SPLIT_SEEDS`: train 0, validation 1, test 2, demo 3)."""
    split = GENERATED[name]
    size = image_size or split.image_size
    world = WorldScenes(image_size=size) if name == WORLD.name else SyntheticShapes(image_size=size)
    return world.to_dataset(num_images, seed=seed)


__all__ = [
    "GENERATED",
    "GENERATED_SPLIT_SEEDS",
    "PRETRAINED_DIR",
    "SYNTHETIC",
    "WORLD",
    "WORLD_CLIP_DIR",
    "WORLD_OTSEG_DIR",
    "WORLD_OTSEG_TRANSDUCTIVE_DIR",
    "generated_dataset",
]
