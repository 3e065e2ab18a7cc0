"""Training recipes (the reference's runs and the offline ones) and the optimizer and schedule they describe."""

from .optimizer import build_optimizer, gradient_accumulation_steps, parameter_groups, poly_warmup_factor
from .recipes import CLIP_VIT_B16, CUSTOM, MODEL_TYPES, RECIPES, SETTINGS, Recipe, adapt_to_data

__all__ = [
    "CLIP_VIT_B16",
    "CUSTOM",
    "MODEL_TYPES",
    "RECIPES",
    "SETTINGS",
    "Recipe",
    "adapt_to_data",
    "build_optimizer",
    "gradient_accumulation_steps",
    "parameter_groups",
    "poly_warmup_factor",
]
