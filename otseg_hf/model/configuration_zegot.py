"""ZegOT configuration."""

from __future__ import annotations

from transformers import CLIPConfig, PretrainedConfig

from .configuration_base import (
    ZeroShotSegmentationConfigMixin,
    check_int,
    resolve_clip_config,
    resolve_vocabulary,
)

LAYER_COMBINATIONS = ("mean", "last")


class ZegOTConfig(ZeroShotSegmentationConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`ZegOTForSemanticSegmentation`] model. Defaults give the PASCAL VOC inductive setting
    with the design fixed in `spec/zegot.md` (CLIP ViT-B/16 at 512 px, 20 classes, classes 15-19 unseen,
    4 learnable prompts of 8 context tokens, MPOT on the outputs of the last three vision blocks).

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The wrapped, fully frozen CLIP. Defaults to ViT-B/16 at image size 512 with projection 512.
        id2label (`dict[int, str]`, *optional*):
            Class names of the vocabulary, ids 0..K-1. Defaults to the 20 PASCAL VOC classes. `num_labels` alone
            is an error (the model needs names); given with `id2label`, it must equal its length.
        label2id (`dict[str, int]`, *optional*):
            Inverse of `id2label`; derived when not given.
        seen_label_ids (`list[int]`, *optional*):
            Ids of the classes seen in training. `None` means fully supervised. When not given: VOC's seen
            classes 0-14 for the default VOC vocabulary, `None` for any other vocabulary.
        transductive (`bool`, *optional*, defaults to `False`):
            Whether the model is trained transductively (pseudo labels on unseen pixels from the combined
            score map). Needs at least one unseen class.
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
        seen_class_penalty (`float`, *optional*, defaults to 0.0):
            Subtracted from the probabilities of seen classes at inference by the post-processing of inductive
            models. ZegOT uses no calibration unless configured.
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.05):
            Entropic regularisation of the Sinkhorn problems.
        sinkhorn_max_iter (`int`, *optional*, defaults to 100):
            Most Sinkhorn iterations.
        sinkhorn_tol (`float`, *optional*, defaults to 1e-6):
            Sinkhorn stopping tolerance on mean |u - u_prev|.
        sinkhorn_grad_mode (`str`, *optional*, defaults to `"recompute"`):
            How training backpropagates through the Sinkhorn iterations, always exactly: `"recompute"` keeps the
            potentials of every iteration, `"checkpoint"` those of every sqrt(max_iter)-th only (the same
            gradient to the bit, less memory, a slower backward), `"unrolled"` lets autograd record every
            iteration (most memory; for double backward). See `otseg_hf.model.sinkhorn.log_sinkhorn`.
        focal_loss_weight (`float`, *optional*, defaults to 100.0):
            Weight of the sigmoid focal loss of each map.
        dice_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the dice loss of each map.
        focal_alpha (`float`, *optional*, defaults to 0.25):
            Focal loss alpha.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focal loss gamma.
        ignore_index (`int`, *optional*, defaults to 255):
            Label value of pixels without a class.
        inference_window_size (`int`, *optional*, defaults to 512):
            Sliding-window size used by the image processor and evaluation.
        inference_window_stride (`int`, *optional*, defaults to 426):
            Sliding-window stride.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal init of the descriptors' linear layers.

    Example:

    ```python
    >>> from otseg_hf import ZegOTConfig, ZegOTForSemanticSegmentation
    >>> config = ZegOTConfig()  # VOC inductive, random weights
    >>> model = ZegOTForSemanticSegmentation(config)
    ```"""

    model_type = "zegot"
    sub_configs = {"clip_config": CLIPConfig}

    def __init__(
        self,
        clip_config: CLIPConfig | dict | None = None,
        seen_label_ids: list[int] | None | str = "voc_default",
        transductive: bool = False,
        num_text_prompts: int = 4,
        num_context_tokens: int = 8,
        context_init_std: float = 0.02,
        class_name_format: str = "{}.",
        feature_layers: list[int] | tuple[int, ...] = (-3, -2, -1),
        layer_combination: str = "mean",
        layer_loss_weight: float = 1.0,
        combined_loss_weight: float = 1.0,
        seen_class_penalty: float = 0.0,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_max_iter: int = 100,
        sinkhorn_tol: float = 1e-6,
        sinkhorn_grad_mode: str = "recompute",
        focal_loss_weight: float = 100.0,
        dice_loss_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        ignore_index: int = 255,
        inference_window_size: int = 512,
        inference_window_stride: int = 426,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.clip_config = resolve_clip_config(clip_config)
        self.seen_label_ids = resolve_vocabulary(kwargs, seen_label_ids)
        self.transductive = bool(transductive)
        self.num_text_prompts = num_text_prompts
        self.num_context_tokens = num_context_tokens
        self.context_init_std = context_init_std
        self.class_name_format = class_name_format
        self.feature_layers = list(feature_layers)
        self.layer_combination = layer_combination
        self.layer_loss_weight = layer_loss_weight
        self.combined_loss_weight = combined_loss_weight
        self.seen_class_penalty = seen_class_penalty
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.sinkhorn_grad_mode = sinkhorn_grad_mode
        self.focal_loss_weight = focal_loss_weight
        self.dice_loss_weight = dice_loss_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.ignore_index = ignore_index
        self.inference_window_size = inference_window_size
        self.inference_window_stride = inference_window_stride
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate()

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
        self.check_label_setting()
        check_int("num_text_prompts", self.num_text_prompts, 1)
        check_int("num_context_tokens", self.num_context_tokens, 1)
        # the shortest prompt is [SOS] contexts name-token [EOS]
        if self.num_context_tokens + 3 > text.max_position_embeddings:
            raise ValueError(
                f"num_context_tokens ({self.num_context_tokens}) leaves no room for a class name in the "
                f"{text.max_position_embeddings} text positions"
            )
        if not self.context_init_std > 0:
            raise ValueError(f"context_init_std must be > 0, got {self.context_init_std}")
        if not isinstance(self.class_name_format, str) or self.class_name_format.count("{}") != 1:
            raise ValueError(f"class_name_format needs exactly one '{{}}', got {self.class_name_format!r}")
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
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_loss_weight == 0 and self.combined_loss_weight == 0:
            raise ValueError("layer_loss_weight and combined_loss_weight cannot both be 0")
        self.check_solver_loss_and_inference()


__all__ = ["ZegOTConfig"]
