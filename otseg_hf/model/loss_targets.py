"""Labels in the three zero-shot settings (spec section 8), shared by OTSeg and ZegOT.

- fully supervised: every class seen, labels used as they are;
- inductive: only seen classes exist in training; their ids become 0..K_seen-1 (in the order of
  `seen_label_ids`) and pixels of unseen classes are ignored;
- transductive: all classes; pixels whose ground truth is unseen get a pseudo label, the unseen
  class of highest probability, computed without gradient.
"""

from __future__ import annotations

import torch

from .image_transforms import check_label_ids
from .losses import count_masks, mask_loss, upsample


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Return `labels` as int64 (B, H, W); raise `ValueError` for ids outside 0..K-1 and ignore.

    Under `torch.compile` the value check cannot read the labels back to the host without a graph break: it is
    an assertion inside the compiled program instead (`torch._assert_async`, a `RuntimeError` with the same
    advice but without the offending ids), still before any work that uses the labels."""
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape (batch, height, width), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class ids, got dtype {labels.dtype}")
    labels = labels.long()
    if torch.compiler.is_compiling():
        valid = ((labels >= 0) & (labels < num_classes)) | (labels == ignore_index)
        torch._assert_async(
            valid.all(),
            f"labels hold ids outside the {num_classes} classes (0..{num_classes - 1}) that are not the ignore "
            f"index {ignore_index}; check the class list, or reduce the labels if 0 is a background that is "
            "not a class",
        )
        return labels
    return check_label_ids(labels, num_classes, ignore_index)


def inductive_labels(labels: torch.Tensor, seen_label_ids: list[int], ignore_index: int) -> torch.Tensor:
    """Map seen class ids to 0..K_seen-1 (order of `seen_label_ids`); every other pixel -> ignore."""
    if not seen_label_ids:
        raise ValueError(
            "an inductive model without seen classes (seen_label_ids is empty) has nothing to train on; "
            "set seen_label_ids, or seen_label_ids=None for fully supervised training"
        )
    num_classes = int(max(seen_label_ids, default=-1)) + 1
    lookup = torch.full((max(num_classes, 1),), ignore_index, dtype=labels.dtype, device=labels.device)
    lookup[torch.as_tensor(seen_label_ids, dtype=torch.long, device=labels.device)] = torch.arange(
        len(seen_label_ids), dtype=labels.dtype, device=labels.device
    )
    in_range = (labels >= 0) & (labels < num_classes)
    return torch.where(in_range, lookup[labels.clamp(0, lookup.numel() - 1)], ignore_index)


@torch.no_grad()
def transductive_labels(
    labels: torch.Tensor, logits: torch.Tensor, unseen_label_ids: list[int]
) -> torch.Tensor:
    """Replace unseen ground truth by the unseen class of highest probability, sigmoid(logits) upsampled to the
    label size (OTSeg passes its ensemble logits, ZegOT its combined map).

    Args:
        labels: (B, H, W) class ids of the full vocabulary.
        logits: (B, K, h, w) logits of the full vocabulary.
        unseen_label_ids: ids of the unseen classes.
    """
    unseen = torch.as_tensor(unseen_label_ids, dtype=torch.long, device=labels.device)
    probs = upsample(logits[:, unseen].float(), labels.shape[-2:]).sigmoid()  # (B, K_unseen, H, W)
    pseudo = unseen[probs.argmax(dim=1)]
    return torch.where(torch.isin(labels, unseen), pseudo, labels)


def setting_labels(
    labels: torch.Tensor, num_classes: int, setting: str, seen_label_ids, ignore_index: int
) -> tuple[torch.Tensor, list[int] | None]:
    """Checked labels of the setting, and the classes the loss computes (`None`: all of them)."""
    labels = check_labels(labels, num_classes, ignore_index)
    if setting == "inductive":
        return inductive_labels(labels, seen_label_ids, ignore_index), list(seen_label_ids)
    return labels, None


def zero_shot_loss(
    weighted_maps: list[tuple[float, torch.Tensor]],
    labels: torch.Tensor,
    input_size: tuple[int, int],
    config,
    pseudo_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of weight x (focal + dice) over the (weight, logits (B, K, h, w)) maps (spec section 8).

    As in the reference, the maps are first resized to the input size when the labels have another size. With
    `pseudo_logits` (transductive), unseen ground truth is first replaced by `transductive_labels` of them. The
    loss fields (`focal_loss_weight`, `dice_loss_weight`, `focal_alpha`, `focal_gamma`, `unseen_label_ids`)
    come from `config`.
    """
    if tuple(labels.shape[-2:]) != tuple(input_size):
        weighted_maps = [(weight, upsample(logits, input_size)) for weight, logits in weighted_maps]
        if pseudo_logits is not None:
            pseudo_logits = upsample(pseudo_logits, input_size)
    if pseudo_logits is not None:
        labels = transductive_labels(labels, pseudo_logits, config.unseen_label_ids)
    num_masks = count_masks(labels, weighted_maps[0][1].shape[1])
    return sum(
        weight
        * mask_loss(
            logits,
            labels,
            num_masks,
            config.focal_loss_weight,
            config.dice_loss_weight,
            config.focal_alpha,
            config.focal_gamma,
        )
        for weight, logits in weighted_maps
    )


__all__ = [
    "check_labels",
    "inductive_labels",
    "setting_labels",
    "transductive_labels",
    "zero_shot_loss",
]
