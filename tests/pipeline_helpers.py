"""Hand references shared by the OTSeg and ZegOT pipeline tests."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
PENALTY = 0.3  # larger than the defaults, so that the calibration visibly changes the tiny models' output


def upsampled_probabilities(model, image: np.ndarray, **forward_kwargs) -> torch.Tensor:
    """(K, H, W) sigmoid of the model's logits upsampled to an image the size of one window, computed by hand."""
    pixel_values = torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        logits = model(pixel_values, **forward_kwargs).logits
    return F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False).sigmoid()[0]


def calibrated_argmax(probabilities: torch.Tensor, seen: list[int]) -> np.ndarray:
    probabilities = probabilities.clone()
    probabilities[seen] -= PENALTY
    return probabilities.argmax(0).numpy()


def label_map(segments: list[dict], labels: list[str]) -> np.ndarray:
    """The pipeline's binary masks as one map of indices into `labels`; checks they tile the image."""
    result = np.full(np.asarray(segments[0]["mask"]).shape, -1)
    for segment in segments:
        assert set(segment) == {"score", "label", "mask"} and segment["mask"].mode == "L"
        mask = np.asarray(segment["mask"])
        assert set(np.unique(mask)) <= {0, 255}
        assert (result[mask > 0] == -1).all(), "masks overlap"
        result[mask > 0] = labels.index(segment["label"])
    assert (result >= 0).all(), "masks do not cover the image"
    return result


def summary(segments: list[dict]) -> list[dict]:
    """Labels, scores and mask hashes: comparable across processes."""
    return [
        {
            "label": s["label"],
            "score": s["score"],
            "mask": hashlib.sha1(np.asarray(s["mask"]).tobytes()).hexdigest(),
        }
        for s in segments
    ]
