"""Training recipes (the reference's runs and the offline ones) and the optimizer and schedule they describe."""

from .optimizer import build_optimizer, gradient_accumulation_steps, parameter_groups, poly_warmup_factor
from .recipes import CLIP_VIT_B16, MODEL_TYPES, RECIPES, SETTINGS, Recipe

__all__ = [
    "CLIP_VIT_B16",
    "MODEL_TYPES",
    "RECIPES",
    "SETTINGS",
    "Recipe",
    "build_optimizer",
    "gradient_accumulation_steps",
    "parameter_groups",
    "poly_warmup_factor",
]
