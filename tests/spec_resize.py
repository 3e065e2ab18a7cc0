"""Literal transcriptions of the reference's resizing rules (spec section 9), pixel by pixel in plain Python:
the independent references the preprocessing tests compare against."""

from __future__ import annotations

import math

import numpy as np


def spec_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.INTER_NEAREST: output pixel (i, j) takes source pixel (floor(i * H / height), floor(j * W / width))."""
    source_height, source_width = label.shape
    out = np.empty((height, width), dtype=label.dtype)
    for i in range(height):
        for j in range(width):
            out[i, j] = label[math.floor(i * source_height / height), math.floor(j * source_width / width)]
    return out


def spec_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.INTER_LINEAR on a uint8 (H, W, C) image: source coordinate x = (i + 1/2) * src / dst - 1/2; below
    the first pixel it is the first pixel, beyond the last the last; no low-pass filter; rounded to uint8."""
    source_height, source_width = image.shape[:2]

    def taps(index, new, old):
        x = (index + 0.5) * old / new - 0.5
        x0 = math.floor(x)
        weight = x - x0
        if x0 < 0:
            x0, weight = 0, 0.0
        if x0 >= old - 1:
            x0, weight = old - 1, 0.0
        return x0, min(x0 + 1, old - 1), weight

    out = np.empty((height, width, image.shape[2]), dtype=np.uint8)
    for i in range(height):
        y0, y1, wy = taps(i, height, source_height)
        for j in range(width):
            x0, x1, wx = taps(j, width, source_width)
            for c in range(image.shape[2]):
                value = (1 - wy) * (
                    (1 - wx) * float(image[y0, x0, c]) + wx * float(image[y0, x1, c])
                ) + wy * ((1 - wx) * float(image[y1, x0, c]) + wx * float(image[y1, x1, c]))
                out[i, j, c] = min(255, max(0, math.floor(value + 0.5)))
    return out
