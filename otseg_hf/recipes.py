"""Training recipes of the reference (spec section 9) as typed, named objects, and the optimizer and
learning-rate schedule they describe.

    >>> recipe = RECIPES["otseg-voc-inductive"]
    >>> recipe.max_steps, recipe.total_batch_size, recipe.learning_rate
    (20000, 16, 2e-05)

A recipe names a dataset of `otseg_hf.dataset_splits.DATASETS` (or `"synthetic"`, the built-in shapes) and a
setting; `training/train.py --recipe NAME` runs it and any field can be overridden on the command line.
Transductive recipes start from the inductive checkpoint (`init_from`), as the reference does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .dataset_splits import DATASETS, DatasetSplit
from .synthetic import (
    OBJECT_TEMPLATES,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_UNSEEN_LABEL_IDS,
    WORLD_CLASS_NAMES,
    WORLD_UNSEEN_LABEL_IDS,
    SyntheticShapes,
)

SETTINGS = ("inductive", "transductive", "fully_supervised")
MODEL_TYPES = ("otseg", "zegot")
CLIP_VIT_B16 = "openai/clip-vit-base-patch16"
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

# the offline zero-shot world (otseg_hf.synthetic.SyntheticShapes.world): 20 colour x shape classes, 5 unseen
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


@dataclass
class Recipe:
    """One training run.

    Args:
        name (`str`): the key in `RECIPES`.
        model_type (`str`): `"otseg"` or `"zegot"`.
        dataset (`str`): a key of `DATASETS` or `"synthetic"`; gives the class names, the zero-shot split and the
            evaluation sizes.
        setting (`str`): `"inductive"`, `"transductive"` or `"fully_supervised"`.
        clip (`str`): the pretrained CLIP (Hub id or local folder) for runs that do not start from a checkpoint;
            `"tiny-random"` builds a tiny random CLIP (smoke tests and the synthetic recipe).
        init_from (`str`, *optional*): recipe whose output this run starts from (transductive runs start from
            the inductive checkpoint); the path is given with `--init-from`.
        max_steps (`int`): optimizer steps (the reference's iterations).
        total_batch_size (`int`): images per optimizer step, over all processes and accumulation steps.
        learning_rate (`float`): AdamW base learning rate.
        lr_multiplier (`float`): learning-rate factor of the trainable parts (visual prompts and head for OTSeg,
            contexts and descriptors for ZegOT).
        weight_decay (`float`): AdamW weight decay; 0 for norm layers.
        warmup_steps (`int`): linear warm-up steps.
        warmup_ratio (`float`): learning-rate factor at step 0 of the warm-up.
        min_learning_rate (`float`): floor of the poly schedule.
        poly_power (`float`): power of the poly schedule.
        crop_size (`int`): training crop (and the model's position grid).
        rescale_scale (`tuple[int, int]`): the (long, short) size the random rescale is relative to.
        ratio_range (`tuple[float, float]`): random rescale ratios.
        cat_max_ratio (`float`): largest share of one class in a random crop.
        model_overrides (`dict`): other config fields of the model.
    """

    name: str
    model_type: str
    dataset: str
    setting: str
    clip: str = CLIP_VIT_B16
    init_from: str | None = None
    max_steps: int = 20000
    total_batch_size: int = 16
    learning_rate: float = 2e-5
    lr_multiplier: float = 10.0
    weight_decay: float = 0.01
    warmup_steps: int = 1500
    warmup_ratio: float = 1e-6
    min_learning_rate: float = 1e-6
    poly_power: float = 0.9
    crop_size: int = 512
    rescale_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.dataset not in DATASETS and self.dataset not in GENERATED:
            raise ValueError(f"dataset must be one of {[*DATASETS, *GENERATED]}, got {self.dataset!r}")
        for name in ("max_steps", "total_batch_size", "crop_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0 or self.warmup_steps < 0:
            raise ValueError(
                "learning_rate must be positive, min_learning_rate and warmup_steps non-negative"
            )

    @property
    def split(self) -> DatasetSplit:
        return GENERATED.get(self.dataset) or DATASETS[self.dataset]

    @property
    def seen_label_ids(self) -> list[int] | None:
        return None if self.setting == "fully_supervised" else list(self.split.seen_label_ids)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}")
        return dataclasses.replace(self, **changes)


def _reference_recipes() -> dict[str, Recipe]:
    # iterations inductive / transductive (from the inductive checkpoint); fully supervised as inductive
    steps = {"voc": (20000, 10000), "context": (40000, 20000), "coco-stuff": (80000, 40000)}
    recipes = {}
    for model_type in MODEL_TYPES:
        for dataset, (inductive, transductive) in steps.items():
            crop = DATASETS[dataset].image_size
            settings = {"inductive": inductive, "transductive": transductive}
            if model_type == "otseg":
                settings["fully_supervised"] = inductive
            for setting, max_steps in settings.items():
                name = f"{model_type}-{dataset}-{setting}"
                recipes[name] = Recipe(
                    name=name,
                    model_type=model_type,
                    dataset=dataset,
                    setting=setting,
                    max_steps=max_steps,
                    crop_size=crop,
                    init_from=f"{model_type}-{dataset}-inductive" if setting == "transductive" else None,
                )
    return recipes


RECIPES: dict[str, Recipe] = _reference_recipes()
# Offline: a tiny OTSeg around a tiny random CLIP on the built-in synthetic shapes (CPU, minutes).
RECIPES["otseg-synthetic-inductive"] = Recipe(
    name="otseg-synthetic-inductive",
    model_type="otseg",
    dataset="synthetic",
    setting="inductive",
    clip="tiny-random",
    max_steps=60,
    total_batch_size=8,
    learning_rate=1e-4,
    warmup_steps=10,
    crop_size=64,
    rescale_scale=(128, 64),
    ratio_range=(0.75, 1.5),
    model_overrides=dict(
        num_visual_prompts=4, visual_prompt_depth=2, decoder_ffn_dim=64, inference_window_size=64,
        inference_window_stride=48,
    ),
)  # fmt: skip
# Offline zero-shot world: OTSeg on the shipped tiny world CLIP, seen classes only (CPU, minutes).
RECIPES["otseg-world-inductive"] = Recipe(
    name="otseg-world-inductive",
    model_type="otseg",
    dataset="world",
    setting="inductive",
    clip=str(WORLD_CLIP_DIR),
    max_steps=1500,
    learning_rate=1e-4,
    warmup_steps=100,
    crop_size=64,
    rescale_scale=(128, 64),
    ratio_range=(0.75, 1.5),
    model_overrides=dict(
        num_visual_prompts=4, visual_prompt_depth=3, decoder_ffn_dim=256, inference_window_size=64,
        inference_window_stride=48,
    ),
)  # fmt: skip
RECIPES["zegot-synthetic-inductive"] = RECIPES["otseg-synthetic-inductive"].replace(
    name="zegot-synthetic-inductive",
    model_type="zegot",
    model_overrides=dict(num_context_tokens=4, feature_layers=[-2, -1]),
)


# ----------------------------------------------------------------------------------------------------
# optimizer and schedule
# ----------------------------------------------------------------------------------------------------
def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """AdamW groups: every trainable parameter at `learning_rate * lr_multiplier` (the reference multiplies
    the visual prompts and the head, and everything else trainable is frozen CLIP), no weight decay on
    norm layers."""
    norm_params = {
        id(p)
        for module in model.modules()
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d))
        for p in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if id(param) in norm_params else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    lr = recipe.learning_rate * recipe.lr_multiplier
    groups = [
        {"params": decay, "lr": lr, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def poly_warmup_factor(step: int, base_lr: float, recipe: Recipe) -> float:
    """Learning rate at `step` divided by `base_lr`: mmcv's poly schedule with linear warm-up.

    lr = (base_lr - min_lr) * (1 - step / max_steps) ** power + min_lr, then during warm-up multiplied by
    1 - (1 - step / warmup_steps) * (1 - warmup_ratio)."""
    progress = min(step, recipe.max_steps) / recipe.max_steps
    lr = (base_lr - recipe.min_learning_rate) * (1 - progress) ** recipe.poly_power + recipe.min_learning_rate
    if step < recipe.warmup_steps:
        lr *= 1 - (1 - step / recipe.warmup_steps) * (1 - recipe.warmup_ratio)
    return lr / base_lr


def build_optimizer(model: nn.Module, recipe: Recipe):
    """AdamW over `parameter_groups` and a `LambdaLR` following `poly_warmup_factor` per group."""
    groups = parameter_groups(model, recipe)
    optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"])
    factors = [
        (lambda step, base=group["lr"]: poly_warmup_factor(step, base, recipe))
        for group in optimizer.param_groups
    ]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    return optimizer, scheduler


def gradient_accumulation_steps(total_batch_size: int, per_device_batch_size: int, num_processes: int) -> int:
    """Accumulation steps so that per-device batch x processes x steps = the recipe's total batch."""
    per_step = per_device_batch_size * num_processes
    if per_device_batch_size < 1 or total_batch_size % per_step:
        divisors = [b for b in range(1, total_batch_size + 1) if total_batch_size % (b * num_processes) == 0]
        raise ValueError(
            f"the total batch of {total_batch_size} images is not reachable with {per_device_batch_size} images "
            f"per device on {num_processes} processes; use --per-device-batch-size in {divisors} or change "
            "--total-batch-size (zero-shot results are sensitive to the batch size)"
        )
    return total_batch_size // per_step


__all__ = [
    "RECIPES",
    "SETTINGS",
    "SYNTHETIC",
    "WORLD",
    "generated_dataset",
    "Recipe",
    "build_optimizer",
    "gradient_accumulation_steps",
    "parameter_groups",
    "poly_warmup_factor",
]
