"""ZegOT configuration."""

from __future__ import annotations

from .configuration_base import ZeroShotSegmentationConfig, check_int, check_number, check_template

LAYER_COMBINATIONS = ("mean", "last")


class ZegOTConfig(ZeroShotSegmentationConfig):
    r"""
    Configuration of a [`ZegOTForSemanticSegmentation`] model. Defaults give the PASCAL VOC inductive setting
    with the design fixed in `spec/zegot.md` (CLIP ViT-B/16 at 512 px, 20 classes, classes 15-19 unseen,
    4 learnable prompts of 8 context tokens, MPOT on the outputs of the last three vision blocks).

    Takes the fields of [`ZeroShotSegmentationConfig`] (backbone, vocabulary and label setting, Sinkhorn, loss,
    sliding window; ZegOT uses no seen-class calibration unless configured: `seen_class_penalty` defaults to 0.0)
    and:

    Args:
        num_text_prompts (`int`, *optional*, defaults to 4):
            N, the number of learnable text prompts; each has its own context vectors, shared by all classes.
        num_context_tokens (`int`, *optional*, defaults to 8):
            L, the number of learnable context vectors of each prompt, placed between the start token and the
            class name: `[SOS] [V_1] ... [V_L] name . [EOS]`.
        context_init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the context vectors.
        class_name_format (`str`, *optional*, defaults to `"{}."`):
            Text after the contexts, with one `{}` for the class name.
        feature_layers (`list[int]`, *optional*, defaults to `[-3, -2, -1]`):
            Vision blocks whose outputs give pixel embeddings (deep local feature alignment); negative values
            count from the last block (-1 is the last block's output). Each gets its own relationship
            descriptor.
        layer_combination (`str`, *optional*, defaults to `"mean"`):
            How the per-layer score maps give the logits: `"mean"` (the spec) or `"last"` (the map of the last
            entry of `feature_layers` only; the loss still covers every map).
        layer_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the mask loss of each per-layer map.
        combined_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the mask loss of the combined map (the logits).

    Example:

    ```python
    >>> from otseg_hf import ZegOTConfig, ZegOTForSemanticSegmentation
    >>> config = ZegOTConfig()  # VOC inductive, random weights
    >>> model = ZegOTForSemanticSegmentation(config)
    ```"""

    model_type = "zegot"
    default_seen_class_penalty = 0.0

    def __init__(
        self,
        num_text_prompts: int = 4,
        num_context_tokens: int = 8,
        context_init_std: float = 0.02,
        class_name_format: str = "{}.",
        feature_layers: list[int] | tuple[int, ...] = (-3, -2, -1),
        layer_combination: str = "mean",
        layer_loss_weight: float = 1.0,
        combined_loss_weight: float = 1.0,
        **kwargs,
    ):
        self.num_text_prompts = num_text_prompts
        self.num_context_tokens = num_context_tokens
        self.context_init_std = context_init_std
        self.class_name_format = class_name_format
        self.feature_layers = list(feature_layers)
        self.layer_combination = layer_combination
        self.layer_loss_weight = layer_loss_weight
        self.combined_loss_weight = combined_loss_weight
        super().__init__(**kwargs)  # the shared fields, then validate()

    # -- derived ------------------------------------------------------------------------------------
    @property
    def tokenizer_templates(self) -> list[str]:
        """The texts the tokenizer gets per class, each with one `{}` for the name: `[class_name_format]` (the
        model splices the learnable contexts in after the start token). `OTSegProcessor(prompt_templates=
        config.tokenizer_templates)` makes the `input_ids` this model reads."""
        return [self.class_name_format]

    @property
    def feature_layer_indices(self) -> list[int]:
        """`feature_layers` as block indices 0..num_hidden_layers-1."""
        depth = self.clip_config.vision_config.num_hidden_layers
        return [layer % depth for layer in self.feature_layers]

    # -- checks -------------------------------------------------------------------------------------
    def validate(self):
        """Raise `ValueError` naming the first invalid field."""
        vision = self.clip_config.vision_config
        text = self.clip_config.text_config
        check_int("num_text_prompts", self.num_text_prompts, 1)
        check_int("num_context_tokens", self.num_context_tokens, 1)
        # the shortest prompt is [SOS] contexts name-token [EOS]
        if self.num_context_tokens + 3 > text.max_position_embeddings:
            raise ValueError(
                f"num_context_tokens ({self.num_context_tokens}) leaves no room for a class name in the "
                f"{text.max_position_embeddings} text positions"
            )
        check_number("context_init_std", self.context_init_std, 0, open_low=True)
        check_template("class_name_format", self.class_name_format)
        if not self.feature_layers:
            raise ValueError("feature_layers must name at least one vision block")
        depth = vision.num_hidden_layers
        for layer in self.feature_layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not -depth <= layer < depth:
                raise ValueError(
                    f"feature_layers entries must be block indices in [-{depth}, {depth - 1}], got {layer!r}"
                )
        if len(set(self.feature_layer_indices)) != len(self.feature_layers):
            raise ValueError(f"feature_layers name a block twice: {self.feature_layers}")
        if self.layer_combination not in LAYER_COMBINATIONS:
            raise ValueError(
                f"layer_combination must be one of {LAYER_COMBINATIONS}, got {self.layer_combination!r}"
            )
        for name in ("layer_loss_weight", "combined_loss_weight"):
            check_number(name, getattr(self, name), 0)
        if self.layer_loss_weight == 0 and self.combined_loss_weight == 0:
            raise ValueError("layer_loss_weight and combined_loss_weight cannot both be 0")
        super().validate()


__all__ = ["ZegOTConfig"]
