"""How a recipe initialises the trainable parts of a new model (`Recipe.head_init`).

- `"reference"` (the default of every reference recipe): the reference's random initialisation, as the model's
  `_init_weights` makes it (truncated-normal Linear layers, VPT's uniform prompts, Kaiming `prompt_proj`).
- `"clip"`: the head starts as the frozen CLIP's own dense matcher, so training begins from CLIP's zero-shot
  segmentation instead of from random queries. The relationship descriptor passes each prompt embedding
  through (`q = t`: weight `[0 | I]`, bias 0); every decoder layer compares the pixels and the queries as
  they are (`q_proj = k_proj = I`, bias 0) and adds nothing to its queries at first (`out_proj` and the FFN's
  `fc2` zero, so a layer's update is its two layer norms); the visual prompt tokens start as zero vectors
  (`prompt_proj` zero; the prompt embeddings keep their random values, so `prompt_proj` gets gradients at the
  first step). Used by the offline world's recipes, whose CLIP is small and whose schedules are short.
  For ZegOT the relationship descriptors pass the text through in the same way (its learned text contexts
  start as they always do).

A model loaded from a folder (`--init-from`) keeps its weights: the initialisation is for new models only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cli.choices import HEAD_INITS


def _pass_text_through(descriptor: nn.Module) -> None:
    """`Linear(2D -> D)([g * t, t]) = t`."""
    weight = descriptor.proj.weight  # (D, 2D)
    dim = weight.shape[0]
    weight.zero_()
    weight[:, dim:] = torch.eye(dim, dtype=weight.dtype)
    descriptor.proj.bias.zero_()


def _identity(linear: nn.Linear) -> None:
    linear.weight.copy_(torch.eye(linear.weight.shape[0], linear.weight.shape[1], dtype=linear.weight.dtype))
    linear.bias.zero_()


def _zero(linear: nn.Linear) -> None:
    linear.weight.zero_()
    linear.bias.zero_()


@torch.no_grad()
def initialize_head(model: nn.Module, head_init: str) -> None:
    """Apply `head_init` (one of `HEAD_INITS`) to a new OTSeg or ZegOT model in place."""
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
    if head_init == "reference":
        return
    model_type = model.config.model_type
    if model_type == "otseg":
        _pass_text_through(model.head.descriptor)
        for layer in model.head.decoder.layers:
            _identity(layer.q_proj)
            _identity(layer.k_proj)
            if not layer.last:
                _zero(layer.out_proj)
                _zero(layer.fc2)
        _zero(model.visual_prompts.prompt_proj)
    elif model_type == "zegot":
        for descriptor in model.descriptors:
            _pass_text_through(descriptor)
    else:
        raise ValueError(f"head_init {head_init!r} knows OTSeg and ZegOT models, got model type {model_type!r}")


__all__ = ["HEAD_INITS", "initialize_head"]
