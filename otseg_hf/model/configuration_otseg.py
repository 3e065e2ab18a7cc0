"""OTSeg configuration."""

from __future__ import annotations

from .configuration_base import (
    VOC_CLASS_NAMES,
    VOC_UNSEEN_LABEL_IDS,
    ZeroShotSegmentationConfig,
    check_int,
    check_number,
    check_prompt_templates,
)

VOC_PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a portrait of a {}.",
    "a part of a {}.",
    "a segment of a {}.",
    "a photo of small {}.",
    "a photo of medium {}.",
)
# PASCAL Context and COCO-Stuff add two templates to VOC's six.
CONTEXT_PROMPT_TEMPLATES = VOC_PROMPT_TEMPLATES + ("a photo of large {}.", "a background of a {}.")


class OTSegConfig(ZeroShotSegmentationConfig):
    r"""
    Configuration of an [`OTSegForSemanticSegmentation`] model. Defaults give the PASCAL VOC inductive
    recipe of the OTSeg paper (CLIP ViT-B/16 at 512 px, 20 classes, classes 15-19 unseen).

    Takes the fields of [`ZeroShotSegmentationConfig`] (backbone, vocabulary and label setting, Sinkhorn, loss,
    sliding window; `seen_class_penalty` defaults to 0.1 here) and:

    Args:
        prompt_templates (`list[str]`, *optional*, defaults to VOC's six templates):
            Text templates, each with one `{}` for the class name; N = their number.
        num_visual_prompts (`int`, *optional*, defaults to 10):
            Deep visual prompt tokens per layer (P; the COCO-Stuff recipe uses 100).
        visual_prompt_depth (`int`, *optional*, defaults to 11):
            Number of layers after the first that get fresh prompts; at most the number of vision layers - 1.
        visual_prompt_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the projected prompt tokens.
        prompt_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the prompt layer norm applied after the last vision layer.
        num_decoder_layers (`int`, *optional*, defaults to 3):
            Sinkhorn-attention decoder layers.
        decoder_ffn_dim (`int`, *optional*, defaults to 2048):
            Hidden size of the decoder feed-forward networks (4 x projection dim).
        decoder_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the decoder residual branches and inside its FFN.
        attention_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the transport plan used as attention.
        decoder_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the decoder layer norms.
        matching (`str`, *optional*, defaults to `"sinkhorn"`):
            How pixels are matched to prompts in the MPS path and the decoder: `"sinkhorn"` (optimal transport,
            the paper) or `"softmax"` (plain cross-attention, T = softmax over pixels of S / epsilon divided by N:
            only the prompt marginal holds). `"softmax"` exists for ablations.
        ensemble_weight (`float`, *optional*, defaults to 0.5):
            Weight of the decoder logits in the OTSeg+ ensemble; the score logits get 1 - weight.

    Example:

    ```python
    >>> from otseg_hf import OTSegConfig, OTSegForSemanticSegmentation
    >>> config = OTSegConfig()  # VOC inductive, random weights
    >>> model = OTSegForSemanticSegmentation(config)
    ```"""

    model_type = "otseg"
    default_seen_class_penalty = 0.1

    def __init__(
        self,
        prompt_templates: list[str] | None = None,
        num_visual_prompts: int = 10,
        visual_prompt_depth: int = 11,
        visual_prompt_dropout: float = 0.1,
        prompt_norm_eps: float = 1e-6,
        num_decoder_layers: int = 3,
        decoder_ffn_dim: int = 2048,
        decoder_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        decoder_layer_norm_eps: float = 1e-5,
        matching: str = "sinkhorn",
        ensemble_weight: float = 0.5,
        **kwargs,
    ):
        self.prompt_templates = VOC_PROMPT_TEMPLATES if prompt_templates is None else prompt_templates
        check_prompt_templates(self.prompt_templates)
        self.prompt_templates = list(self.prompt_templates)
        self.num_visual_prompts = num_visual_prompts
        self.visual_prompt_depth = visual_prompt_depth
        self.visual_prompt_dropout = visual_prompt_dropout
        self.prompt_norm_eps = prompt_norm_eps
        self.num_decoder_layers = num_decoder_layers
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_dropout = decoder_dropout
        self.attention_dropout = attention_dropout
        self.decoder_layer_norm_eps = decoder_layer_norm_eps
        self.matching = matching
        self.ensemble_weight = ensemble_weight
        super().__init__(**kwargs)  # the shared fields, then validate()

    # -- derived ------------------------------------------------------------------------------------
    @property
    def tokenizer_templates(self) -> list[str]:
        """The texts the tokenizer gets per class, each with one `{}` for the name: the N prompt templates.
        `OTSegProcessor(prompt_templates=config.tokenizer_templates)` makes the `input_ids` this model reads."""
        return list(self.prompt_templates)

    # -- checks -------------------------------------------------------------------------------------
    def validate(self):
        """Raise `ValueError` naming the first invalid field."""
        vision = self.clip_config.vision_config
        check_prompt_templates(self.prompt_templates)
        check_int("num_visual_prompts", self.num_visual_prompts, 1)
        check_int("visual_prompt_depth", self.visual_prompt_depth, 0)
        if self.visual_prompt_depth > vision.num_hidden_layers - 1:
            raise ValueError(
                f"visual_prompt_depth ({self.visual_prompt_depth}) must be at most the number of vision layers "
                f"- 1 ({vision.num_hidden_layers - 1}): prompts are replaced before layers 1..depth"
            )
        check_int("num_decoder_layers", self.num_decoder_layers, 1)
        check_int("decoder_ffn_dim", self.decoder_ffn_dim, 1)
        for name in ("visual_prompt_dropout", "decoder_dropout", "attention_dropout"):
            value = getattr(self, name)
            check_number(name, value, 0)
            if not value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name in ("prompt_norm_eps", "decoder_layer_norm_eps"):
            check_number(name, getattr(self, name), 0, open_low=True)
        if self.matching not in ("sinkhorn", "softmax"):
            raise ValueError(f"matching must be 'sinkhorn' or 'softmax', got {self.matching!r}")
        check_number("ensemble_weight", self.ensemble_weight, 0, 1)
        super().validate()


__all__ = ["OTSegConfig", "VOC_CLASS_NAMES", "VOC_PROMPT_TEMPLATES", "VOC_UNSEEN_LABEL_IDS"]
