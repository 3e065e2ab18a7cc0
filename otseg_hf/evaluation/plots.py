"""Pictures of a training run and of an evaluation, drawn with Pillow (no plotting library needed):

- `training_curves`: loss and learning rate per step, and the periodic evaluations' mIoU(S), mIoU(U) and hIoU;
  training/train.py writes it as OUTPUT_DIR/training_curves.png and the model card shows it;
- `per_class_iou_chart`: one bar per class, seen and unseen classes coloured apart (`evaluate.py --plots`);
- `confusion_matrix_image`: the row-normalised confusion matrix (rows ground truth) as a heat map.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

SEEN_COLOR, UNSEEN_COLOR = (31, 119, 180), (255, 127, 14)
CURVE_COLORS = {"seen_mean_iou": SEEN_COLOR, "unseen_mean_iou": UNSEEN_COLOR, "harmonic_mean_iou": (44, 160, 44)}
CURVE_NAMES = {"seen_mean_iou": "mIoU(S)", "unseen_mean_iou": "mIoU(U)", "harmonic_mean_iou": "hIoU"}
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
_FONT = PIL.ImageFont.load_default()


def _panel(
    draw: PIL.ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Sequence[tuple[str, tuple[int, int, int], Sequence[float], Sequence[float]]],
    log_y: bool = False,
) -> None:
    """One line chart in `box` (left, top, right, bottom): axes, min/max ticks, a legend, each series
    (name, colour, x values, y values); points where y is not finite are skipped."""
    left, top, right, bottom = box
    draw.text((left, top), title, fill=BLACK, font=_FONT)
    x0, y0, x1, y1 = left + 48, top + 16, right - 8, bottom - 16  # plot area
    draw.rectangle([x0, y0, x1, y1], outline=BLACK)
    points = [(x, y) for _, _, xs, ys in series for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
    if not points:
        draw.text((x0 + 8, y0 + 8), "no values", fill=BLACK, font=_FONT)
        return
    xs = [x for x, _ in points]
    ys = [math.log10(y) if log_y else y for _, y in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5

    def position(x: float, y: float) -> tuple[float, float]:
        y = math.log10(y) if log_y else y
        return (x0 + (x - x_low) / (x_high - x_low) * (x1 - x0), y1 - (y - y_low) / (y_high - y_low) * (y1 - y0))

    def label(value: float) -> str:
        return f"{10**value:.1e}" if log_y else f"{value:.3g}"

    draw.text((left, y0), label(y_high), fill=BLACK, font=_FONT)
    draw.text((left, y1 - 10), label(y_low), fill=BLACK, font=_FONT)
    draw.text((x0, y1 + 2), f"{x_low:g}", fill=BLACK, font=_FONT)
    draw.text((x1 - 40, y1 + 2), f"step {x_high:g}", fill=BLACK, font=_FONT)
    for row, (name, color, xs, ys) in enumerate(series):
        line = [position(x, y) for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
        if len(line) > 1:
            draw.line(line, fill=color, width=2)
        for x, y in line:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        if len(series) > 1 or name != title:
            draw.rectangle([x1 - 90, y0 + 6 + 12 * row, x1 - 82, y0 + 14 + 12 * row], fill=color)
            draw.text((x1 - 78, y0 + 4 + 12 * row), name, fill=BLACK, font=_FONT)


def training_curves(
    records: Sequence[Mapping[str, float]], evaluations: Sequence[Mapping[str, float]] = ()
) -> PIL.Image.Image:
    """Loss and learning rate (log scale) per step from `records` (`{"step", "loss", "lr"}`, as in
    train_log.jsonl) and, when there are `evaluations` (`{"step", "seen_mean_iou", ...}` fractions), a third panel
    with mIoU(S), mIoU(U) and hIoU in percent."""
    panels = 3 if evaluations else 2
    width, height = 640, 200
    image = PIL.Image.new("RGB", (width, height * panels), WHITE)
    draw = PIL.ImageDraw.Draw(image)
    steps = [float(r["step"]) for r in records]
    _panel(draw, (0, 0, width, height), "loss", [("loss", SEEN_COLOR, steps, [float(r["loss"]) for r in records])])
    _panel(
        draw, (0, height, width, 2 * height), "learning rate",
        [("learning rate", UNSEEN_COLOR, steps, [float(r["lr"]) for r in records])], log_y=True,
    )  # fmt: skip
    if evaluations:
        eval_steps = [float(e["step"]) for e in evaluations]
        series = [
            (CURVE_NAMES[key], color, eval_steps, [100 * _number(e.get(key)) for e in evaluations])
            for key, color in CURVE_COLORS.items()
        ]
        _panel(draw, (0, 2 * height, width, 3 * height), "evaluation (%)", series)
    return image


def per_class_iou_chart(results: Mapping) -> PIL.Image.Image:
    """Horizontal bars of each class's IoU (%) from the evaluation JSON (`per_class`: name, split, iou), seen classes
    blue, unseen orange; classes without pixels are marked "no pixels"."""
    classes = list(results["per_class"])
    row, name_width, bar_width = 16, 8 + max((len(c["name"]) for c in classes), default=4) * 6, 360
    width, height = name_width + bar_width + 70, 40 + row * len(classes)
    image = PIL.Image.new("RGB", (width, height), WHITE)
    draw = PIL.ImageDraw.Draw(image)
    draw.text((4, 4), "IoU per class (%)", fill=BLACK, font=_FONT)
    for label, color, x in (("seen", SEEN_COLOR, width - 130), ("unseen", UNSEEN_COLOR, width - 70)):
        draw.rectangle([x, 6, x + 8, 14], fill=color)
        draw.text((x + 12, 4), label, fill=BLACK, font=_FONT)
    for index, item in enumerate(classes):
        y = 24 + index * row
        draw.text((4, y), item["name"], fill=BLACK, font=_FONT)
        iou = item.get("iou")
        if iou is None:
            draw.text((name_width, y), "no pixels", fill=BLACK, font=_FONT)
            continue
        color = UNSEEN_COLOR if item.get("split") == "unseen" else SEEN_COLOR
        draw.rectangle([name_width, y + 2, name_width + max(1, round(bar_width * iou)), y + row - 3], fill=color)
        draw.text((name_width + bar_width * iou + 4, y), f"{100 * iou:.1f}", fill=BLACK, font=_FONT)
    draw.line([name_width, 22, name_width, height - 8], fill=GREY)
    return image


def confusion_matrix_image(matrix, class_names: Sequence[str], cell: int = 0) -> PIL.Image.Image:
    """The (K, K) pixel counts (rows ground truth, columns prediction) normalised per row, as grey levels (white 0,
    black 1), with the class names along the rows and the class ids along the columns."""
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"the confusion matrix must be ({len(class_names)}, {len(class_names)}), got {counts.shape}")
    k = counts.shape[0]
    cell = cell or max(4, min(24, 600 // max(k, 1)))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    name_width = 8 + max((len(name) for name in class_names), default=4) * 6 + 24
    top = 30
    image = PIL.Image.new("RGB", (name_width + k * cell + 8, top + k * cell + 24), WHITE)
    draw = PIL.ImageDraw.Draw(image)
    draw.text((4, 4), "confusion matrix (rows: ground truth, share of the row; columns: prediction)", fill=BLACK,
              font=_FONT)  # fmt: skip
    grey = np.round(255 * (1 - shares)).astype(np.uint8)
    cells = PIL.Image.fromarray(grey).resize((k * cell, k * cell), PIL.Image.NEAREST).convert("RGB")
    image.paste(cells, (name_width, top))
    draw.rectangle([name_width - 1, top - 1, name_width + k * cell, top + k * cell], outline=BLACK)
    if cell >= 10:
        for index, name in enumerate(class_names):
            draw.text((4, top + index * cell + (cell - 10) // 2), f"{name} {index}", fill=BLACK, font=_FONT)
            draw.text((name_width + index * cell + 1, top + k * cell + 4), str(index), fill=BLACK, font=_FONT)
    return image


def save_png(image: PIL.Image.Image, path: str | os.PathLike) -> Path:
    """Write `image` as a PNG atomically (a partial file, then renamed)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    image.save(partial, format="PNG")
    os.replace(partial, path)
    return path


def write_training_curves(output_dir: str | os.PathLike, evaluations: Sequence[Mapping] = ()) -> Path | None:
    """OUTPUT_DIR/training_curves.png from OUTPUT_DIR/train_log.jsonl (every step the folder has logged) and the
    run's periodic evaluations; None when nothing was logged."""
    log = Path(output_dir) / "train_log.jsonl"
    if not log.is_file():
        return None
    by_step = {}
    for line in log.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if "loss" in record and "lr" in record:
                by_step[record["step"]] = record  # a step written twice counts once
    if not by_step:
        return None
    records = [by_step[step] for step in sorted(by_step)]
    return save_png(training_curves(records, evaluations), Path(output_dir) / "training_curves.png")


def _number(value) -> float:
    return float("nan") if value is None else float(value)


__all__ = [
    "confusion_matrix_image",
    "per_class_iou_chart",
    "save_png",
    "training_curves",
    "write_training_curves",
]
