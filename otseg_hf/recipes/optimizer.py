"""The optimizer and learning-rate schedule of a recipe (spec section 9): AdamW with the trainable parts at x10,
no weight decay on norm layers, mmcv's poly schedule with linear warm-up, and the gradient accumulation that
reaches the recipe's total batch."""

from __future__ import annotations

import torch
from torch import nn

from .recipes import Recipe


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


__all__ = ["build_optimizer", "gradient_accumulation_steps", "parameter_groups", "poly_warmup_factor"]
