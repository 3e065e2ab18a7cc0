"""Checks of a labelled split before any work is done with it: rows, columns and label ids.

Training and evaluation call these before the first step, so a bad evaluation split is found before hours of
training, not after them.
"""

from __future__ import annotations

import numpy as np

from ..model.image_transforms import check_label_ids, read_label, reduce_labels


def split_size(data) -> int | None:
    """The number of rows, or None for a streamed (iterable) dataset."""
    try:
        return len(data)
    except TypeError:
        return None


def check_columns(data, columns, what: str) -> None:
    """`ValueError` naming the missing columns (datasets with `column_names` only)."""
    names = getattr(data, "column_names", None)
    if names is None:
        return
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(
            f"{what} has no column {missing}; its columns are {list(names)} "
            "(choose them with --image-column / --label-column)"
        )


def check_not_empty(data, what: str, minimum: int = 1, unit: str = "row") -> int | None:
    """`ValueError` when `data` has fewer than `minimum` rows; returns the size (None when streamed)."""
    size = split_size(data)
    if size is not None and size < minimum:
        need = f"at least {minimum} {unit}s" if minimum > 1 else "rows"
        raise ValueError(f"{what} has {size} rows; it needs {need}")
    return size


def check_label_column(
    data,
    label_column: str,
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    what: str = "the split",
) -> None:
    """Read the label of every row (only the label column is decoded where the dataset allows it) and raise a
    `ValueError` naming the first row whose ids are neither 0..K-1 nor `ignore_index`."""
    labels = data.select_columns([label_column]) if hasattr(data, "select_columns") else data
    for index, row in enumerate(labels):
        label = read_label(row[label_column])
        if reduce_zero_label:
            label = reduce_labels(label, ignore_index)
        if label.ndim != 2:
            raise ValueError(f"{what}, row {index}: labels must be (height, width), got {label.shape}")
        check_label_ids(np.asarray(label), num_classes, ignore_index, where=f"{what}, row {index}")


def check_training_splits(
    train_data, train_set, eval_data, args, num_classes: int, ignore_index: int, num_processes: int, name: str
) -> None:
    """training/train.py's splits before the first step: the training split has its columns and at least one
    batch on every process, and its first row goes through the augmentations; the evaluation split (None: no
    evaluation) has its columns, rows, and only valid label ids in every row. `args` gives the split and column
    names, the batch size and `reduce_labels`; `name` names the dataset in the messages."""
    columns = (args.image_column, args.label_column)
    what = f"the training split {args.train_split!r} of {name}"
    check_columns(train_data, columns, what)
    size = check_not_empty(train_data, what)
    batch = args.per_device_batch_size * num_processes
    if size is not None and size < batch:
        raise ValueError(
            f"{what} has {size} rows, fewer than one batch of {args.per_device_batch_size} per device x "
            f"{num_processes} processes: lower --per-device-batch-size"
        )
    if size is not None:
        train_set[0]  # the first row through the augmentations: columns, image mode, label ids
    if eval_data is None:
        return
    what = f"the evaluation split {args.eval_split!r} of {name}"
    check_columns(eval_data, columns, what)
    check_not_empty(eval_data, what)
    check_label_column(eval_data, args.label_column, num_classes, ignore_index, args.reduce_labels, what=what)


__all__ = ["check_columns", "check_label_column", "check_not_empty", "check_training_splits", "split_size"]
