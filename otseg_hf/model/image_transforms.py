"""The image and label primitives that the image processor, the training transforms and evaluation share:
reading, mmcv-style rescaling, resizing, normalising, padding, label reduction and label validation.

Resizing follows the reference (spec section 9): mmcv's `imrescale` with its default cv2 backend, so images
are bilinear as `cv2.INTER_LINEAR` (pixel-centre coordinates, clamped at the borders, no low-pass filter when
shrinking, unlike PIL's BILINEAR) and label maps nearest as `cv2.INTER_NEAREST` (source index
floor(i * src / dst)). The bilinear weights are computed in float64 and uint8 results rounded half up; cv2
uses 11-bit fixed-point weights, so a uint8 pixel may differ from OpenCV's by one grey level.

NumPy and PIL only, plus torch for the label checks of tensors.
"""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

EXIF_ORIENTATION = 0x0112
LABEL_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------
def exif_upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image transposed upright when it carries an EXIF orientation, else the image itself."""
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return PIL.ImageOps.exif_transpose(image)
    return image


def read_image(image, channels_first: bool = False) -> np.ndarray:
    """One image -> (H, W, 3) array: uint8 for 8-bit inputs, float32 in 0..255 otherwise.

    PIL images of any mode (EXIF orientation applied; alpha dropped; grey repeated; 16-bit scaled to 0..255),
    or (H, W), (H, W, C), (C, H, W) arrays with C in 1, 3, 4. When both ends could be channels the array is
    read channels-last, or channels-first with `channels_first` (torch's layout)."""
    if isinstance(image, PIL.Image.Image):
        return _pil_to_rgb(exif_upright(image))
    if isinstance(image, torch.Tensor):
        image, channels_first = image.detach().cpu().numpy(), True
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"images must be PIL images, NumPy arrays or torch tensors, got {type(image).__name__}"
        )
    array = _channels_last(image, prefer_first=channels_first)
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"images must be at least 1x1, got an array of shape {image.shape}")
    array = _to_255_range(array)
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def read_label(label) -> np.ndarray:
    """One segmentation map of class indices -> int64 (H, W).

    2-D arrays or tensors (a single channel dimension is dropped; floats must be integral), or PIL images of
    mode L, P (palette PNGs read as indices), I, I;16 or 1, EXIF orientation applied. Colour maps are refused."""
    if isinstance(label, PIL.Image.Image):
        label = exif_upright(label)
        if label.mode not in LABEL_MODES:
            raise ValueError(
                f"segmentation maps must hold class indices (PIL mode L, P, I or I;16), got mode {label.mode}: "
                "convert colour-coded maps to indices first"
            )
        label = np.asarray(label)
    elif isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if not isinstance(label, np.ndarray):
        raise ValueError(
            f"segmentation maps must be PIL images, arrays or tensors, got {type(label).__name__}"
        )
    if label.ndim == 3 and 1 in (label.shape[0], label.shape[2]):
        label = label[0] if label.shape[0] == 1 else label[:, :, 0]
    if label.ndim != 2:
        raise ValueError(f"a segmentation map must be 2-D (height, width), got shape {label.shape}")
    if np.issubdtype(label.dtype, np.floating):
        if not np.array_equal(label, np.round(label)):
            raise ValueError("segmentation maps must hold integer class indices, got fractional values")
    elif not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise ValueError(f"unsupported segmentation map dtype {label.dtype}")
    return label.astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------------
def reduce_labels(label, ignore_index: int = 255) -> np.ndarray:
    """transformers' `do_reduce_labels`, for datasets whose 0 is a background that is not a class (VOC,
    Context, ADE20K): 0 -> ignore_index, k -> k - 1, ignore_index stays. Returns int64."""
    label = np.asarray(label).astype(np.int64)
    reduced = label - 1
    reduced[(label == 0) | (label == ignore_index)] = ignore_index
    return reduced


def invalid_label_ids(labels, num_classes: int, ignore_index: int = 255, limit: int = 10) -> list[int]:
    """The (at most `limit`, smallest first) ids of `labels` (array or tensor) that are neither 0..K-1 nor
    `ignore_index`."""
    if isinstance(labels, torch.Tensor):
        bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
        return torch.unique(labels[bad])[:limit].tolist() if bool(bad.any()) else []
    values = np.unique(np.asarray(labels))
    return values[((values < 0) | (values >= num_classes)) & (values != ignore_index)][:limit].tolist()


def check_label_ids(labels, num_classes: int, ignore_index: int = 255, where: str = ""):
    """Return `labels` (array or tensor); raise `ValueError` naming the ids that are neither 0..K-1 nor
    `ignore_index` (`where`, e.g. a file name or a row, is named too)."""
    bad = invalid_label_ids(labels, num_classes, ignore_index)
    if bad:
        place = f" in {where}" if where else ""
        raise ValueError(
            f"label ids {bad}{place} are outside the {num_classes} classes (0..{num_classes - 1}) "
            f"and are not the ignore index {ignore_index}; check the class list, or reduce the labels if 0 "
            "is a background that is not a class"
        )
    return labels


# ----------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------
def rescale_size(
    height: int, width: int, shortest_edge: int, longest_edge: int | None = None
) -> tuple[int, int]:
    """mmcv's keep-ratio `rescale_size`: scale = shortest_edge / short side, or longest_edge / long side when
    that is smaller; each side becomes int(side * scale + 0.5), at least 1. Returns (height, width)."""
    scale = shortest_edge / min(height, width)
    if longest_edge:
        scale = min(scale, longest_edge / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) map to `size` as cv2.INTER_NEAREST: output pixel i takes source
    pixel floor(i * src / dst), in exact integer arithmetic. Only existing ids appear."""
    height, width = label.shape[:2]
    new_height, new_width = size
    rows = np.arange(new_height) * height // new_height
    cols = np.arange(new_width) * width // new_width
    return label[rows[:, None], cols[None, :]]


def _linear_taps(new: int, old: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.INTER_LINEAR's source taps along one axis: x = (i + 1/2) * old / new - 1/2, x0 = floor(x), weight
    x - x0 of x0 + 1; left of the first pixel the first is taken, right of the last the last."""
    position = (np.arange(new, dtype=np.float64) + 0.5) * old / new - 0.5
    first = np.floor(position).astype(np.int64)
    weight = position - first
    weight[first < 0] = 0
    first = np.clip(first, 0, old - 1)
    weight[first >= old - 1] = 0
    return first, np.minimum(first + 1, old - 1), weight


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) image to `size` (height, width) as cv2.INTER_LINEAR (no antialiasing).

    uint8 in, uint8 out (rounded half up); other dtypes give float32."""
    height, width = image.shape[:2]
    if (height, width) == tuple(size):
        return image
    top, bottom, dy = _linear_taps(size[0], height)
    left, right, dx = _linear_taps(size[1], width)
    values = image.astype(np.float64)
    dy, dx = dy[:, None, None], dx[None, :, None]
    upper = values[top][:, left] * (1 - dx) + values[top][:, right] * dx  # (h, w, C)
    lower = values[bottom][:, left] * (1 - dx) + values[bottom][:, right] * dx
    resized = upper * (1 - dy) + lower * dy
    if image.dtype == np.uint8:
        return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)  # rounded half up, as cv2
    return resized.astype(np.float32)


def normalize(image: np.ndarray, mean, std, rescale_factor: float | None = 1 / 255) -> np.ndarray:
    """float32 (image * rescale_factor - mean) / std over the last (channel) axis; `rescale_factor=None` skips
    the rescale, `mean=None` the normalisation."""
    values = np.asarray(image).astype(np.float32)
    if rescale_factor is not None:
        values = values * np.float32(rescale_factor)
    if mean is not None:
        values = (values - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return values


def pad(array: np.ndarray, height: int, width: int, value) -> np.ndarray:
    """Pad the first two (height, width) dims at the bottom and right to `height` x `width` with `value`."""
    pad_height, pad_width = height - array.shape[0], width - array.shape[1]
    if pad_height < 0 or pad_width < 0:
        raise ValueError(f"cannot pad an array of shape {array.shape} to {height}x{width}: it is larger")
    if pad_height == 0 and pad_width == 0:
        return array
    widths = [(0, pad_height), (0, pad_width)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="constant", constant_values=value)


# ----------------------------------------------------------------------------------------------------
# helpers of read_image
# ----------------------------------------------------------------------------------------------------
def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    if image.width < 1 or image.height < 1:
        raise ValueError(f"images must be at least 1x1, got {image.width}x{image.height}")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image)
        if image.mode.startswith("I;16"):
            array = array.astype(np.uint16)
        return np.ascontiguousarray(np.repeat(_to_255_range(array)[:, :, None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _channels_last(array: np.ndarray, prefer_first: bool = False) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 -> (H, W, C)."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array must have 2 or 3 dimensions, got shape {array.shape}")
    first, last = array.shape[0] in (1, 3, 4), array.shape[2] in (1, 3, 4)
    if first and (prefer_first or not last):
        return array.transpose(1, 2, 0)
    if last:
        return array
    raise ValueError(
        f"cannot find the channel dimension (1, 3 or 4 channels) of an image of shape {array.shape}"
    )


def _to_255_range(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) * np.float32(255.0 / 65535.0)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"integer images must hold values in 0..65535, got {array.min()}..{array.max()}")
        if array.size and array.max() > 255:  # 16-bit data in a wider integer type (PIL mode I)
            return array.astype(np.float32) * np.float32(255.0 / 65535.0)
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("the image holds NaN or infinite values: check how it was made")
        return array.astype(np.float32)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def check_float_range(image, do_rescale: bool, where: str = "the image") -> None:
    """For a float image (array or tensor) before reading: finite values in 0..255, and a warning when all of
    them lie in 0..1 while `do_rescale` divides by 255 again.

    The warning follows transformers' image processors, which warn about "already rescaled images" and rescale
    anyway: such an image comes out near black, so pass `do_rescale=False` (or values in 0..255). Values below
    0 or above 255 (e.g. already-normalised pixels) raise a `ValueError`: normalised pixel values go to the
    model directly, not through the image processor."""
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            return
        array = image.detach().cpu().float().numpy()
    elif isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        array = image
    else:
        return
    if array.size == 0:
        return
    if not np.isfinite(array).all():
        raise ValueError(f"{where} holds NaN or infinite values: check how it was made")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"{where} is a float image with values in {low:.3g}..{high:.3g}; float images must hold 0..255 (or "
            "0..1 with do_rescale=False). Already normalised pixel values go to the model directly"
        )
    if do_rescale and high <= 1.0 and high > 0:
        warnings.warn(
            f"{where} is a float image with values in 0..1 but do_rescale=True divides it by 255 again, which "
            "makes it near black: pass do_rescale=False, or an image in 0..255",
            UserWarning,
            stacklevel=3,
        )


__all__ = [
    "check_float_range",
    "check_label_ids",
    "exif_upright",
    "invalid_label_ids",
    "normalize",
    "pad",
    "read_image",
    "read_label",
    "reduce_labels",
    "rescale_size",
    "resize_image",
    "resize_label",
]
