"""Contact sheets of segmentations: input | ground truth | predictions, titled panels and a legend.

Colours cannot be mistaken for the colour words of class names: a class whose name holds a colour word
("striped red shape") is painted in that colour, with its texture word drawn as a pattern (stripes,
dots, checks); other classes get muted, unsaturated tones that no colour word names; every region also
carries its class id, and the legend lists id, swatch and name, unseen classes marked "(unseen)".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

COLOUR_WORDS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 20),
    "pink": (240, 120, 190),
    "cyan": (40, 200, 210),
    "white": (245, 245, 245),
    "black": (30, 30, 30),
    "brown": (140, 90, 50),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
}
# tones for names without a colour word: low saturation, far from any named hue's pure colour
MUTED = [(205, 190, 150), (100, 112, 135), (215, 215, 210), (150, 168, 140), (150, 120, 100), (75, 75, 80)]
PATTERN_PERIOD = 8  # pixels of the panel


def class_style(name: str, index: int) -> tuple[tuple[int, int, int], str]:
    """(RGB, pattern) of a class: its colour word's colour, or a muted tone; its texture word, or 'solid'."""
    words = name.lower().split()
    colour = next((COLOUR_WORDS[w] for w in words if w in COLOUR_WORDS), None)
    pattern = next((w for w in words if w in ("striped", "dotted", "checkered")), "solid")
    if colour is None:
        colour = MUTED[index % len(MUTED)]
    return colour, pattern


def _pattern_mask(pattern: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    half = PATTERN_PERIOD // 2
    if pattern == "striped":
        return ((yy + xx) // half) % 2 == 1
    if pattern == "dotted":
        centre = (PATTERN_PERIOD - 1) / 2
        return (yy % PATTERN_PERIOD - centre) ** 2 + (xx % PATTERN_PERIOD - centre) ** 2 <= 4
    if pattern == "checkered":
        return (yy // half + xx // half) % 2 == 1
    return np.zeros((height, width), dtype=bool)


def paint_label_map(label_map: np.ndarray, class_names: Sequence[str], scale: int = 4) -> PIL.Image.Image:
    """(H, W) class ids -> an RGB picture of (H scale, W scale): each class in its `class_style`, its id
    written on the pixel of its largest share closest to the share's centre."""
    if label_map.ndim != 2 or scale < 1:
        raise ValueError(f"label_map must be (H, W) and scale >= 1, got {label_map.shape}, {scale}")
    big = label_map.repeat(scale, 0).repeat(scale, 1)
    height, width = big.shape
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for index in np.unique(big):
        colour, pattern = class_style(class_names[int(index)], int(index))
        mask = big == index
        dark = _pattern_mask(pattern, height, width)
        fill = np.where(dark[..., None], np.array(colour) // 2, np.array(colour)).astype(np.uint8)
        canvas[mask] = fill[mask]
    picture = PIL.Image.fromarray(canvas)
    draw = PIL.ImageDraw.Draw(picture)
    font = PIL.ImageFont.load_default()
    for index in np.unique(label_map):
        ys, xs = np.nonzero(label_map == index)
        centre = np.array([ys.mean(), xs.mean()])
        pick = np.argmin((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2)
        y, x = (ys[pick] + 0.5) * scale, (xs[pick] + 0.5) * scale
        text = str(int(index))
        box = draw.textbbox((x, y), text, font=font, anchor="mm")
        draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], fill=(255, 255, 255))
        draw.text((x, y), text, fill=(0, 0, 0), font=font, anchor="mm")
    return picture


def contact_sheet(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    class_names: Sequence[str],
    unseen_label_ids: Sequence[int] = (),
    scale: int = 4,
    ignore_index: int = 255,
) -> tuple[PIL.Image.Image, list[PIL.Image.Image]]:
    """A sheet 'input | ground truth | one panel per prediction', titled, with a legend of every class that
    shows in a panel. Returns the sheet and its panels (each the image's size times `scale`)."""
    height, width = truth.shape
    if image.shape[:2] != (height, width) or any(p.shape != truth.shape for p in predictions.values()):
        raise ValueError("image, ground truth and predictions must have the same height and width")
    unseen = set(int(i) for i in unseen_label_ids)
    shown_truth = np.where(truth == ignore_index, 0, truth)
    panels = [PIL.Image.fromarray(image).resize((width * scale, height * scale), PIL.Image.NEAREST)]
    panels.append(paint_label_map(shown_truth, class_names, scale))
    panels += [paint_label_map(p, class_names, scale) for p in predictions.values()]
    titles = ["input", "ground truth", *predictions]
    present = sorted(set(np.unique(truth[truth != ignore_index]).tolist()).union(
        *(set(np.unique(p).tolist()) for p in predictions.values())))  # fmt: skip

    font = PIL.ImageFont.load_default()
    margin, title_height, line, swatch = 8, 18, 16, 12
    columns = 2
    legend_rows = -(-len(present) // columns)
    sheet_width = len(panels) * (width * scale + margin) + margin
    sheet_height = title_height + height * scale + 2 * margin + legend_rows * line + margin
    sheet = PIL.Image.new("RGB", (sheet_width, sheet_height), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(sheet)
    for number, (panel, title) in enumerate(zip(panels, titles)):
        x = margin + number * (width * scale + margin)
        draw.text((x, 3), title, fill=(0, 0, 0), font=font)
        sheet.paste(panel, (x, title_height))
    top = title_height + height * scale + margin
    column_width = (sheet_width - margin) // columns
    for row, index in enumerate(present):
        x, y = margin + (row % columns) * column_width, top + (row // columns) * line
        colour, pattern = class_style(class_names[index], index)
        tile = np.where(_pattern_mask(pattern, swatch, swatch)[..., None], np.array(colour) // 2, np.array(colour))
        sheet.paste(PIL.Image.fromarray(tile.astype(np.uint8)), (x, y + 1))
        label = f"{index}  {class_names[index]}" + ("  (unseen)" if index in unseen else "")
        draw.text((x + swatch + 6, y), label, fill=(0, 0, 0), font=font)
    return sheet, panels


def overview(sheets: Sequence[PIL.Image.Image]) -> PIL.Image.Image:
    """The sheets one under another on a white page."""
    width = max(sheet.width for sheet in sheets)
    page = PIL.Image.new("RGB", (width, sum(sheet.height for sheet in sheets)), (255, 255, 255))
    top = 0
    for sheet in sheets:
        page.paste(sheet, (0, top))
        top += sheet.height
    return page


__all__ = ["COLOUR_WORDS", "class_style", "contact_sheet", "overview", "paint_label_map"]
