"""Data: the benchmark datasets' class names and zero-shot splits, the training transforms, and dataset loading."""

from .loading import load_dataset_split
from .splits import DATASETS, DatasetSplit

__all__ = ["DATASETS", "DatasetSplit", "load_dataset_split"]
