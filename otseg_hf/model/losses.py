"""Mask losses of OTSeg and ZegOT (spec section 8): sigmoid focal + dice on upsampled class maps.

Every class map is a binary problem: pixels of class k are positives, all other pixels (ignore
pixels included) are negatives. Logits come at feature resolution and are upsampled bilinearly
to the label size before the loss, as in the reference.

Two paths compute the same numbers:
- `mask_loss_reference`: the plain autograd transcription (one-hot targets, full-size tensors).
- `mask_loss`: the default. It walks the classes in chunks and computes each chunk's loss and, in
  the same pass, its analytic gradient, so the memory never holds more than one chunk of
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
    """Focal + dice over class chunks. When the logits need a gradient, the forward pass also computes it,
    chunk by chunk with the analytic formulas, while the chunk's full-resolution maps are at hand: the
    backward pass only scales the stored (B, K, h, w) gradient, and no full-resolution map is computed twice."""

    @staticmethod
    def forward(ctx, logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk):
        size = labels.shape[-2:]
        focal_total = logits.new_zeros((), dtype=_compute_dtype(logits))
        dice_total = logits.new_zeros((), dtype=_compute_dtype(logits))
        needs_grad = ctx.needs_input_grad[0]
        scale = num_masks.new_ones(()) / num_masks  # the backward's grad_output / num_masks for grad_output 1
        grads = []
        for start in range(0, logits.shape[1], chunk):
            x, y = _chunk_maps(logits, labels, start, chunk, size)
            p = x.sigmoid()
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            # in-place arithmetic where a temporary would do: the same operations in the same order as
            # `mask_loss_reference`, so the same numbers to the bit, with fewer full-resolution allocations
            p_y = p * y
            one_minus_y = 1 - y
            focal = (1 - p).mul_(one_minus_y).add_(p_y)  # p_t = p y + (1 - p)(1 - y)
            focal = torch.sub(1, focal, out=focal).pow_(gamma).mul_(ce)  # ce (1 - p_t)^gamma
            alpha_t = None
            if alpha >= 0:
                alpha_t = one_minus_y.mul_(1 - alpha).add_(alpha * y)  # alpha y + (1 - alpha)(1 - y)
                focal.mul_(alpha_t)
            focal_total = focal_total + focal.mean(-1).sum()
            del focal, one_minus_y
            inter, p_sum, y_sum = p_y.sum(-1), p.sum(-1), y.sum(-1)
            present = (y_sum > 0).to(x.dtype)
            denom = p_sum + y_sum + 1
            dice_total = dice_total + ((1 - (2 * inter + 1) / denom) * present).sum()
            if needs_grad:
                maps = (x, y, p, p_y, ce, alpha_t)
                weights = (focal_weight, dice_weight, gamma)
                low = logits[:, start : start + chunk]
                grads.append(_chunk_gradient(low, maps, (inter, denom, present), weights, scale, size))
        ctx.grad = torch.cat(grads, dim=1) if needs_grad else None
        ctx.logits_dtype = logits.dtype
        return (focal_weight * focal_total + dice_weight * dice_total) / num_masks

    @staticmethod
    def backward(ctx, grad_output):
        # scaled in the compute dtype, cast last: a loss scale cannot underflow
        grad = ctx.grad * grad_output.to(ctx.grad.dtype)
        ctx.grad = None
        return grad.to(ctx.logits_dtype), None, None, None, None, None, None, None


def _chunk_gradient(low, maps, dice_stats, weights, scale, size):
    """d loss / d low-resolution logits of one chunk, in the compute dtype, for the loss divided by num_masks
    (`scale` = 1/num_masks).

    maps: (x, y, p, p y, ce, alpha_t), the chunk's upsampled logits, targets, sigmoid, p y, cross-entropy and
    alpha weights (or None), (B, c, HW); dice_stats: (inter, denom, present) of the dice, (B, c); weights:
    (focal_weight, dice_weight, gamma). `ce` is overwritten (the forward pass is done with it)."""
    x, y, p, p_y, ce, alpha_t = maps
    inter, denom, present = dice_stats
    focal_weight, dice_weight, gamma = weights
    # in place where a temporary would do, in the operations' order of the formulas in the comments
    dp = (1 - p).mul_(p)  # dp/dx = p (1 - p)
    one_minus_pt = (p + y).sub_(2 * p_y)  # 1 - p_t = p + y - 2 p y for binary y
    # d/dx [ce (1 - p_t)^gamma] = (p - y)(1 - p_t)^gamma + ce gamma (1 - p_t)^(gamma - 1) (1 - 2y) dp,
    # with d ce/dx = p - y and d(1 - p_t)/dx = (1 - 2y) dp
    d_focal = (p - y).mul_(one_minus_pt**gamma)
    if gamma != 0:
        term = ce.mul_(gamma).mul_(one_minus_pt.pow_(gamma - 1)).mul_((1 - 2 * y).mul_(dp))
        d_focal.add_(term)
        del term
    del one_minus_pt
    if alpha_t is not None:
        d_focal.mul_(alpha_t)
    # d/dx [1 - (2I + 1) / (P + Y + 1)] = -dp (2 y D - (2I + 1)) / D^2, I = sum p y, P = sum p, D = P + Y + 1
    d_dice = dp.neg_().mul_((2 * y).mul_(denom.unsqueeze(-1)).sub_((2 * inter + 1).unsqueeze(-1)))
    d_dice.div_(denom.unsqueeze(-1) ** 2)
    # focal_weight d_focal / HW + dice_weight d_dice present, times 1 / num_masks
    d_x = (
        d_focal.mul_(focal_weight)
        .div_(x.shape[-1])
        .add_(d_dice.mul_(dice_weight).mul_(present.unsqueeze(-1)))
    )
    d_x = d_x.mul_(scale).view(*d_x.shape[:2], *size)
    with torch.enable_grad():
        low = low.detach().to(d_x.dtype).requires_grad_(True)
        (grad_low,) = torch.autograd.grad(upsample(low, size), low, d_x)
    return grad_low


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
