"""Semantic-segmentation metrics from a streaming confusion matrix (spec section 11).

Everything is read off one (K, K) matrix of pixel counts, rows = ground truth, columns =
prediction, over the pixels whose label is not the ignore index:

- IoU_k = C_kk / (sum_j C_kj + sum_i C_ik - C_kk); accuracy_k = C_kk / sum_j C_kj;
- a class absent from both prediction and ground truth has IoU NaN and is left out of the means
  (a class predicted but absent from the ground truth has IoU 0 and accuracy NaN);
- mIoU over all classes, mIoU(S) over the seen ones, mIoU(U) over the unseen ones,
  hIoU = 2 S U / (S + U), pixel accuracy = trace(C) / sum(C).

The memory is K^2 integers whatever the size of the dataset. Across processes, sum the
matrices (`SegmentationMetric.reduce`), or gather per-image matrices with
`accelerator.gather_for_metrics` (which drops the samples repeated to even out the last batch)
and add them with `update_confusion_matrix`.

`evaluate.load` copies the `evaluate` script `otseg_miou.py` beside it together with this module into its
own cache, where relative imports above this folder do not resolve: the shared label check is therefore
imported by its absolute name (`otseg_hf` is installed wherever the script is loaded from its path).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from otseg_hf.model.image_transforms import check_label_ids

NO_PIXELS = "no pixels"
# `evaluate.load(EVALUATE_MODULE_PATH)` gives these metrics as an `evaluate.Metric` (works offline)
EVALUATE_MODULE_PATH = str(Path(__file__).with_name("otseg_miou.py"))


def confusion_matrix(
    predictions: torch.Tensor | np.ndarray | Sequence,
    labels: torch.Tensor | np.ndarray | Sequence,
    num_classes: int,
    ignore_index: int = 255,
    per_sample: bool = False,
) -> torch.Tensor:
    """Pixel counts C[i, j] = #{pixels with label i predicted j}, ignoring pixels labelled `ignore_index`.

    Args:
        predictions: predicted class ids 0..K-1, any shape (e.g. (B, H, W)); or a list of maps of
            different sizes.
        labels: ground-truth ids of the same shape(s); `ignore_index` marks pixels without a class.
        num_classes: K.
        ignore_index: label of ignored pixels (their predictions are not looked at).
        per_sample: return one matrix per item of the first dimension (per list item for lists).

    Returns:
        int64 tensor (K, K), or (B, K, K) with `per_sample`, on the device of the inputs.

    Raises:
        ValueError: for labels outside 0..K-1 that are not `ignore_index`, or predictions outside
            0..K-1 at labelled pixels; the message names the offending ids.
    """
    if isinstance(predictions, (list, tuple)) or isinstance(labels, (list, tuple)):
        if len(predictions) != len(labels):
            raise ValueError(f"got {len(predictions)} prediction maps but {len(labels)} label maps")
        matrices = [
            confusion_matrix(p, y, num_classes, ignore_index).to(torch.device("cpu"))
            for p, y in zip(predictions, labels)
        ]
        if not matrices:
            return torch.zeros(
                (0, num_classes, num_classes) if per_sample else (num_classes,) * 2, dtype=torch.long
            )
        stacked = torch.stack(matrices)
        return stacked if per_sample else stacked.sum(0)

    predictions, labels = _as_long_tensor(predictions), _as_long_tensor(labels)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape"
        )
    predictions = predictions.to(labels.device)
    if per_sample and labels.dim() == 0:
        raise ValueError("per_sample needs inputs with a batch dimension")
    batch = labels.shape[0] if per_sample else 1
    labels, predictions = labels.reshape(batch, -1), predictions.reshape(batch, -1)

    check_label_ids(labels, num_classes, ignore_index)
    valid = labels != ignore_index
    bad_predictions = valid & ((predictions < 0) | (predictions >= num_classes))
    if bool(bad_predictions.any()):
        raise ValueError(
            f"predictions contain ids {_some_values(predictions[bad_predictions])} outside the "
            f"{num_classes} classes (0..{num_classes - 1}) at labelled pixels"
        )

    # flat index of (sample, label, prediction) -> one bincount for the whole batch
    sample = torch.arange(batch, device=labels.device).unsqueeze(1).expand_as(labels)
    index = (sample * num_classes + labels) * num_classes + predictions
    counts = torch.bincount(index[valid], minlength=batch * num_classes * num_classes)
    counts = counts.view(batch, num_classes, num_classes)
    return counts if per_sample else counts[0]


def compute_metrics(matrix: torch.Tensor | np.ndarray, unseen_label_ids: Sequence[int] = ()) -> dict:
    """All metrics of spec section 11 from a (K, K) confusion matrix (rows ground truth).

    Returns a dict (fractions in [0, 1], NaN where undefined):
        mean_iou, seen_mean_iou, unseen_mean_iou, harmonic_mean_iou (hIoU), overall_accuracy (pixel
        accuracy), mean_accuracy (floats); per_category_iou, per_category_accuracy (float arrays (K,));
        per_category_pixels (ground-truth pixels per class), per_category_predicted_pixels (int arrays (K,)).
        The names shared with `evaluate`'s `mean_iou` mean the same thing.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(f"the confusion matrix must be square, got shape {matrix.shape}")
    unseen = sorted({int(i) for i in unseen_label_ids})
    if any(not 0 <= i < num_classes for i in unseen):
        raise ValueError(f"unseen_label_ids {unseen} are out of range for {num_classes} classes")
    seen = [i for i in range(num_classes) if i not in set(unseen)]

    true_positives = np.diag(matrix)
    ground_truth = matrix.sum(1)
    predicted = matrix.sum(0)
    union = ground_truth + predicted - true_positives
    iou = _divide(true_positives, union)
    accuracy = _divide(true_positives, ground_truth)
    seen_miou = _nanmean(iou[seen])
    unseen_miou = _nanmean(iou[unseen])
    return {
        "mean_iou": _nanmean(iou),
        "seen_mean_iou": seen_miou,
        "unseen_mean_iou": unseen_miou,
        "harmonic_mean_iou": harmonic_mean(seen_miou, unseen_miou),
        "overall_accuracy": float(_divide(true_positives.sum(), matrix.sum())),
        "mean_accuracy": _nanmean(accuracy),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
        "per_category_pixels": ground_truth.astype(np.int64),
        "per_category_predicted_pixels": predicted.astype(np.int64),
    }


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2 S U / (S + U); NaN if either is NaN, 0 if both are 0."""
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    if seen + unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


class SegmentationMetric:
    """Streaming mIoU / mIoU(S) / mIoU(U) / hIoU / pixel accuracy over a dataset.

    Args:
        num_classes: K, the size of the vocabulary the predictions and labels use.
        unseen_label_ids: ids of the unseen classes (empty: no seen/unseen split).
        ignore_index: label of pixels that are not evaluated.
        class_names: names for the table and the JSON (defaults to "class k").
        device: where the (K, K) int64 matrix lives; put it on the accelerator's device when it is to be
            reduced across processes with NCCL.

    Example:

    ```python
    >>> metric = SegmentationMetric(3, unseen_label_ids=[2])
    >>> metric.update(predictions, labels)  # any number of times; (B, H, W) or lists of (H, W)
    >>> metric.reduce(accelerator)  # sum over processes (skip when updated from gather_for_metrics)
    >>> print(metric.table())
    ```
    """

    def __init__(
        self,
        num_classes: int,
        unseen_label_ids: Sequence[int] = (),
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        unseen = sorted({int(i) for i in unseen_label_ids})
        if any(not 0 <= i < num_classes for i in unseen):
            raise ValueError(f"unseen_label_ids {unseen} are out of range for {num_classes} classes")
        self.num_classes = num_classes
        self.unseen_label_ids = unseen
        self.ignore_index = ignore_index
        self.class_names = (
            list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
        )
        self.confusion_matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def reset(self) -> None:
        self.confusion_matrix.zero_()

    def update(self, predictions, labels) -> SegmentationMetric:
        """Add a batch: predicted ids and labels of the same shape (torch or numpy), or lists of maps."""
        matrix = confusion_matrix(predictions, labels, self.num_classes, self.ignore_index)
        return self.update_confusion_matrix(matrix)

    def update_confusion_matrix(self, matrix: torch.Tensor | np.ndarray) -> SegmentationMetric:
        """Add counts of shape (K, K), or (..., K, K) summed over the leading dimensions (per-sample
        matrices from `confusion_matrix(..., per_sample=True)` gathered over processes)."""
        matrix = torch.as_tensor(matrix)
        if matrix.shape[-2:] != (self.num_classes, self.num_classes):
            raise ValueError(
                f"expected (..., {self.num_classes}, {self.num_classes}) counts, got {tuple(matrix.shape)}"
            )
        matrix = matrix.reshape(-1, self.num_classes, self.num_classes).sum(0)
        self.confusion_matrix += matrix.to(self.confusion_matrix.device, torch.long)
        return self

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Add the counts of another metric over the same classes (e.g. another shard's)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError("can only merge metrics with the same number of classes and ignore index")
        return self.update_confusion_matrix(other.confusion_matrix)

    def reduce(self, accelerator=None) -> SegmentationMetric:
        """Sum the matrix over all processes in place (no-op in a single process).

        Uses `accelerator.reduce(..., reduction="sum")` when an `accelerate.Accelerator` is given,
        else `torch.distributed.all_reduce` when a process group is initialised. Note that a
        distributed sampler repeats a few samples to even out the last batch; update from
        `accelerator.gather_for_metrics` instead (and skip this) for exact counts.
        """
        if accelerator is not None:
            self.confusion_matrix = accelerator.reduce(self.confusion_matrix, reduction="sum")
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion_matrix)
        return self

    def compute(self) -> dict:
        """The metrics of `compute_metrics` on the counts so far."""
        return compute_metrics(self.confusion_matrix, self.unseen_label_ids)

    def table(self, results: dict | None = None) -> str:
        """A printable per-class table plus the summary; see `format_table`."""
        return format_table(results or self.compute(), self.class_names, self.unseen_label_ids)

    def to_json(self, results: dict | None = None) -> dict:
        """A JSON-ready dict; see `metrics_to_json`."""
        return metrics_to_json(results or self.compute(), self.class_names, self.unseen_label_ids)

    def save_json(self, path: str | Path, results: dict | None = None, **dataset) -> None:
        """Write `to_json()` to `path` (NaN written as null), after the `dataset` fields given (`dataset_name`,
        `dataset_type`, `dataset_split`: what the model card's results need, see `otseg_hf.hub.cards`)."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps({**dataset, **self.to_json(results)}, indent=2) + "\n")
        os.replace(partial, path)


def format_table(results: dict, class_names: Sequence[str], unseen_label_ids: Sequence[int] = ()) -> str:
    """Per-class IoU and accuracy in percent, then mIoU, mIoU(S), mIoU(U), hIoU and pixel accuracy.

    Undefined values read "no pixels" (the class never occurs in the ground truth, or in either the
    ground truth or the predictions for IoU) instead of nan; summaries without any class read "-".
    """
    unseen = set(int(i) for i in unseen_label_ids)
    width = max([len("class"), *(len(name) for name in class_names)])
    split_width = len("unseen") if unseen else len("split")
    header = f"{'class':<{width}}  {'split':<{split_width}}  {'IoU':>9}  {'Acc':>9}  {'pixels':>12}"
    lines = [header, "-" * len(header)]
    for index, name in enumerate(class_names):
        split = "unseen" if index in unseen else "seen"
        iou = _percent(results["per_category_iou"][index])
        accuracy = _percent(results["per_category_accuracy"][index])
        pixels = int(results["per_category_pixels"][index])
        lines.append(f"{name:<{width}}  {split:<{split_width}}  {iou:>9}  {accuracy:>9}  {pixels:>12}")
    lines.append("-" * len(header))
    summary = [("mIoU", results["mean_iou"])]
    if unseen:
        summary += [
            ("mIoU(S)", results["seen_mean_iou"]),
            ("mIoU(U)", results["unseen_mean_iou"]),
            ("hIoU", results["harmonic_mean_iou"]),
        ]
    summary += [("mAcc", results["mean_accuracy"]), ("pixel accuracy", results["overall_accuracy"])]
    for label, value in summary:
        text = _percent(value, missing=NO_PIXELS if label in ("mIoU", "mIoU(S)", "mIoU(U)") else "-")
        lines.append(f"{label:<{width}}  {text}")
    return "\n".join(lines)


def metrics_to_json(results: dict, class_names: Sequence[str], unseen_label_ids: Sequence[int] = ()) -> dict:
    """Plain-Python copy of `results` (fractions; NaN -> None) with a per-class list."""
    unseen = set(int(i) for i in unseen_label_ids)
    output = {
        key: _json_float(results[key])
        for key in (
            "mean_iou",
            "seen_mean_iou",
            "unseen_mean_iou",
            "harmonic_mean_iou",
            "mean_accuracy",
            "overall_accuracy",
        )
    }
    output["unseen_label_ids"] = sorted(unseen)
    output["per_class"] = [
        {
            "id": index,
            "name": name,
            "split": "unseen" if index in unseen else "seen",
            "iou": _json_float(results["per_category_iou"][index]),
            "accuracy": _json_float(results["per_category_accuracy"][index]),
            "pixels": int(results["per_category_pixels"][index]),
            "predicted_pixels": int(results["per_category_predicted_pixels"][index]),
        }
        for index, name in enumerate(class_names)
    ]
    return output


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _as_long_tensor(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        if array.dtype == np.uint16 or array.dtype == np.uint32:  # torch has no unsigned 16/32-bit ops
            array = array.astype(np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"predictions and labels must hold integer class ids, got dtype {tensor.dtype}")
    return tensor.long()


def _some_values(values: torch.Tensor, limit: int = 10) -> list[int]:
    return torch.unique(values)[:limit].tolist()


def _divide(numerator, denominator):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _percent(value: float, missing: str = NO_PIXELS) -> str:
    return missing if math.isnan(float(value)) else f"{100 * float(value):.2f}"


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


__all__ = [
    "EVALUATE_MODULE_PATH",
    "NO_PIXELS",
    "SegmentationMetric",
    "compute_metrics",
    "confusion_matrix",
    "format_table",
    "harmonic_mean",
    "metrics_to_json",
]
