"""Training augmentations of the reference (spec section 9) and label helpers, in numpy/PIL.

Each transform is a small callable `transform(image, label, rng) -> (image, label)` that changes
image and label together: `image` is (H, W, 3) (uint8 until `Normalize`, float32 after), `label`
(H, W) integer class ids. `rng` is a `numpy.random.Generator`; when it is `None` a fresh one is
seeded from torch's generator, so `accelerate.utils.set_seed` and the DataLoader's per-worker
seeding make runs reproducible.

The pipeline of the reference (mmseg), built by `training_transforms`:

    RandomRescale((2048, 512), ratio 0.5-2.0) -> RandomCrop(512, cat_max_ratio 0.75)
    -> RandomHorizontalFlip(0.5) -> PhotoMetricDistortion -> Normalize(ImageNet) -> Pad(512; 0 / 255)

Reading, rescaling, resizing (images bilinear and labels nearest, as the reference's cv2), normalising,
padding and label checks are the primitives of `otseg_hf.model.image_transforms`, which the image processor
shares: a label map is resized alike in training and at test time. Labels are padded with the ignore index.
Difference from mmseg/OpenCV: the HSV round trip of the photometric distortion follows OpenCV's 8-bit
formulas in floating point (within one grey level of OpenCV), as does the bilinear resize.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..model.image_transforms import (
    check_label_ids,
    normalize,
    pad,
    read_image,
    read_label,
    reduce_labels,
    rescale_size,
    resize_image,
    resize_label,
)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None:
        return rng
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def to_arrays(image, label) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label (PIL images, arrays or tensors; read as the image processor reads them) ->
    RGB uint8 (H, W, 3) image (16-bit and float images rounded) and int64 (H, W) label; checks the sizes agree."""
    image, label = read_image(image), read_label(label)
    if image.dtype != np.uint8:
        image = np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    return image, label


# ----------------------------------------------------------------------------------------------------
# label transforms
# ----------------------------------------------------------------------------------------------------
class ReduceLabels:
    """`reduce_labels` as a transform."""

    def __init__(self, ignore_index: int = 255):
        self.ignore_index = ignore_index

    def __call__(self, image, label, rng=None):
        return image, reduce_labels(label, self.ignore_index)


class CheckLabels:
    """`check_label_ids` as a transform."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __call__(self, image, label, rng=None):
        return image, check_label_ids(label, self.num_classes, self.ignore_index)


# ----------------------------------------------------------------------------------------------------
# augmentations
# ----------------------------------------------------------------------------------------------------
class RandomRescale:
    """mmseg's `Resize(img_scale=scale, ratio_range=ratio_range, keep_ratio=True)`.

    A ratio r is drawn uniformly from `ratio_range`; the target scale is (int(scale[0] r), int(scale[1] r))
    and the image is rescaled keeping its aspect ratio to fit it (`rescale_size`). Image bilinear,
    label nearest (`resize_image`, `resize_label`, as the image processor).
    """

    def __init__(self, scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0)):
        self.scale = scale
        self.ratio_range = ratio_range

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        low, high = self.ratio_range
        ratio = rng.random() * (high - low) + low
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = rescale_size(*label.shape, min(target), max(target))
        return resize_image(image, size), resize_label(label, size)


class RandomCrop:
    """mmseg's `RandomCrop(crop_size, cat_max_ratio)`.

    A crop offset is drawn uniformly; while the crop's most frequent class (ignoring `ignore_index`)
    covers `cat_max_ratio` or more of its labelled pixels, or it holds fewer than two classes, a new
    offset is drawn, `max_tries` times at most (the last draw is then kept unchecked, as in mmseg).
    Images smaller than the crop give a smaller crop (`Pad` fills it up).
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_tries: int = 10,
    ):
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def random_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of a uniformly drawn crop."""
        crop_height, crop_width = self.crop_size
        top = int(rng.integers(0, max(height - crop_height, 0) + 1))
        left = int(rng.integers(0, max(width - crop_width, 0) + 1))
        return top, min(top + crop_height, height), left, min(left + crop_width, width)

    def accepts(self, label: np.ndarray) -> bool:
        """The cat-max-ratio rule: at least two classes, the largest under `cat_max_ratio` of the labelled pixels."""
        values, counts = np.unique(label, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        box = self.random_box(*label.shape, rng)
        if self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                top, bottom, left, right = box
                if self.accepts(label[top:bottom, left:right]):
                    break
                box = self.random_box(*label.shape, rng)
        top, bottom, left, right = box
        return image[top:bottom, left:right], label[top:bottom, left:right]


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability `prob`."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, image, label, rng=None):
        if _rng(rng).random() < self.prob:
            return image[:, ::-1], label[:, ::-1]
        return image, label


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float HSV in OpenCV's 8-bit ranges: H in [0, 180), S and V in [0, 255] (unrounded)."""
    rgb = image.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    delta = value - rgb.min(-1)
    safe_delta = np.where(delta > 0, delta, 1)
    saturation = np.where(value > 0, 255 * delta / np.where(value > 0, value, 1), 0)
    hue = np.where(
        value == red,
        60 * (green - blue) / safe_delta,
        np.where(value == green, 120 + 60 * (blue - red) / safe_delta, 240 + 60 * (red - green) / safe_delta),
    )
    hue = np.where(delta > 0, hue % 360, 0) / 2
    return np.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv` (H in [0, 180), S, V in [0, 255]) -> uint8 RGB, rounded."""
    hue = (hsv[..., 0] * 2 % 360) / 60
    saturation, value = hsv[..., 1] / 255, hsv[..., 2]
    sector = np.floor(hue).astype(np.int64) % 6
    fraction = hue - np.floor(hue)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    # (R, G, B) per sector 0..5
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    rgb = np.zeros(hsv.shape, dtype=np.float64)
    for index, channels in enumerate(choices):
        rgb[sector == index] = np.stack(channels, -1)[sector == index]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


class PhotoMetricDistortion:
    """mmseg's `PhotoMetricDistortion`, each step applied with probability 1/2:
    brightness (+ uniform(-delta, delta)), contrast (x uniform(range); before or after the colour
    steps, with equal probability), saturation (x uniform(range) on S), hue (+ integer in
    [-hue_delta, hue_delta) on OpenCV's 0..180 hue). Values are clipped and truncated to uint8 after
    each step, as in mmseg. The label is unchanged."""

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        image = np.asarray(image, dtype=np.uint8)
        if rng.integers(2):  # brightness
            image = self._convert(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(rng.integers(2))
        if contrast_first and rng.integers(2):
            image = self._convert(image, alpha=rng.uniform(*self.contrast_range))
        if rng.integers(2):  # saturation
            hsv = np.rint(rgb_to_hsv(image))
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            image = hsv_to_rgb(hsv)
        if rng.integers(2) and self.hue_delta > 0:  # hue
            hsv = np.rint(rgb_to_hsv(image))
            hsv[..., 0] = (hsv[..., 0] + rng.integers(-self.hue_delta, self.hue_delta)) % 180
            image = hsv_to_rgb(hsv)
        if not contrast_first and rng.integers(2):
            image = self._convert(image, alpha=rng.uniform(*self.contrast_range))
        return image, label


class Normalize:
    """uint8 RGB -> float32 (x / 255 - mean) / std; ImageNet's statistics by default (spec section 9)."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD
    ):
        self.mean = mean
        self.std = std

    def __call__(self, image, label, rng=None):
        return normalize(image, self.mean, self.std), label


class Pad:
    """Pad at the bottom and right to at least `size`: image with `image_value`, label with `label_value`."""

    def __init__(self, size: int | tuple[int, int], image_value: float = 0.0, label_value: int = 255):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.image_value = image_value
        self.label_value = label_value

    def __call__(self, image, label, rng=None):
        height, width = max(self.size[0], label.shape[0]), max(self.size[1], label.shape[1])
        return pad(image, height, width, self.image_value), pad(label, height, width, self.label_value)


class ToTensor:
    """(H, W, 3) image -> float32 tensor (3, H, W); label -> int64 tensor (H, W)."""

    def __call__(self, image, label, rng=None):
        image = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


class Compose:
    """Apply transforms in order, sharing one generator; PIL inputs are converted with `to_arrays`."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        image, label = to_arrays(image, label)
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label


def training_transforms(
    crop_size: int | tuple[int, int] = 512,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    do_reduce_labels: bool = False,
    num_classes: int | None = None,
    photometric_distortion: bool = True,
) -> Compose:
    """The reference's training pipeline (spec section 9), ending in tensors.

    Args:
        crop_size: 512 (480 for PASCAL Context).
        do_reduce_labels: apply `ReduceLabels` first (raw VOC / Context / ADE20K labels).
        num_classes: when given, check the label ids (after reducing) with `CheckLabels`.
        photometric_distortion: keep the reference's `PhotoMetricDistortion` (False: a world whose classes are
            exact colours, where a hue shift would change the class).
    """
    steps = [ReduceLabels(ignore_index)] if do_reduce_labels else []
    if num_classes is not None:
        steps.append(CheckLabels(num_classes, ignore_index))
    steps += [
        RandomRescale(scale, ratio_range),
        RandomCrop(crop_size, cat_max_ratio, ignore_index),
        RandomHorizontalFlip(0.5),
        *([PhotoMetricDistortion()] if photometric_distortion else []),
        Normalize(mean, std),
        Pad(crop_size, 0.0, ignore_index),
        ToTensor(),
    ]
    return Compose(steps)


__all__ = [
    "CheckLabels",
    "Compose",
    "Normalize",
    "Pad",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRescale",
    "ReduceLabels",
    "ToTensor",
    "check_label_ids",
    "hsv_to_rgb",
    "reduce_labels",
    "rescale_size",
    "resize_image",
    "resize_label",
    "rgb_to_hsv",
    "to_arrays",
    "training_transforms",
]
