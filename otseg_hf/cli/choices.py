"""What the command lines offer before anything is loaded: the names of the recipes, datasets, settings and head
initialisations, and the folders of the shipped world models. Nothing here imports torch or transformers (the
modules that build recipes and splits import both), so `--help` and usage errors answer at once;
tests/test_import_cost.py checks the names against `RECIPES`, `DATASETS` and `GENERATED`. The settings, the head
initialisations and the world folders are defined only here."""

from __future__ import annotations

from pathlib import Path

SETTINGS = ("inductive", "transductive", "fully_supervised")
HEAD_INITS = ("reference", "clip")  # how a new model's head starts (otseg_hf.recipes.initialization)
SETTING_ALIASES = {"fully-supervised": "fully_supervised"}  # the converter's spelling before; still accepted

DATASET_NAMES = ("voc", "context", "coco-stuff", "ade20k")  # keys of otseg_hf.data.splits.DATASETS
GENERATED_NAMES = ("synthetic", "world")  # keys of otseg_hf.world.splits.GENERATED
RECIPE_NAMES = (  # the keys of otseg_hf.recipes.RECIPES, sorted
    "custom",
    "otseg-coco-stuff-fully_supervised",
    "otseg-coco-stuff-inductive",
    "otseg-coco-stuff-transductive",
    "otseg-context-fully_supervised",
    "otseg-context-inductive",
    "otseg-context-transductive",
    "otseg-synthetic-inductive",
    "otseg-voc-fully_supervised",
    "otseg-voc-inductive",
    "otseg-voc-transductive",
    "otseg-world-fully-supervised",
    "otseg-world-inductive",
    "otseg-world-transductive",
    "zegot-coco-stuff-inductive",
    "zegot-coco-stuff-transductive",
    "zegot-context-inductive",
    "zegot-context-transductive",
    "zegot-synthetic-inductive",
    "zegot-voc-inductive",
    "zegot-voc-transductive",
    "zegot-world-inductive",
)

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "world" / "pretrained"
WORLD_CLIP_DIR = PRETRAINED_DIR / "world-clip"
WORLD_OTSEG_DIR = PRETRAINED_DIR / "world-otseg"
WORLD_OTSEG_TRANSDUCTIVE_DIR = PRETRAINED_DIR / "world-otseg-transductive"

__all__ = [
    "DATASET_NAMES",
    "GENERATED_NAMES",
    "HEAD_INITS",
    "PRETRAINED_DIR",
    "RECIPE_NAMES",
    "SETTINGS",
    "SETTING_ALIASES",
    "WORLD_CLIP_DIR",
    "WORLD_OTSEG_DIR",
    "WORLD_OTSEG_TRANSDUCTIVE_DIR",
]
