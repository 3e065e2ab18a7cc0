"""Evaluation: the field's metrics (mIoU of seen and unseen classes, hIoU) and sliding-window evaluation of a model
over a dataset."""

from .evaluate import EvaluationSet, evaluate_model
from .metrics import EVALUATE_MODULE_PATH, SegmentationMetric, compute_metrics, harmonic_mean

__all__ = [
    "EVALUATE_MODULE_PATH",
    "EvaluationSet",
    "SegmentationMetric",
    "compute_metrics",
    "evaluate_model",
    "harmonic_mean",
]
