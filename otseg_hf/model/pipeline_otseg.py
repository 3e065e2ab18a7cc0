"""OTSeg and ZegOT pipelines: `image-segmentation` on the model's own classes and `zero-shot-image-segmentation` on
any vocabulary given at call time. Both return transformers' segmentation format, a list of
`{"score", "label", "mask"}` per image.

Each image is resized by the image processor (not padded), segmented with sliding windows (spec section 7),
calibrated (seen-class penalty for the seen classes of inductive models) and resized back to its own size.

Loading a saved folder (`save_pipeline_folder`, `otseg_hf.hub.folders.save_otseg_folder`):
- with otseg_hf imported, `pipeline(task, model=folder)` builds these classes like a native transformers model:
  `import otseg_hf` registers "zero-shot-image-segmentation" and routes transformers' "image-segmentation" to
  `OTSegImageSegmentationPipeline` for OTSeg and ZegOT models (`otseg_hf.registration`; other models keep
  transformers' pipeline), and the installed config classes leave out the folder's `custom_pipelines`, so
  transformers does not ask for `trust_remote_code`. The same holds for models in memory (`model=model`);
- without otseg_hf (e.g. straight from the Hub), `pipeline(task, model=folder, trust_remote_code=True)` runs the
  folder's copy of this code, named in `config.json` (`custom_pipelines`). This file uses only relative imports
  for that reason.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.dynamic_module_utils import custom_object_save
from transformers.image_utils import load_image
from transformers.pipelines.base import Pipeline

from .image_processing_otseg import penalised_label_ids
from .processing_otseg import OTSegProcessor, check_class_names
from .sliding_window import sliding_window_inference

MODEL_CLASS = "AutoModelForSemanticSegmentation"


def otseg_custom_pipelines() -> dict[str, dict[str, Any]]:
    """The `config.custom_pipelines` entry of a saved OTSeg folder (transformers' format)."""
    module = __name__.split(".")[-1]
    return {
        "image-segmentation": {"impl": f"{module}.OTSegImageSegmentationPipeline", "pt": [MODEL_CLASS]},
        "zero-shot-image-segmentation": {
            "impl": f"{module}.OTSegZeroShotImageSegmentationPipeline",
            "pt": [MODEL_CLASS],
        },
    }


class OTSegImageSegmentationPipeline(Pipeline):
    """Semantic segmentation with an OTSeg or ZegOT model over its own classes (`model.config.id2label`).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> segmenter = pipeline("image-segmentation", model="path/to/otseg-folder", trust_remote_code=True)
    >>> segments = segmenter("cat.jpg")  # [{"score": 0.83, "label": "cat", "mask": <PIL.Image mode L>}, ...]
    ```

    Call arguments: `window_size`, `stride` (default: the model config's), `window_batch_size` (windows per
    forward, default 8), `timeout` (for URLs), `threshold` (pixels whose best class probability is below it are in
    no mask; 0, the default, labels every pixel). `score` is the mean probability of the class over its mask (before
    the seen-class penalty); `mask` is a binary mode-L image of the input's size.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            raise ValueError("an OTSeg pipeline needs an image processor (OTSegImageProcessor)")
        if not hasattr(self.model.config, "inference_window_size"):
            raise ValueError(
                f"{type(self).__name__} needs an OTSeg or ZegOT model, got {type(self.model).__name__}"
            )
        _check_batch_size(self._batch_size)

    def _sanitize_parameters(
        self, window_size=None, stride=None, window_batch_size=None, timeout=None, threshold=None
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if threshold is not None:
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"threshold must be a probability in [0, 1] (0 = off), got {threshold}")
            postprocess["threshold"] = float(threshold)
        if timeout is not None:
            preprocess["timeout"] = timeout
        if window_size is not None:
            forward["window_size"] = window_size
        if stride is not None:
            forward["stride"] = stride
        if window_batch_size is not None:
            forward["window_batch_size"] = window_batch_size
        return preprocess, forward, postprocess

    def __call__(self, inputs=None, **kwargs):
        """Segment one image (path, URL, PIL image, array) or a list of them; a list gives a list of results."""
        if inputs is None:
            inputs = kwargs.pop("images", None)
        if inputs is None:
            raise ValueError("give an image or a list of images to segment")
        _check_batch_size(kwargs.get("batch_size"))
        if isinstance(inputs, (list, tuple)) and not inputs:
            return []  # one result per image
        return super().__call__(inputs, **kwargs)

    # -- steps ------------------------------------------------------------------------------------------
    def preprocess(self, image, timeout=None):
        if isinstance(image, str):  # files are opened as they are (16-bit, palette...); URLs via transformers
            image = _open_image(image, timeout)
        rgb = self.image_processor.to_rgb(image)  # upright (EXIF), RGB, (H, W, 3)
        inputs = self.image_processor(images=rgb, do_pad=False, return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"], "target_size": rgb.shape[:2]}

    def _forward(self, model_inputs, window_size=None, stride=None, window_batch_size=8):
        outputs = sliding_window_inference(
            self.model,
            model_inputs["pixel_values"],
            window_size=window_size,
            stride=stride,
            window_batch_size=window_batch_size,
            text_embeds=self._text_embeds(model_inputs),
        )
        return {
            "probabilities": outputs.probabilities,
            "target_size": model_inputs["target_size"],
            "labels": self._labels(model_inputs),
        }

    def postprocess(self, model_outputs, threshold=0.0):
        labels = model_outputs["labels"]
        result = self.image_processor.post_process_semantic_segmentation(
            model_outputs,
            target_sizes=[model_outputs["target_size"]],
            seen_label_ids=penalised_label_ids(self.model.config, labels),
            seen_class_penalty=self.model.config.seen_class_penalty,
            return_winning_scores=True,  # not every class's map at the image's size
            threshold=threshold,
        )[0]
        segmentation = result["segmentation"].numpy()
        winning = result["winning_scores"]  # (H, W): the probability of each pixel's class
        annotation = []
        for index in np.unique(segmentation[segmentation >= 0]):  # unlabelled pixels (-1) are in no mask
            mask = segmentation == index
            score = float(winning[torch.from_numpy(mask)].mean())
            image = PIL.Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
            annotation.append({"score": score, "label": labels[index], "mask": image})
        return annotation

    # -- vocabulary -------------------------------------------------------------------------------------
    def _labels(self, model_inputs) -> list[str]:
        return self.model.config.class_names

    def _text_embeds(self, model_inputs) -> torch.Tensor | None:
        return None  # the model's cached class embeddings

    # -- saving -----------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """Save a folder that loads back with `pipeline(task, model=folder)` (with otseg_hf imported, else with
        `trust_remote_code=True`): model, image processor, tokenizer and processor when there is one, and this
        code."""
        save_pipeline_folder(
            save_directory,
            self.model,
            self.image_processor,
            tokenizer=self.processor.tokenizer if self.processor is not None else self.tokenizer,
            **kwargs,
        )


class OTSegZeroShotImageSegmentationPipeline(OTSegImageSegmentationPipeline):
    """Zero-shot semantic segmentation: any vocabulary at call time.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> segmenter = pipeline("zero-shot-image-segmentation", model="path/to/otseg-folder", trust_remote_code=True)
    >>> segmenter(["a.jpg", "b.jpg"], candidate_labels=["cat", "sofa", "wall"])
    ```

    `candidate_labels` (a list, or one comma-separated string) must be distinct and non-empty. Labels that are
    class names of the model reuse its cached text embeddings; other labels need a tokenizer (saved in the
    folder, or passed as `tokenizer=`). An inductive model's seen classes get the seen-class penalty when they
    are among the labels; no other label does.
    """

    _load_processor = None
    _load_tokenizer = None
    _max_cached_vocabularies = 16

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None and self.tokenizer is not None:
            self.processor = OTSegProcessor(
                self.image_processor, self.tokenizer, prompt_templates=self.model.config.tokenizer_templates
            )
        self._text_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def _sanitize_parameters(self, candidate_labels=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        return preprocess, forward, postprocess

    def __call__(self, inputs=None, candidate_labels=None, **kwargs):
        """Segment image(s) into `candidate_labels`."""
        if candidate_labels is None:
            raise ValueError(
                "zero-shot-image-segmentation needs candidate_labels, e.g. ['cat', 'dog', 'grass']"
            )
        return super().__call__(inputs, candidate_labels=candidate_labels, **kwargs)

    def preprocess(self, image, candidate_labels=None, timeout=None):
        inputs = super().preprocess(image, timeout=timeout)
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        inputs["candidate_labels"] = check_class_names(candidate_labels)
        return inputs

    def _labels(self, model_inputs) -> list[str]:
        return model_inputs["candidate_labels"]

    def _text_embeds(self, model_inputs) -> torch.Tensor:
        labels = tuple(model_inputs["candidate_labels"])
        if labels not in self._text_cache:
            self._text_cache[labels] = self._embed_labels(list(labels))
            while len(self._text_cache) > self._max_cached_vocabularies:
                self._text_cache.popitem(last=False)
        return self._text_cache[labels]

    def _embed_labels(self, labels: list[str]) -> torch.Tensor:
        """(K, N, D) prompt embeddings: the model's cache for its own class names, the model's text path
        (`get_text_embeddings` of the tokenised `config.tokenizer_templates`) for others."""
        config, model = self.model.config, self.model
        own = config.label2id
        new = [label for label in labels if label not in own]
        computed = {}
        if new:
            if self.processor is None:
                raise ValueError(
                    f"this model has no tokenizer, so it can only segment its own classes {config.class_names}; "
                    f"the labels {new} need one: save a tokenizer with the model (otseg_hf.hub.folders.save_otseg_folder "
                    "does) or pass tokenizer=... to pipeline()"
                )
            tokens = self.processor(
                text=new, prompt_templates=config.tokenizer_templates, return_tensors="pt"
            )
            embeds = model.get_text_embeddings(
                tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            )
            computed = dict(zip(new, embeds))
        cache = model.get_class_text_embeds()
        rows = [cache[own[label]] if label in own else computed[label].to(cache.dtype) for label in labels]
        return torch.stack(rows)


def _open_image(source: str, timeout=None):
    """A local file (opened as it is), or a URL / base64 string through transformers' `load_image`; a missing or
    unreadable file is a `FileNotFoundError` / `ValueError` naming it."""
    if os.path.isfile(source):
        try:
            image = PIL.Image.open(source)
            image.load()
        except (OSError, SyntaxError) as error:  # PIL.UnidentifiedImageError is an OSError
            raise ValueError(f"{source} is not a readable image: {error}") from None
        return image
    if not source.startswith(("http://", "https://", "data:")) and (os.sep in source or "." in source[-6:]):
        raise FileNotFoundError(f"no such image file: {source}")
    return load_image(source, timeout=timeout)


def _check_batch_size(batch_size) -> None:
    if batch_size not in (None, 1):
        raise ValueError(
            f"batch_size={batch_size} is not supported: images of different sizes do not stack, so OTSeg pipelines "
            "take one image at a time and batch its windows instead (window_batch_size=...)"
        )


def save_pipeline_folder(
    save_directory: str | os.PathLike,
    model,
    image_processor,
    tokenizer=None,
    **kwargs,
) -> None:
    """Write model (config + safetensors + modeling code), image processor, tokenizer and `OTSegProcessor` (when a
    tokenizer is given; its templates are the model's `config.tokenizer_templates`), the pipeline code, and
    `custom_pipelines` in config.json. The model is an OTSeg or a ZegOT model."""
    os.makedirs(save_directory, exist_ok=True)
    # `custom_pipelines` goes into config.json as transformers' own `Pipeline.save_pretrained` puts it there: set on
    # the config while the model saves. A remote-code config loaded through pipeline() already holds the entry with
    # classes in it (transformers resolves them in place), which JSON cannot hold: it is put back afterwards.
    config = model.config
    loaded = vars(config).pop("custom_pipelines", None)
    config.custom_pipelines = otseg_custom_pipelines()
    try:
        model.save_pretrained(save_directory, **kwargs)
    finally:
        del config.custom_pipelines
        if loaded is not None:
            config.custom_pipelines = loaded
    custom_object_save(OTSegImageSegmentationPipeline, save_directory)  # this file and its relative imports
    image_processor.save_pretrained(save_directory)
    if tokenizer is not None:
        templates = model.config.tokenizer_templates
        OTSegProcessor(image_processor, tokenizer, prompt_templates=templates).save_pretrained(save_directory)
        # one copy of the image processor: transformers nests another in processor_config.json and reads that one
        # first, so an edited preprocessor_config.json would be ignored
        processor_file = Path(save_directory) / "processor_config.json"
        processor_config = json.loads(processor_file.read_text())
        if processor_config.pop("image_processor", None) is not None:
            processor_file.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")


__all__ = [
    "OTSegImageSegmentationPipeline",
    "OTSegZeroShotImageSegmentationPipeline",
    "otseg_custom_pipelines",
    "save_pipeline_folder",
]
