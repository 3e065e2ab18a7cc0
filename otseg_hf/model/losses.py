"""Mask losses of OTSeg and ZegOT (spec section 8): sigmoid focal + dice on upsampled class maps.

Every class map is a binary problem: pixels of class k are positives, all other pixels (ignore
pixels included) are negatives. Logits come at feature resolution and are upsampled bilinearly
to the label size before the loss, as in the reference.

Two paths compute the same loss (up to float rounding):
- `mask_loss_reference`: the plain autograd transcription (one-hot targets, full-size tensors).
- `mask_loss`: the default. It walks the classes in chunks and computes each chunk's loss and, in
  the same pass, its analytic gradient, so the memory never holds more than one chunk of
  full-resolution maps (the reference holds ~10 full (B, K, H, W) tensors per path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sinkhorn import _operator_namespace


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


def _loss_and_gradient(logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk, needs_grad):
    """`_ChunkedMaskLoss`'s loss and, with `needs_grad`, its gradient with respect to `logits` (else None)."""
    dtype = _compute_dtype(logits)
    (height, width), (low_h, low_w) = labels.shape[-2:], logits.shape[-2:]
    pixels = height * width
    resize_h, resize_w = _resize_matrix(low_h, height, dtype, logits.device), _resize_matrix(
        low_w, width, dtype, logits.device
    )
    labels = _compact_labels(labels, logits.shape[1]).flatten(1).unsqueeze(1)  # (B, 1, HW)
    scale = num_masks.new_ones(()) / num_masks  # the backward's grad_output / num_masks for grad_output 1
    focal_total, dice_total, grads = 0.0, 0.0, []
    for start in range(0, logits.shape[1], chunk):
        low = logits[:, start : start + chunk].to(dtype)
        x = (resize_h @ low @ resize_w.T).flatten(2)  # (B, c, HW) upsampled logits
        if dtype != logits.dtype:  # half-precision logits: upsampled in their dtype, as the reference does
            x = x.to(logits.dtype).to(dtype)
        ids = torch.arange(start, start + low.shape[1], device=labels.device, dtype=labels.dtype)
        y = (labels == ids.view(1, -1, 1)).to(dtype)  # (B, c, HW) binary targets
        z = torch.addcmul(x, x, y, value=-2)  # (1 - 2y) x
        del x
        q = torch.sigmoid(z)  # 1 - p_t
        ce = F.softplus(z)  # -log p_t
        del z
        # dice on p = sigmoid(x) = |q - y|
        p = (q - y).abs_()
        inter, p_sum, y_sum = torch.linalg.vecdot(p, y), p.sum(-1), y.sum(-1)
        del p
        present = (y_sum > 0).to(dtype)
        denom = p_sum + y_sum + 1
        dice_total = dice_total + ((1 - (2 * inter + 1) / denom) * present).sum()
        # focal: mean over the pixels of alpha_t ce q^gamma
        q_gamma = None if gamma == 0 else q if gamma == 1 else q * q if gamma == 2 else q.pow(gamma)
        focal = ce if q_gamma is None else ce * q_gamma
        focal_sum = focal.sum(-1)
        if alpha >= 0:  # alpha on positives, 1 - alpha on negatives
            focal_sum = (1 - alpha) * focal_sum + (2 * alpha - 1) * torch.linalg.vecdot(focal, y)
        focal_total = focal_total + focal_sum.sum() / pixels
        del focal
        if needs_grad:
            maps = (y, q, q_gamma, ce)
            weights = (focal_weight, dice_weight, alpha, gamma)
            d_x = _chunk_gradient(maps, (inter, denom, present), weights, scale, pixels)
            grads.append(resize_h.T @ d_x.view(*d_x.shape[:2], height, width) @ resize_w)
    loss = (focal_weight * focal_total + dice_weight * dice_total) / num_masks
    return loss, torch.cat(grads, dim=1) if needs_grad else None


class _ChunkedMaskLoss(torch.autograd.Function):
    """Focal + dice over class chunks. When the logits need a gradient, the forward pass also computes it,
    chunk by chunk with the analytic formulas, while the chunk's full-resolution maps are at hand: the
    backward pass only scales the stored (B, K, h, w) gradient, and no full-resolution map is computed twice.

    Fused for speed (the same formulas as the transcription, rearranged; float rounding differs):
    - with binary targets every per-pixel term is a function of z = (1 - 2y) x and q = sigmoid(z) = 1 - p_t:
      ce = softplus(z), p = |q - y|, dp/dx = q (1 - q), so a value costs one sigmoid and one softplus;
    - bilinear resizing is separable, out = A_h x A_w^T with (out, in) weight matrices (F.interpolate's own
      weights): the upsampling and its transpose (the gradient) are two small matmuls each;
    - sums of products over the pixels are `vecdot`s, per-target constants are `addcmul`s of the 0/1 targets.
    """

    @staticmethod
    def forward(ctx, logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk):
        loss, ctx.grad = _loss_and_gradient(
            logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk, ctx.needs_input_grad[0]
        )
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        # scaled in the compute dtype, cast last: a loss scale cannot underflow
        grad = ctx.grad * grad_output.to(ctx.grad.dtype)
        ctx.grad = None
        return grad.to(ctx.logits_dtype), None, None, None, None, None, None, None


def _register_opaque_loss():
    """`_loss_and_gradient` as a custom operator with `_ChunkedMaskLoss`'s backward, which `torch.compile`
    calls as it is (opaque: the eager chunked loss runs, with its cache-sized chunks, and inductor generates
    no code for it). Registered at import (an operator cannot be registered while being traced), under a name
    made from this module's name (`sinkhorn._operator_namespace`), so that copies of this file (the package's
    and a Hub folder's remote code) do not clash."""
    namespace = _operator_namespace(__name__, "mask_loss")
    schema = (
        "(Tensor logits, Tensor labels, Tensor num_masks, float focal_weight, float dice_weight, "
        "float alpha, float gamma, int chunk, bool needs_grad) -> (Tensor, Tensor)"
    )

    @torch.library.custom_op(f"{namespace}::mask_loss", mutates_args=(), schema=schema)
    def loss_op(logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk, needs_grad):
        """(loss, its gradient with respect to `logits` in the compute dtype; empty without `needs_grad`)."""
        loss, grad = _loss_and_gradient(
            logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk, needs_grad
        )
        return loss.clone(), grad if needs_grad else logits.new_empty(0, dtype=loss.dtype)

    @loss_op.register_fake
    def _(logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk, needs_grad):
        dtype = _compute_dtype(logits)
        grad = logits.new_empty(logits.shape if needs_grad else (0,), dtype=dtype)
        return logits.new_empty((), dtype=dtype), grad

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1])
        ctx.logits_dtype = inputs[0].dtype

    def backward(ctx, grad_output, _grad_grad):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output.to(grad.dtype)).to(ctx.logits_dtype), *[None] * 8

    loss_op.register_autograd(backward, setup_context=setup_context)
    return loss_op


_opaque_mask_loss = _register_opaque_loss()


def _chunk_gradient(maps, dice_stats, weights, scale, pixels):
    """d loss / d upsampled logits of one chunk, (B, c, HW), for the loss divided by num_masks (`scale`).

    maps: (y, q, q^gamma or None, ce) of the chunk, (B, c, HW); dice_stats: (inter, denom, present) of the dice,
    (B, c); weights: (focal_weight, dice_weight, alpha, gamma). `q` is overwritten.

    With z = (1 - 2y) x, q = sigmoid(z): dz/dx = 1 - 2y, dq/dz = q (1 - q), d ce/dz = q, so
        d/dx [alpha_t ce q^gamma] = (1 - 2y) alpha_t q^gamma (q + gamma ce (1 - q))
        d/dx [1 - (2I + 1) / D]   = -q (1 - q) (2 y D - (2I + 1)) / D^2,  I = sum p y, D = sum p + sum y + 1
    """
    y, q, q_gamma, ce = maps
    inter, denom, present = dice_stats
    focal_weight, dice_weight, alpha, gamma = weights
    # focal: (q + gamma ce (1 - q)) q^gamma times a per-target constant (with 1/HW of the mean, 1/num_masks)
    k = scale * (focal_weight / pixels)
    w_pos, w_neg = (-alpha * k, (1 - alpha) * k) if alpha >= 0 else (-k, k)
    d_x = torch.addcmul(q, ce, torch.sub(1, q), value=gamma) if gamma != 0 else q.clone()
    if q_gamma is not None:
        d_x.mul_(q_gamma)
    d_x.mul_(torch.addcmul(w_neg, y, w_pos - w_neg))
    # dice: q (1 - q) times a per-(map, target) constant
    weight = (dice_weight * scale) * present / denom**2
    c_pos = (-(2 * denom - (2 * inter + 1)) * weight).unsqueeze(-1)
    c_neg = ((2 * inter + 1) * weight).unsqueeze(-1)
    dp = q.sub_(q_gamma if gamma == 2 else q * q)
    return d_x.addcmul_(dp, torch.addcmul(c_neg, y, c_pos - c_neg))


def _resize_matrix(size_in: int, size_out: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(size_out, size_in) weights of 1-D bilinear resizing without corner alignment, as F.interpolate has them
    (the identity when the sizes match): `upsample(x) = A_h x A_w^T` for a (h, w) map."""
    eye = torch.eye(size_in, dtype=torch.float64, device=device).view(1, size_in, size_in, 1)
    columns = F.interpolate(eye, size=(size_out, 1), mode="bilinear", align_corners=False)  # (1, in, out, 1)
    return columns[0, :, :, 0].T.to(dtype).contiguous()


def _compact_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels in the smallest integer type that holds the class ids, ignore and other values mapped to -1
    (a negative for every class): comparing them to each class id reads fewer bytes."""
    dtype = torch.int16 if num_classes < 2**15 else torch.int32
    labels = labels.long()
    return torch.where((labels >= 0) & (labels < num_classes), labels, -1).to(dtype)


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
    """`mask_loss_reference`, computed in class chunks of at most `max_chunk_elements` pixels (and at most
    `_CACHE_CHUNK_ELEMENTS`, so that a chunk's few live maps stay in the CPU's last-level cache). Under
    `torch.compile` the same chunked computation runs as an opaque custom operator (`_register_opaque_loss`):
    the same numbers as eager, and no generated code for it."""
    batch, num_classes = logits.shape[:2]
    pixels = labels.shape[-2] * labels.shape[-1]
    elements = min(max_chunk_elements, _CACHE_CHUNK_ELEMENTS)
    chunk = max(1, min(num_classes, elements // max(1, batch * pixels)))
    num_masks = torch.as_tensor(num_masks, dtype=_compute_dtype(logits), device=logits.device)
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        needs_grad = logits.requires_grad and torch.is_grad_enabled()
        weights = (float(focal_weight), float(dice_weight), float(alpha), float(gamma))
        return _opaque_mask_loss(logits, labels, num_masks, *weights, chunk, needs_grad)[0]
    return _ChunkedMaskLoss.apply(logits, labels, num_masks, focal_weight, dice_weight, alpha, gamma, chunk)


# values per map of a chunk; on a 2-core EPYC with 1 thread the loss of 2 x 156 x 512 x 512 values took 2.7 s in
# chunks of 1M values and 5.3 s in chunks of 4M (the same numbers). With 2 threads on an oversubscribed CPU the
# many short parallel regions of small chunks cost more than the cache saves (9.8 s at 4M, 20 s at 1M): there,
# one thread is fastest.
_CACHE_CHUNK_ELEMENTS = 2**20


__all__ = ["count_masks", "mask_loss", "mask_loss_reference", "upsample"]
