"""OTSeg processor: the image processor and a CLIP tokenizer behind one call.

`processor(images=..., text=class_names)` gives `pixel_values` and the prompt token ids of every class for the
model's templates, ordered class-major (all templates of class 0, then class 1, ...), which is what
`OTSegForSemanticSegmentation(input_ids=...)` and `model.get_text_embeddings` expect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_base import check_class_names, check_prompt_templates
from .configuration_otseg import VOC_PROMPT_TEMPLATES
from .image_processing_otseg import standalone_image_processor


class OTSegProcessor(ProcessorMixin):
    r"""
    Constructs an OTSeg processor: an [`OTSegImageProcessor`] and a `CLIPTokenizer`.

    Args:
        image_processor ([`OTSegImageProcessor`]):
            Turns images (and segmentation maps) into `pixel_values` (and `labels`).
        tokenizer (`CLIPTokenizer` or `CLIPTokenizerFast`):
            The tokenizer of the model's CLIP text encoder.
        prompt_templates (`list[str]`, *optional*, defaults to VOC's six templates):
            Templates with one `{}` for the class name; keep them equal to `model.config.prompt_templates`.
    """

    def __init__(
        self, image_processor=None, tokenizer=None, prompt_templates: Sequence[str] | None = None, **kwargs
    ):
        templates = list(VOC_PROMPT_TEMPLATES if prompt_templates is None else prompt_templates)
        check_prompt_templates(templates)
        self.prompt_templates = templates
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`ProcessorMixin.from_pretrained`, checking a local folder's tokenizer files first (a corrupt one is
        named), and reading the image processor from `preprocessor_config.json` when `processor_config.json`
        holds a different copy of it (transformers would silently prefer the nested copy, while `pipeline()`
        and `AutoImageProcessor` read `preprocessor_config.json`; a warning names the fields that differ)."""
        check_tokenizer_files(pretrained_model_name_or_path)
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(str(pretrained_model_name_or_path))
        standalone = standalone_image_processor(type(processor.image_processor), folder, processor.image_processor)
        if standalone is not None:
            processor.image_processor = standalone
        return processor

    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        segmentation_maps=None,
        return_tensors: str | None = "pt",
        prompt_templates: Sequence[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prepare images and/or a vocabulary for the model.

        Args:
            images: images for [`OTSegImageProcessor`].
            text: the class names of the vocabulary (a list, or one name).
            segmentation_maps: maps of class indices, one per image.
            return_tensors: `"pt"` (default), `"np"` or `None`.
            prompt_templates: templates for this call instead of `self.prompt_templates`.
            **kwargs: image processor arguments (`size`, `do_pad`, ...).

        Returns:
            [`BatchFeature`] with `pixel_values` (and `labels`) for images, and `input_ids`, `attention_mask` of
            shape (K * N, L) for text.
        """
        if images is None and text is None:
            raise ValueError("give images, text (class names), or both")
        if segmentation_maps is not None and images is None:
            raise ValueError("segmentation_maps need their images")
        data = {}
        if text is not None:
            prompts = self.prompts(text, prompt_templates)
            tokens = self.tokenizer(prompts, padding=True, return_tensors=return_tensors)
            check_prompt_lengths(prompts, tokens["attention_mask"], self.tokenizer.model_max_length)
            data.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        if images is not None:
            features = self.image_processor(
                images, segmentation_maps=segmentation_maps, return_tensors=return_tensors, **kwargs
            )
            data.update(features)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def prompts(
        self, class_names: str | Sequence[str], prompt_templates: Sequence[str] | None = None
    ) -> list[str]:
        """Every template filled with every class name, class-major: K * N strings."""
        names = check_class_names(class_names)
        templates = self.prompt_templates if prompt_templates is None else list(prompt_templates)
        check_prompt_templates(templates)
        return [template.format(name) for name in names for template in templates]

    def post_process_semantic_segmentation(self, *args, **kwargs):
        """See [`OTSegImageProcessor.post_process_semantic_segmentation`]."""
        return self.image_processor.post_process_semantic_segmentation(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask"]



def load_tokenizer(source, missing: str | None = None):
    """The tokenizer saved at `source` (a folder or a Hub id; `AutoTokenizer.from_pretrained`).

    When there is none: `None`, or with `missing` (what the caller needs it for and what to pass instead) a
    `ValueError` naming `source` and saying `missing`."""
    check_tokenizer_files(source)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        present = _tokenizer_files(source)
        if present:  # the folder has a tokenizer, and it does not load: that is not "no tokenizer"
            raise ValueError(f"the tokenizer at {str(source)!r} ({', '.join(present)}) does not load: {error}") from error
        if missing is None:
            return None
        raise ValueError(f"no tokenizer found at {str(source)!r}: {missing}") from error


def check_prompt_lengths(prompts: Sequence[str], attention_mask, limit) -> None:
    """`ValueError` naming the prompts longer than `limit` tokens: cut to the limit, two long labels would get the
    same embedding (the reference truncates silently; ZegOT's class names are checked the same way)."""
    if limit is None or limit > 100_000:  # the tokenizer sets no limit; the text encoder checks its positions
        return
    lengths = [int(sum(row)) for row in (attention_mask.tolist() if hasattr(attention_mask, "tolist") else attention_mask)]
    too_long = [prompt for prompt, length in zip(prompts, lengths) if length > limit]
    if too_long:
        raise ValueError(
            f"{len(too_long)} prompt(s) are longer than the text encoder's {limit} tokens, e.g. {too_long[0]!r}: "
            "shorten the class names (they would be cut, and long names would get the same embedding)"
        )


TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "special_tokens_map.json")


def _tokenizer_files(source) -> list[str]:
    folder = Path(str(source))
    if not folder.is_dir():
        return []
    return [name for name in (*TOKENIZER_JSON_FILES, "merges.txt") if (folder / name).is_file()]


def check_tokenizer_files(source) -> None:
    """`ValueError` naming a tokenizer JSON file of the local folder `source` that is not valid JSON (a corrupt
    file is otherwise reported as "no tokenizer")."""
    folder = Path(str(source))
    for name in TOKENIZER_JSON_FILES:
        file = folder / name
        if folder.is_dir() and file.is_file():
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"{file} is corrupt (not valid JSON: {error}); save the tokenizer again") from None

__all__ = ["OTSegProcessor", "check_class_names", "check_tokenizer_files", "load_tokenizer"]
