"""OTSeg processor: the image processor and a CLIP tokenizer behind one call.

`processor(images=..., text=class_names)` gives `pixel_values` and the prompt token ids of every class for the
model's templates, ordered class-major (all templates of class 0, then class 1, ...), which is what
`OTSegForSemanticSegmentation(input_ids=...)` and `model.get_text_embeddings` expect.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import AutoTokenizer
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_base import check_class_names, check_prompt_templates
from .configuration_otseg import VOC_PROMPT_TEMPLATES


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
            tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors=return_tensors)
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
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        if missing is None:
            return None
        raise ValueError(f"no tokenizer found at {str(source)!r}: {missing}") from error

__all__ = ["OTSegProcessor", "check_class_names", "load_tokenizer"]
