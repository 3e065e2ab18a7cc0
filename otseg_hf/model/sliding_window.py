"""Sliding-window inference (spec section 7), as the reference's mmseg `slide_inference` runs it.

Windows of `window_size` move by `stride`; they are clipped to the image and the last one of each row and
column is flush with the border, so every window has the same size, min(window, H) x min(window, W). Windows
are padded (bottom/right, with 0) to a multiple of the patch size when needed, run in batches, their ensemble
logits upsampled bilinearly to the padded window, turned into probabilities with a sigmoid, cropped back, and
averaged where windows overlap.

This module takes the model as an argument and imports nothing from the package, so it also serves as Hub
remote code.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput


@dataclass
class OTSegSlidingWindowOutput(ModelOutput):
    """Output of [`sliding_window_inference`].

    Args:
        probabilities (`torch.FloatTensor` of shape `(batch_size, K, height, width)`):
            Sigmoid of the upsampled OTSeg+ ensemble logits at the input resolution, averaged over the windows
            covering each pixel; no seen-class penalty (the image processor's post-processing applies it).
    """

    probabilities: torch.FloatTensor | None = None


def window_boxes(height: int, width: int, window_size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's window grid: `(y1, y2, x1, x2)` of every window, row-major.

    Per axis: n = max(L - window + stride - 1, 0) // stride + 1 windows; window i starts at i * stride, ends at
    min(start + window, L), and starts again at max(end - window, 0), so the last one is flush with the border.
    """
    if window_size < 1 or stride < 1:
        raise ValueError(f"window_size and stride must be positive, got {window_size} and {stride}")

    def axis(length: int) -> list[tuple[int, int]]:
        count = max(length - window_size + stride - 1, 0) // stride + 1
        spans = []
        for index in range(count):
            end = min(index * stride + window_size, length)
            spans.append((max(end - window_size, 0), end))
        return spans

    return [(y1, y2, x1, x2) for y1, y2 in axis(height) for x1, x2 in axis(width)]


@torch.no_grad()
def sliding_window_inference(
    model,
    pixel_values: torch.Tensor,
    window_size: int | None = None,
    stride: int | None = None,
    window_batch_size: int = 8,
    text_embeds: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> OTSegSlidingWindowOutput:
    """Segment images of any size with windows of the model's inference size.

    Args:
        model: an `OTSegForSemanticSegmentation` in eval mode (anything with its `config` fields,
            `forward(pixel_values, text_embeds=...)` returning `logits` at 1/patch resolution, and
            `get_text_embeddings`).
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): normalised images of any
            size (not padded: padding would be segmented as image).
        window_size: window side; defaults to `model.config.inference_window_size`.
        stride: window step; defaults to `model.config.inference_window_stride`.
        window_batch_size: windows per forward pass.
        text_embeds (`(K, N, D)`, *optional*): prompt embeddings of another vocabulary.
        input_ids, attention_mask (*optional*): tokenised prompts of another vocabulary (class-major), embedded
            once for all windows.

    Returns:
        [`OTSegSlidingWindowOutput`] with `probabilities` (batch_size, K, height, width), float32.
    """
    config = model.config
    window_size = config.inference_window_size if window_size is None else window_size
    stride = config.inference_window_stride if stride is None else stride
    check_window(window_size, stride, window_batch_size)
    window_size, stride = int(window_size), int(stride)
    patch = config.clip_config.vision_config.patch_size
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        raise ValueError("pixel_values must be a (batch, channels, height, width) tensor")
    if pixel_values.shape[0] == 0 or pixel_values.shape[-1] == 0 or pixel_values.shape[-2] == 0:
        raise ValueError(f"pixel_values is empty: shape {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be a float tensor (normalised images), got {pixel_values.dtype}")
    if not torch.isfinite(pixel_values).all():
        raise ValueError("pixel_values holds NaN or infinite values: check the images")
    if text_embeds is not None and input_ids is not None:
        raise ValueError("give either text_embeds or input_ids, not both")
    if input_ids is not None:
        text_embeds = model.get_text_embeddings(input_ids, attention_mask)

    batch, _, height, width = pixel_values.shape
    boxes = window_boxes(height, width, window_size, stride)
    crop_h, crop_w = min(window_size, height), min(window_size, width)
    pad_h, pad_w = -crop_h % patch, -crop_w % patch  # up to the next patch multiple
    crops = [(b, box) for b in range(batch) for box in boxes]

    device = next(model.parameters()).device
    sums = None
    for start in range(0, len(crops), window_batch_size):
        chunk = crops[start : start + window_batch_size]
        windows = torch.stack([pixel_values[b, :, y1:y2, x1:x2] for b, (y1, y2, x1, x2) in chunk])
        windows = F.pad(windows, (0, pad_w, 0, pad_h)).to(device)  # (n, 3, crop_h + pad_h, crop_w + pad_w)
        logits = model(pixel_values=windows, text_embeds=text_embeds).logits  # (n, K, h, w)
        probs = F.interpolate(
            logits.float(), size=windows.shape[-2:], mode="bilinear", align_corners=False
        ).sigmoid()[:, :, :crop_h, :crop_w]
        if sums is None:
            sums = torch.zeros(batch, probs.shape[1], height, width, device=device)
        for (b, (y1, y2, x1, x2)), window_probs in zip(chunk, probs):
            sums[b, :, y1:y2, x1:x2] += window_probs

    counts = torch.zeros(height, width, device=device)
    for y1, y2, x1, x2 in boxes:
        counts[y1:y2, x1:x2] += 1
    probabilities = sums / counts
    if not torch.isfinite(probabilities).all():
        raise ValueError(
            "the model gave NaN or infinite probabilities: its weights or the text embeddings hold non-finite "
            "values (check the model folder)"
        )
    return OTSegSlidingWindowOutput(probabilities=probabilities)


def check_window(window_size, stride, window_batch_size=1) -> None:
    """`ValueError` unless the window, stride and window batch are positive integers and the stride is at most
    the window: a larger stride leaves pixels between windows that no window covers."""
    values = {"window_size": window_size, "stride": stride, "window_batch_size": window_batch_size}
    for name, value in values.items():
        try:
            if isinstance(value, bool) or operator.index(value) < 1:
                raise TypeError
        except TypeError:
            raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if stride > window_size:
        raise ValueError(
            f"stride {stride} is larger than window_size {window_size}: pixels between windows would get no "
            "prediction; use a stride of at most the window size"
        )


__all__ = ["OTSegSlidingWindowOutput", "check_window", "sliding_window_inference", "window_boxes"]
