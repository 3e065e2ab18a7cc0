"""Evaluate a segmentation model on a labelled dataset (spec section 11), on one or many processes.

Every image goes through the model's test path: the image processor (short side to the test size, no
padding), `sliding_window_inference`, `post_process_semantic_segmentation` (the seen-class penalty of
inductive models) back to the label's size, and a per-image confusion matrix. The matrices are gathered
with `accelerator.gather_for_metrics` (which drops the samples a distributed sampler repeats) and summed
into a `SegmentationMetric`: memory is one (K, K) matrix, whatever the dataset size, and the numbers do not
depend on the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..model.image_processing_otseg import OTSegImageProcessor, penalised_label_ids
from ..model.image_transforms import check_label_ids, read_label, reduce_labels
from ..model.sliding_window import sliding_window_inference
from .metrics import SegmentationMetric, confusion_matrix


class EvaluationSet(Dataset):
    """(pixel_values (3, h, w), label (H, W)) pairs of a `datasets` dataset (or any sequence of dicts).

    Args:
        dataset: rows with an image column and a label column (PIL images, arrays or tensors).
        image_processor: the test preprocessing; called with `do_pad=False`.
        image_column, label_column: the column names.
        do_reduce_labels: the labels use 0 for a background that is not a class (raw VOC / Context / ADE20K).
        num_classes: K; label ids other than 0..K-1 and `ignore_index` raise a `ValueError` naming the row.
        ignore_index: label of pixels without a class.
    """

    def __init__(
        self,
        dataset,
        image_processor: OTSegImageProcessor,
        image_column: str = "image",
        label_column: str = "label",
        do_reduce_labels: bool = False,
        num_classes: int | None = None,
        ignore_index: int = 255,
    ):
        columns = getattr(dataset, "column_names", None)
        if columns is not None:
            missing = [c for c in (image_column, label_column) if c not in columns]
            if missing:
                raise ValueError(f"the dataset has no column {missing}; its columns are {columns}")
        self.dataset = dataset
        self.image_processor = image_processor
        self.image_column, self.label_column = image_column, label_column
        self.do_reduce_labels = do_reduce_labels
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.dataset[index]
        image = self.image_processor.to_rgb(row[self.image_column])
        label = read_label(row[self.label_column])
        if self.do_reduce_labels:
            label = reduce_labels(label, self.ignore_index)
        if image.shape[:2] != label.shape:
            raise ValueError(f"row {index}: the label is {label.shape} but the image is {image.shape[:2]}")
        if self.num_classes is not None:
            try:
                check_label_ids(label, self.num_classes, self.ignore_index, where=f"row {index}")
            except ValueError as error:
                if self.do_reduce_labels:
                    raise
                raise ValueError(f"{error} (pass --reduce-labels)") from None
        pixel_values = self.image_processor(images=image, do_pad=False, return_tensors="pt")["pixel_values"][
            0
        ]
        return pixel_values, torch.from_numpy(label)


@torch.no_grad()
def evaluate_model(
    model,
    dataset: Dataset,
    accelerator=None,
    unseen_label_ids: Sequence[int] | None = None,
    window_size: int | None = None,
    stride: int | None = None,
    window_batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = False,
) -> SegmentationMetric:
    """Confusion-matrix metrics of `model` on an `EvaluationSet`.

    Args:
        model: an OTSeg or ZegOT model whose vocabulary (`config.id2label`) is the dataset's classes.
        dataset: an [`EvaluationSet`] (or any dataset of (pixel_values, label) pairs).
        accelerator: an `accelerate.Accelerator`; the dataset is split across its processes. `None`: this
            process evaluates everything.
        unseen_label_ids: classes reported as unseen; defaults to the model's (`config.unseen_label_ids`).
        window_size, stride, window_batch_size: see `sliding_window_inference`.
        num_workers: DataLoader workers.
        progress: show a progress bar on the main process.

    Returns:
        A [`SegmentationMetric`] with the summed counts; `.compute()`, `.table()`, `.save_json()`.
    """
    config = model.config
    num_classes = len(config.id2label)
    if unseen_label_ids is None:
        unseen_label_ids = config.unseen_label_ids if config.seen_label_ids is not None else ()
    metric = SegmentationMetric(
        num_classes,
        unseen_label_ids,
        config.ignore_index,
        class_names=[config.id2label[i] for i in range(num_classes)],
    )
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers, collate_fn=lambda items: items[0])
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader, device_placement=False)
    device = next(model.parameters()).device
    image_processor = getattr(dataset, "image_processor", None) or OTSegImageProcessor()
    was_training = model.training
    model.eval()
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    if show:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="evaluating", total=len(loader))
    for pixel_values, label in loader:
        outputs = sliding_window_inference(
            model, pixel_values[None].to(device), window_size, stride, window_batch_size
        )
        prediction = image_processor.post_process_semantic_segmentation(
            outputs,
            target_sizes=[tuple(label.shape)],
            seen_label_ids=penalised_label_ids(config),
            seen_class_penalty=config.seen_class_penalty,
        )[0]
        counts = confusion_matrix(prediction[None].cpu(), label[None], num_classes, config.ignore_index, True)
        if accelerator is not None:
            counts = accelerator.gather_for_metrics(counts.to(accelerator.device))
        metric.update_confusion_matrix(counts.cpu())
    model.train(was_training)
    return metric


__all__ = ["EvaluationSet", "evaluate_model", "penalised_label_ids"]
