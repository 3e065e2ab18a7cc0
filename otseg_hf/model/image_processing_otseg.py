"""Image processor for OTSeg: images (and segmentation maps) in, `pixel_values` (and `labels`) out; model
outputs in, label maps out. NumPy/PIL only (no torchvision); torch only for the post-processing.

Resizing follows the reference's test scale (spec section 7): the short side goes to `size["shortest_edge"]`,
the long side in proportion (`int(x * scale + 0.5)`, as mmcv rounds), optionally capped by
`size["longest_edge"]`; images bilinear and maps nearest as the reference's cv2 (spec section 9). The
primitives are those of `image_transforms`, which the training transforms share. Normalisation is ImageNet's
(spec section 9), not CLIP's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

from .image_transforms import (
    check_float_range,
    normalize,
    pad,
    read_image,
    read_label,
    reduce_labels,
    rescale_size,
    resize_image,
    resize_label,
)

UNLABELLED = -1  # label-map value of pixels below the post-processing threshold


class OTSegImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`, *optional*, defaults to `self.do_reduce_labels`):
        For datasets whose label 0 is a background that is not a class: 0 becomes `ignore_index`, every other
        label is reduced by 1, and `ignore_index` stays `ignore_index`.
    size_divisor (`int`, *optional*, defaults to `self.size_divisor`):
        With `do_pad`, images are padded (bottom and right) to a multiple of it: the model's patch size.
    ignore_index (`int`, *optional*, defaults to `self.ignore_index`):
        Label of pixels without a class: the padding value of `labels`.
    """

    do_reduce_labels: bool
    size_divisor: int
    ignore_index: int


class OTSegImageProcessor(PilBackend):
    r"""
    Constructs an OTSeg image processor (NumPy/PIL backend).

    Inputs may be PIL images in any mode (RGB, RGBA, LA, L, P, 1, I;16, I, F, CMYK, ...), NumPy arrays or torch
    tensors (`(H, W)`, `(H, W, C)` or `(C, H, W)` with C in 1, 3, 4; where both ends could be channels, arrays
    are read channels-last and tensors channels-first; uint8, uint16, bool or float in 0..255), or lists of
    them. Every image becomes RGB: alpha is dropped (as `PIL.Image.convert("RGB")`, OpenCV's `imread`
    and transformers' `load_image` do), grey levels are repeated, 16-bit values are scaled to 0..255. PIL images
    carrying an EXIF orientation are transposed upright first (segmentation maps too, if they carry one).

    Float images must hold finite values in 0..255. Like transformers' image processors, a float image whose values
    all lie in 0..1 gets a warning when `do_rescale=True` (it would be divided by 255 once more and come out near
    black): pass `do_rescale=False` for such images. NaN / infinite values, or values outside 0..255 (pixels that
    are already normalised go to the model directly), raise a `ValueError`.

    Segmentation maps hold class indices: 2-D arrays, or PIL images of mode L, P (palette PNGs such as VOC's
    `SegmentationClass`, read as indices, never as colours), I or I;16. Colour maps are refused.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize.
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 512}`):
            `{"shortest_edge": s}`: the short side becomes s, the long side follows the aspect ratio;
            `{"shortest_edge": s, "longest_edge": l}`: the same, scaled down further if the long side would exceed
            l (the reference's `img_scale=(2048, 512)` is `{"shortest_edge": 512, "longest_edge": 2048}`);
            `{"height": h, "width": w}`: exactly that size.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`):
            Filter for images: `BILINEAR` is cv2's `INTER_LINEAR` as the reference resizes (no antialiasing,
            see `image_transforms.resize_image`), any other is PIL's filter. Segmentation maps are always
            resized nearest as cv2's `INTER_NEAREST` (`image_transforms.resize_label`).
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply values by `rescale_factor` (0..255 -> 0..1).
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            The rescale factor.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` and `image_std`.
        image_mean (`list[float]`, *optional*, defaults to ImageNet's mean):
            Per-channel mean (spec section 9: ImageNet's, not CLIP's).
        image_std (`list[float]`, *optional*, defaults to ImageNet's std):
            Per-channel standard deviation.
        do_pad (`bool`, *optional*, defaults to `True`):
            Pad images (with 0, after normalisation) and labels (with `ignore_index`) at the bottom and right to a
            multiple of `size_divisor` and, in a batch, to the largest image, so that they stack and the model
            accepts them. Post-processing of padded inputs includes the padding; `sliding_window_inference` and
            the pipelines process unpadded images.
        size_divisor (`int`, *optional*, defaults to 16):
            The model's patch size.
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            See [`OTSegImageProcessorKwargs`].
        ignore_index (`int`, *optional*, defaults to 255):
            Label of pixels without a class.
    """

    valid_kwargs = OTSegImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 512}
    default_to_square = False
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_pad = True
    do_convert_rgb = True
    size_divisor = 16
    do_reduce_labels = False
    ignore_index = 255

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`; in a local folder whose `processor_config.json` holds another copy of
        the image processor, `preprocessor_config.json` wins (with a warning naming the differing fields):
        transformers would read the nested copy and silently ignore an edited `preprocessor_config.json`."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        image_processor = loaded[0] if isinstance(loaded, tuple) else loaded
        if kwargs:  # overrides given for this load apply to either copy
            return loaded
        standalone = standalone_image_processor(cls, pretrained_model_name_or_path, image_processor)
        if standalone is None:
            return loaded
        return (standalone, *loaded[1:]) if isinstance(loaded, tuple) else standalone

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _check_size(self.size)
        if not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            raise ValueError(f"size_divisor must be a positive integer, got {self.size_divisor!r}")

    # ------------------------------------------------------------------------------------------------
    # preprocessing
    # ------------------------------------------------------------------------------------------------
    def preprocess(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        r"""
        Args:
            images: one image or a list of images (see the class docstring for the accepted kinds).
            segmentation_maps: one map or a list of maps of class indices, one per image, the same size as it.
            **kwargs: any constructor argument, overriding it for this call, and `return_tensors`.

        Returns:
            [`BatchFeature`] with `pixel_values` (B, 3, H, W) float32 (a list of (3, H, W) arrays when sizes
            differ and `do_pad=False`) and, with maps, `labels` (B, H, W) int64.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images,
        segmentation_maps=None,
        *,
        do_resize: bool,
        size: SizeDict,
        resample,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_pad: bool,
        size_divisor: int,
        do_reduce_labels: bool,
        ignore_index: int,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        _check_size(size)
        _check_numbers(do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_pad, size_divisor)
        images = _as_list(images)
        for index, image in enumerate(images):
            check_float_range(image, do_rescale, where=f"image {index}")
        images = [self.to_rgb(image) for image in images]
        maps = None
        if segmentation_maps is not None:
            maps = [read_label(m) for m in _as_list(segmentation_maps)]
            if len(maps) != len(images):
                raise ValueError(f"got {len(images)} images but {len(maps)} segmentation maps")
            for index, (image, label) in enumerate(zip(images, maps)):
                if image.shape[:2] != label.shape:
                    raise ValueError(
                        f"segmentation map {index} is {label.shape[0]}x{label.shape[1]} but its image is "
                        f"{image.shape[0]}x{image.shape[1]} (height x width)"
                    )

        pixel_values, labels = [], []  # (H, W, 3) and (H, W) until the end
        for index, image in enumerate(images):
            output_size = self.get_output_size(image.shape[:2], size) if do_resize else image.shape[:2]
            if tuple(output_size) != image.shape[:2]:
                image = _resize(image, output_size, resample)
            pixel_values.append(
                normalize(
                    image,
                    image_mean if do_normalize else None,
                    image_std,
                    rescale_factor if do_rescale else None,
                )
            )
            if maps is not None:
                label = maps[index]
                if do_reduce_labels:
                    label = reduce_labels(label, ignore_index)
                if tuple(output_size) != label.shape:
                    label = resize_label(label, output_size)
                labels.append(label)

        if do_pad:
            height = _round_up(max(p.shape[0] for p in pixel_values), size_divisor)
            width = _round_up(max(p.shape[1] for p in pixel_values), size_divisor)
            pixel_values = [pad(p, height, width, 0.0) for p in pixel_values]
            labels = [pad(label, height, width, ignore_index) for label in labels]
        pixel_values = [np.ascontiguousarray(p.transpose(2, 0, 1)) for p in pixel_values]  # -> (3, H, W)
        if return_tensors is not None and len({p.shape for p in pixel_values}) > 1:
            sizes = sorted({p.shape[1:] for p in pixel_values})
            raise ValueError(
                f"images of different sizes {sizes} cannot be stacked into one tensor: pass do_pad=True, or "
                "return_tensors=None for a list"
            )
        data = {"pixel_values": pixel_values}
        if maps is not None:
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def get_output_size(
        self, image_size: tuple[int, int], size: SizeDict | Mapping | None = None
    ) -> tuple[int, int]:
        """(height, width) an image of `image_size` is resized to.

        With `shortest_edge` s (and optionally `longest_edge` l): scale = s / short side, or l / long side when that
        is smaller; each side becomes `int(side * scale + 0.5)` (mmcv's `rescale_size`), at least 1."""
        size = self.size if size is None else size
        get = size.get  # a dict or a SizeDict
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        if not get("shortest_edge"):
            raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width', got {dict(size)}")
        return rescale_size(int(image_size[0]), int(image_size[1]), get("shortest_edge"), get("longest_edge"))

    def to_rgb(self, image) -> np.ndarray:
        """One image -> (H, W, 3) array: uint8 for 8-bit inputs, float32 in 0..255 otherwise (see the class
        docstring for the conversions)."""
        return read_image(image)

    # ------------------------------------------------------------------------------------------------
    # post-processing
    # ------------------------------------------------------------------------------------------------
    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
        seen_label_ids: Sequence[int] | None = None,
        seen_class_penalty: float = 0.1,
        return_segmentation_scores: bool = False,
        threshold: float = 0.0,
        return_winning_scores: bool = False,
        max_chunk_elements: int = 2**24,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """OTSeg+ label maps (spec section 7): probabilities p = sigmoid of the ensemble logits, minus
        `seen_class_penalty` for the channels in `seen_label_ids`, argmax over classes.

        The classes are resized and compared in chunks of at most `max_chunk_elements` target pixels (a running
        maximum, the first class winning ties as in `argmax`), so the memory does not grow with classes x target
        area unless `return_segmentation_scores` asks for all the maps; the label maps are the ones of resizing
        all classes at once (`max_chunk_elements` >= classes x target area), to the bit.

        Args:
            outputs: the model's output (`logits` (B, K, h, w) at feature resolution: upsampled bilinearly to each
                target size, then the sigmoid), or the output of `sliding_window_inference` (`probabilities`
                (B, K, H, W): resized bilinearly to each target size).
            target_sizes: (height, width) of each label map; `None` keeps the resolution of `outputs`.
            seen_label_ids: output channels of classes the model was trained on as seen. Pass
                `model.config.seen_label_ids` for an inductive model on its own vocabulary; `None` (no penalty)
                for transductive and fully supervised models.
            seen_class_penalty: subtracted from the probabilities of the seen channels (`config.seen_class_penalty`).
            return_segmentation_scores: also return the probabilities (without penalty) at the target size,
                (K, height, width) per image.
            threshold: pixels whose highest class probability (before the penalty) is below it stay unlabelled:
                `UNLABELLED` (-1) in the label map, in no class. `0` (default) labels every pixel, as the reference
                does; a model trained without a background class can leave the background out this way.
            return_winning_scores: also return `winning_scores` (height, width): the probability (without penalty)
                of the winning class at each pixel, i.e. `segmentation_scores.gather(0, segmentation[None])[0]`
                without holding every class's map.
            max_chunk_elements: at most this many target pixels (classes x height x width) resized at once.

        Returns:
            One (height, width) int64 label map per image, or [`SemanticSegmentationPostProcessorOutput`]s with
            `segmentation` and, as asked, `segmentation_scores` and `winning_scores`.
        """
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1] (0 = off), got {threshold}")
        probabilities = _get(outputs, "probabilities")
        logits = None if probabilities is not None else _get(outputs, "logits")
        scores = probabilities if probabilities is not None else logits
        if scores is None:
            raise ValueError(
                "outputs must have `logits` (the model's) or `probabilities` (sliding_window_inference's)"
            )
        if scores.dim() != 4:
            raise ValueError(
                f"expected (batch, classes, height, width) scores, got shape {tuple(scores.shape)}"
            )
        batch, num_classes = scores.shape[:2]
        if target_sizes is not None and len(target_sizes) != batch:
            raise ValueError(f"got {len(target_sizes)} target sizes for a batch of {batch}")
        if target_sizes is not None and any(int(h) < 1 or int(w) < 1 for h, w in target_sizes):
            raise ValueError(f"target sizes must be at least 1x1, got {[tuple(map(int, t)) for t in target_sizes]}")
        if not torch.isfinite(scores).all():
            raise ValueError(
                "the model's outputs hold NaN or infinite values (check the inputs and the model's weights)"
            )
        if isinstance(seen_class_penalty, bool) or not isinstance(seen_class_penalty, (int, float)) or not (
            math.isfinite(seen_class_penalty)
        ):
            raise ValueError(f"seen_class_penalty must be a finite number, got {seen_class_penalty!r}")
        seen = [] if seen_label_ids is None else [int(i) for i in seen_label_ids]
        bad = [i for i in seen if not 0 <= i < num_classes]
        if bad:
            raise ValueError(f"seen_label_ids {bad} are out of range for {num_classes} output channels")
        if isinstance(max_chunk_elements, bool) or not isinstance(max_chunk_elements, int) or max_chunk_elements < 1:
            raise ValueError(f"max_chunk_elements must be a positive int, got {max_chunk_elements!r}")
        penalty = torch.zeros(num_classes)
        if seen and seen_class_penalty:
            penalty[seen] = 1.0

        results = []
        for index in range(batch):
            target = tuple(scores.shape[-2:]) if target_sizes is None else tuple(int(s) for s in target_sizes[index])
            chunk = num_classes if return_segmentation_scores else max(1, max_chunk_elements // math.prod(target))
            best = segmentation = winning = highest = None
            all_probs = []
            for start in range(0, num_classes, chunk):
                # each class map resized as an image of its own and each sigmoid taken map by map: the numbers
                # then do not depend on the chunk (a (1, K, h, w) resize or a (K, H, W) sigmoid can round a
                # value differently with K), so the chunked label maps are the one-chunk ones to the bit
                item = scores[index, start : start + chunk, None].float()  # (c, 1, h, w)
                if target != tuple(item.shape[-2:]):
                    item = F.interpolate(item, size=target, mode="bilinear", align_corners=False)
                item = item[:, 0]  # (c, height, width)
                probs = item
                if logits is not None:
                    probs = torch.empty_like(item)
                    for plane, out in zip(item, probs):
                        torch.sigmoid(plane, out=out)
                calibrated = probs
                seen_here = penalty[start : start + chunk].nonzero()[:, 0].tolist()
                if seen_here:
                    calibrated = probs.clone()
                    calibrated[seen_here] -= seen_class_penalty
                chunk_best, chunk_arg = calibrated.max(dim=0)  # the first maximum, as argmax
                if threshold > 0:
                    chunk_highest = probs.amax(dim=0)
                    highest = chunk_highest if highest is None else torch.maximum(highest, chunk_highest)
                if best is None:
                    best, segmentation = chunk_best, chunk_arg
                    winning = probs.gather(0, chunk_arg[None])[0] if return_winning_scores else None
                else:
                    better = chunk_best > best  # strictly: an earlier class keeps a tie
                    best = torch.where(better, chunk_best, best)
                    segmentation = torch.where(better, chunk_arg + start, segmentation)
                    if return_winning_scores:
                        winning = torch.where(better, probs.gather(0, chunk_arg[None])[0], winning)
                if return_segmentation_scores:
                    all_probs.append(probs)
                del item, probs, calibrated
            if threshold > 0:
                segmentation[highest < threshold] = UNLABELLED
            data = {"segmentation": segmentation}
            if return_segmentation_scores:
                data["segmentation_scores"] = torch.cat(all_probs) if len(all_probs) > 1 else all_probs[0]
            if return_winning_scores:
                data["winning_scores"] = winning
            if return_segmentation_scores or return_winning_scores:
                results.append(SemanticSegmentationPostProcessorOutput(data=data))
            else:
                results.append(segmentation)
        return results


def penalised_label_ids(config, labels: Sequence[str] | None = None) -> list[int] | None:
    """The output channels that get the seen-class penalty at inference (spec section 7): those of the classes an
    inductive model saw in training, found by name among `labels` (the vocabulary of the output channels;
    defaults to the model's own, `config.id2label`). `None` (no penalty) for transductive and fully supervised
    models. The `seen_label_ids` to pass to `post_process_semantic_segmentation`."""
    if config.setting != "inductive":
        return None
    seen_names = {config.id2label[i] for i in config.seen_label_ids}
    labels = [config.id2label[i] for i in range(len(config.id2label))] if labels is None else labels
    return [index for index, name in enumerate(labels) if name in seen_names]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _check_size(size) -> None:
    if size is None or not hasattr(size, "get"):
        raise ValueError(f"size must be a dict, got {size!r}")
    get = size.get  # a dict or a SizeDict
    if get("height") and get("width"):
        return
    if not get("shortest_edge"):
        raise ValueError(
            "size must be {'shortest_edge': s} (optionally with 'longest_edge') or {'height': h, 'width': w}, "
            f"got {dict(size)}"
        )
    for key in ("shortest_edge", "longest_edge", "height", "width"):
        value = get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"size[{key!r}] must be a positive integer, got {value!r}")
    if get("longest_edge") and get("longest_edge") < get("shortest_edge"):
        raise ValueError(
            f"longest_edge ({get('longest_edge')}) must be >= shortest_edge ({get('shortest_edge')})"
        )


def standalone_image_processor(image_processor_class, folder, loaded):
    """The image processor of `folder/preprocessor_config.json` when it differs from `loaded` (the copy nested in
    processor_config.json, which transformers reads first), with a warning naming the fields; else None."""
    folder = Path(str(folder))
    if not ((folder / "preprocessor_config.json").is_file() and (folder / "processor_config.json").is_file()):
        return None
    standalone = image_processor_class.from_json_file(folder / "preprocessor_config.json")
    ours, theirs = loaded.to_dict(), standalone.to_dict()
    differing = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k))
    if not differing:
        return None
    warnings.warn(
        f"{folder}: preprocessor_config.json and the image processor in processor_config.json differ in "
        f"{differing}; using preprocessor_config.json",
        UserWarning,
        stacklevel=3,
    )
    return standalone


def _check_numbers(do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_pad, size_divisor):
    """Finite rescale factor, mean and std (std > 0), and a positive size_divisor, before any image is read."""
    if do_rescale and not (isinstance(rescale_factor, (int, float)) and math.isfinite(rescale_factor)):
        raise ValueError(f"rescale_factor must be a finite number, got {rescale_factor!r}")
    if do_normalize:
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            values = np.atleast_1d(np.asarray(values, dtype=np.float64))
            if values.size not in (1, 3) or not np.isfinite(values).all():
                raise ValueError(f"{name} must be 1 or 3 finite numbers, got {values.tolist()}")
            if name == "image_std" and (values <= 0).any():
                raise ValueError(f"image_std must be > 0, got {values.tolist()}")
    if do_pad and (isinstance(size_divisor, bool) or not isinstance(size_divisor, int) or size_divisor < 1):
        raise ValueError(f"size_divisor must be a positive integer, got {size_divisor!r}")


def _get(outputs, name: str):
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("got an empty list of images")
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def _resize(image: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """BILINEAR (the default) is the reference's cv2-style bilinear (spec section 9); any other filter is PIL's."""
    if resample in (PILImageResampling.BILINEAR, PIL.Image.BILINEAR, None):
        return resize_image(image, size)
    height, width = size
    if image.dtype == np.uint8:
        return np.asarray(PIL.Image.fromarray(image).resize((width, height), resample=resample))
    channels = [
        np.asarray(PIL.Image.fromarray(image[:, :, c].astype(np.float32)).resize((width, height), resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=2)


def _round_up(value: int, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor)


__all__ = ["UNLABELLED", "OTSegImageProcessor", "penalised_label_ids", "reduce_labels"]
