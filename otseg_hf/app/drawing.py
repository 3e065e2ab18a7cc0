"""Pictures of label maps: the colour palette, the overlay with its legend (classes found and their share of the
image) and the label-map PNG. Imports only numpy and Pillow, so a Space folder can carry it beside `app.py`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont


def palette(num_colors: int) -> np.ndarray:
    """(num_colors, 3) uint8: PASCAL VOC's colour map without its black first entry (bit-interleaved ids)."""
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, color = index + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                color[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colors[index] = color
    return colors


def overlay(
    image: PIL.Image.Image, label_map: np.ndarray, labels: Sequence[str], alpha: float = 0.5
) -> PIL.Image.Image:
    """The image blended with the label colours, and a legend (colour, label, share of the image) at its right
    for the labels present."""
    colors = palette(len(labels))
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    labelled = label_map >= 0  # unlabelled pixels (-1, below a threshold) keep the image's colours
    blended = rgb.copy()
    blended[labelled] = (1 - alpha) * rgb[labelled] + alpha * colors[label_map[labelled]].astype(np.float32)
    picture = PIL.Image.fromarray(np.round(blended).astype(np.uint8))

    present, counts = np.unique(label_map[labelled], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    entries = [(int(present[i]), counts[i] / label_map.size) for i in order]
    font = PIL.ImageFont.load_default()
    line, swatch, margin = 16, 12, 6
    texts = [f"{labels[index]} ({share:.0%})" for index, share in entries]
    measure = PIL.ImageDraw.Draw(picture)
    text_width = max((int(measure.textlength(text, font=font)) for text in texts), default=0)
    legend_width = margin * 3 + swatch + text_width
    height = max(picture.height, margin * 2 + line * len(entries))
    canvas = PIL.Image.new("RGB", (picture.width + legend_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    for row, ((index, _), text) in enumerate(zip(entries, texts)):
        x, y = picture.width + margin, margin + row * line
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(int(c) for c in colors[index]))
        draw.text((x + swatch + margin, y), text, fill=(0, 0, 0), font=font)
    return canvas


def label_map_image(label_map: np.ndarray, num_labels: int) -> PIL.Image.Image:
    """Palette PNG of class indices (up to 255 labels; unlabelled pixels 255, black), else 16-bit greyscale
    (unlabelled 65535)."""
    if num_labels <= 255:
        values = np.where(label_map >= 0, label_map, 255).astype(np.uint8)
        image = PIL.Image.fromarray(values, mode="P")
        colors = np.zeros((256, 3), dtype=np.uint8)
        colors[:num_labels] = palette(num_labels)
        image.putpalette(colors.flatten().tolist())
        return image
    return PIL.Image.fromarray(np.where(label_map >= 0, label_map, 65535).astype(np.uint16))


def segments_to_label_map(
    segments: list[dict], labels: Sequence[str], size: tuple[int, int] | None = None
) -> np.ndarray:
    """Pipeline output (one binary mask per label found) -> (H, W) array of indices into `labels`; pixels in no
    mask (below a threshold) are -1. `size` (H, W) is needed when no segment was found."""
    index = {label: i for i, label in enumerate(labels)}
    label_map = None if size is None else np.full(size, -1, dtype=np.int64)
    for segment in segments:
        mask = np.asarray(segment["mask"]) > 0
        if label_map is None:
            label_map = np.full(mask.shape, -1, dtype=np.int64)
        label_map[mask] = index[segment["label"]]
    return label_map


def class_areas(label_map: np.ndarray, labels: Sequence[str]) -> list[tuple[str, float]]:
    """(label, share of the image) for the labels present, largest first; unlabelled pixels (-1) count in the
    image but in no label."""
    present, counts = np.unique(label_map[label_map >= 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(labels[int(present[i])], counts[i] / label_map.size) for i in order]


__all__ = ["class_areas", "label_map_image", "overlay", "palette", "segments_to_label_map"]
