"""Mask losses of OTSeg and ZegOT (spec section 8): sigmoid focal + dice on upsampled class maps.

Every class map is a binary problem: pixels of class k are positives, all other pixels (ignore
pixels included) are negatives. Logits come at feature resolution and are upsampled bilinearly
to the label size before the loss, as in the reference.

Two paths compute the same numbers:
- `mask_loss_reference`: the plain autograd transcription (one-hot targets, full-size tensors).
- `mask_loss`: the default. It walks the classes in chunks and recomputes each chunk in the
  backward pass with the analytic gradient, so the memory never holds more than one chunk of
  full-resolution maps (the reference holds ~10 full (B, K, H, W) tensors per path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def count_masks(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Number of (image, class) pairs present in `labels`, averaged over processes, at least 1.

    Args:
        labels: (B, H, W) class ids in 0..num_classes-1; any other value is ignored.
    """
    present = _present(labels, num_classes).sum().float()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(present)
        present = present / torch.distributed.get_world_size()
    return present.clamp(min=1.0)


def _present(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K) bool: class k occurs in image b."""
    labels = labels.long()
    valid = (labels >= 0) & (labels < num_classes)
    flat = torch.where(valid, labels, num_classes).flatten(1)
    counts = torch.zeros(labels.shape[0], num_classes + 1, device=labels.device, dtype=torch.long)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    return counts[:, :num_classes] > 0


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32 for half-precision logits, float64 kept."""
    return torch.promote_types(logits.dtype, torch.float32)


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, align_corners=False (the reference's resize)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def mask_loss_reference(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_masks: torch.Tensor | float,
    focal_weight: float = 100.0,
    dice_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Plain transcription of the reference loss of one path.

    Args:
        logits: (B, K, h, w) class logits at feature resolution.
        labels: (B, H, W) class ids 0..K-1; other values (ignore) are negatives for every class.
        num_masks: normaliser, see `count_masks`.
    """
    num_classes = logits.shape[1]
    x = upsample(logits, labels.shape[-2:]).to(_compute_dtype(logits)).flatten(2)  # (B, K, HW)
    y = (labels.unsqueeze(1) == torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)).flatten(2)
    y = y.to(x.dtype)
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    focal = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        focal = (alpha * y + (1 - alpha) * (1 - y)) * focal
    focal = focal.mean(-1).sum() / num_masks
    present = y.amax(-1)
    dice = 1 - (2 * (p * y).sum(-1) + 1) / (p.sum(-1) + y.sum(-1) + 1)
    dice = (dice * present).sum() / num_masks
    return focal_weight * focal + dice_weight * dice


class _ChunkedMaskLoss(torch.autograd.Function):
    """Focal + dice over class chunks; the backward recomputes each chunk (analytic gradient)."""

    @staticmethod
    def forward(ctx, logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk):
        size = labels.shape[-2:]
        focal_total = logits.new_zeros((), dtype=_compute_dtype(logits))
        dice_total = logits.new_zeros((), dtype=_compute_dtype(logits))
        stats = []
        for start in range(0, logits.shape[1], chunk):
            x, y = _chunk_maps(logits, labels, start, chunk, size)
            p = x.sigmoid()
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            focal = ce * (1 - p_t) ** gamma
            if alpha >= 0:
                focal = (alpha * y + (1 - alpha) * (1 - y)) * focal
            focal_total = focal_total + focal.mean(-1).sum()
            inter, p_sum, y_sum = (p * y).sum(-1), p.sum(-1), y.sum(-1)
            present = (y_sum > 0).to(x.dtype)
            dice_total = dice_total + ((1 - (2 * inter + 1) / (p_sum + y_sum + 1)) * present).sum()
            stats.append((inter, p_sum + y_sum + 1, present))
        ctx.save_for_backward(logits, labels, num_masks)
        ctx.stats = stats
        ctx.args = (focal_weight, dice_weight, alpha, gamma, chunk)
        return (focal_weight * focal_total + dice_weight * dice_total) / num_masks

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, num_masks = ctx.saved_tensors
        focal_weight, dice_weight, alpha, gamma, chunk = ctx.args
        size = labels.shape[-2:]
        scale = grad_output / num_masks
        grads = []
        for index, start in enumerate(range(0, logits.shape[1], chunk)):
            inter, denom, present = ctx.stats[index]
            x, y = _chunk_maps(logits, labels, start, chunk, size)
            p = x.sigmoid()
            dp = p * (1 - p)  # dp/dx
            one_minus_pt = p + y - 2 * p * y  # 1 - p_t for binary y
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            # d/dx [ce * (1 - p_t)^gamma], with d ce/dx = p - y and d(1 - p_t)/dx = (1 - 2y) dp
            d_focal = (p - y) * one_minus_pt**gamma
            if gamma != 0:
                d_focal = d_focal + ce * gamma * one_minus_pt ** (gamma - 1) * (1 - 2 * y) * dp
            if alpha >= 0:
                d_focal = d_focal * (alpha * y + (1 - alpha) * (1 - y))
            # d/dx [1 - (2I + 1) / (P + Y + 1)], I = sum p y, P = sum p
            d_dice = (
                -dp * (2 * y * denom.unsqueeze(-1) - (2 * inter + 1).unsqueeze(-1)) / denom.unsqueeze(-1) ** 2
            )
            d_x = focal_weight * d_focal / x.shape[-1] + dice_weight * d_dice * present.unsqueeze(-1)
            d_x = (d_x * scale).view(*d_x.shape[:2], *size)
            with torch.enable_grad():
                low = logits[:, start : start + chunk].detach().requires_grad_(True)
                (grad_low,) = torch.autograd.grad(upsample(low, size).to(d_x.dtype), low, d_x)
            grads.append(grad_low)
        return torch.cat(grads, dim=1), None, None, None, None, None, None, None


def _chunk_maps(logits, labels, start, chunk, size):
    """Upsampled logits and binary targets of classes start..start+chunk-1, flattened: (B, c, HW)."""
    x = upsample(logits[:, start : start + chunk], size).to(_compute_dtype(logits)).flatten(2)
    ids = torch.arange(start, start + x.shape[1], device=labels.device).view(1, -1, 1, 1)
    y = (labels.unsqueeze(1) == ids).flatten(2).to(x.dtype)
    return x, y


def mask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_masks: torch.Tensor | float,
    focal_weight: float = 100.0,
    dice_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
    max_chunk_elements: int = 2**24,
) -> torch.Tensor:
    """`mask_loss_reference`, computed in class chunks of at most `max_chunk_elements` pixels."""
    batch, num_classes = logits.shape[:2]
    pixels = labels.shape[-2] * labels.shape[-1]
    chunk = max(1, min(num_classes, max_chunk_elements // max(1, batch * pixels)))
    num_masks = torch.as_tensor(num_masks, dtype=_compute_dtype(logits), device=logits.device)
    return _ChunkedMaskLoss.apply(logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk)


__all__ = ["count_masks", "mask_loss", "mask_loss_reference", "upsample"]
