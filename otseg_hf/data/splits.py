"""Class names, zero-shot splits and evaluation sizes of the datasets OTSeg is trained and evaluated on.

Plain data (spec sections 1, 7 and 10). Class ids are 0-based after dropping the background class;
the order is the one of the reference's datasets and of its precomputed text embeddings, so a
class id here indexes the rows of the matching `*_otseg.npy` file.

    >>> from otseg_hf.data.splits import DATASETS
    >>> voc = DATASETS["voc"]
    >>> [voc.class_names[i] for i in voc.unseen_label_ids]
    ['pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..model.configuration_otseg import (
    CONTEXT_PROMPT_TEMPLATES,
    VOC_CLASS_NAMES,
    VOC_PROMPT_TEMPLATES,
    VOC_UNSEEN_LABEL_IDS,
)


@dataclass(frozen=True)
class DatasetSplit:
    """One dataset's vocabulary, zero-shot split and evaluation sizes.

    Args:
        name (`str`): short name, the key in `DATASETS`.
        class_names (`tuple[str, ...]`): the K class names in id order.
        unseen_label_ids (`tuple[int, ...]`): ids of the classes held out in the zero-shot settings, in the
            reference's order (empty for a dataset used only for cross-dataset evaluation).
        prompt_templates (`tuple[str, ...]`): text templates of the reference's text embeddings.
        image_size (`int`): training crop size (and the position-embedding grid x patch size).
        inference_window_size (`int`): sliding-window size at test time.
        inference_window_stride (`int`): sliding-window stride at test time.
        test_short_side (`int`): the image's short side is resized to this before the sliding window.
    """

    name: str
    class_names: tuple[str, ...]
    unseen_label_ids: tuple[int, ...]
    prompt_templates: tuple[str, ...]
    image_size: int
    inference_window_size: int
    inference_window_stride: int
    test_short_side: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def seen_label_ids(self) -> tuple[int, ...]:
        """Ids of the classes seen in zero-shot training, in id order."""
        unseen = set(self.unseen_label_ids)
        return tuple(i for i in range(self.num_classes) if i not in unseen)

    @property
    def unseen_class_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.unseen_label_ids)


# PASCAL Context, 59 classes. The reference (its dataset class and the notebook that made
# context_otseg.npy) spells class 54 "tv monitor"; mmsegmentation's PascalContextDataset59 spells it
# "tvmonitor". We keep the reference's spelling: it is the text its embeddings were computed from.
CONTEXT_CLASS_NAMES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant",
    "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table",
    "track", "train", "tree", "truck", "tv monitor", "wall", "water", "window", "wood",
)  # fmt: skip
CONTEXT_UNSEEN_LABEL_IDS = (19, 33, 48, 14, 7, 24, 6, 54, 31, 0)

# COCO-Stuff 164k, 171 classes: 80 things then 91 stuff, mmsegmentation's COCOStuffDataset order.
COCO_STUFF_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt",
    "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow",
    "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof",
    "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other",
    "wood",
)  # fmt: skip
COCO_STUFF_UNSEEN_LABEL_IDS = (19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160)

# ADE20K (SceneParse150), 150 classes, mmsegmentation's ADE20KDataset order. mmsegmentation writes
# class 7 as "bed " with a trailing space; the space is dropped here.
ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

VOC = DatasetSplit(
    name="voc",
    class_names=tuple(VOC_CLASS_NAMES),
    unseen_label_ids=tuple(VOC_UNSEEN_LABEL_IDS),
    prompt_templates=tuple(VOC_PROMPT_TEMPLATES),
    image_size=512,
    inference_window_size=512,
    inference_window_stride=426,
    test_short_side=512,
)
CONTEXT = DatasetSplit(
    name="context",
    class_names=CONTEXT_CLASS_NAMES,
    unseen_label_ids=CONTEXT_UNSEEN_LABEL_IDS,
    prompt_templates=tuple(CONTEXT_PROMPT_TEMPLATES),
    image_size=480,
    inference_window_size=480,
    inference_window_stride=80,
    test_short_side=520,
)
COCO_STUFF = DatasetSplit(
    name="coco-stuff",
    class_names=COCO_STUFF_CLASS_NAMES,
    unseen_label_ids=COCO_STUFF_UNSEEN_LABEL_IDS,
    prompt_templates=tuple(CONTEXT_PROMPT_TEMPLATES),
    image_size=512,
    inference_window_size=512,
    inference_window_stride=426,
    test_short_side=512,
)
# cross-dataset evaluation only: no zero-shot split
ADE20K = DatasetSplit(
    name="ade20k",
    class_names=ADE20K_CLASS_NAMES,
    unseen_label_ids=(),
    prompt_templates=tuple(CONTEXT_PROMPT_TEMPLATES),
    image_size=512,
    inference_window_size=512,
    inference_window_stride=426,
    test_short_side=512,
)

DATASETS: dict[str, DatasetSplit] = {split.name: split for split in (VOC, CONTEXT, COCO_STUFF, ADE20K)}



@dataclass(frozen=True)
class Vocabulary:
    """The classes a command works with and which of them are seen (`None`: not known)."""

    class_names: tuple[str, ...]
    seen_label_ids: tuple[int, ...] | None

    @property
    def unseen_label_ids(self) -> tuple[int, ...] | None:
        if self.seen_label_ids is None:
            return None
        seen = set(self.seen_label_ids)
        return tuple(i for i in range(len(self.class_names)) if i not in seen)


def resolve_vocabulary(
    split: DatasetSplit | None = None,
    class_names: Sequence[str] | None = None,
    unseen_label_ids: Sequence[int] | None = None,
    seen_label_ids: Sequence[int] | None = None,
    default_class_names: Sequence[str] | None = None,
) -> Vocabulary:
    """The vocabulary of `training/train.py`, `training/evaluate.py` and the converter, from a dataset split and
    the `--class-names`, `--unseen-label-ids`, `--seen-label-ids` overrides.

    Class names: `class_names`, else the split's, else `default_class_names` (e.g. a model's own). Seen ids:
    `seen_label_ids` as given (their order is the inductive label order), else every id not in
    `unseen_label_ids`, else the split's when the class names are the split's, else `None` (not known).
    Raises `ValueError` when there are no class names or an id is out of range, naming the flag.
    """
    if class_names is None:
        class_names = split.class_names if split is not None else default_class_names
    if class_names is None:
        raise ValueError("give a dataset or explicit class names (--class-names)")
    class_names = tuple(class_names)
    for flag, ids in (("--unseen-label-ids", unseen_label_ids), ("--seen-label-ids", seen_label_ids)):
        bad = [i for i in ids or () if not 0 <= i < len(class_names)]
        if bad:
            raise ValueError(f"{flag} {bad} are out of range for {len(class_names)} classes")
    if seen_label_ids is not None:
        seen = tuple(int(i) for i in seen_label_ids)
    elif unseen_label_ids is not None:
        unseen = {int(i) for i in unseen_label_ids}
        seen = tuple(i for i in range(len(class_names)) if i not in unseen)
    elif split is not None and tuple(split.class_names) == class_names:
        seen = tuple(split.seen_label_ids)
    else:
        seen = None
    return Vocabulary(class_names, seen)


__all__ = [
    "ADE20K",
    "COCO_STUFF",
    "CONTEXT",
    "DATASETS",
    "VOC",
    "DatasetSplit",
    "Vocabulary",
    "resolve_vocabulary",
]
