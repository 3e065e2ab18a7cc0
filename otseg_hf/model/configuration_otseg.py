"""OTSeg configuration."""

from __future__ import annotations

from transformers import CLIPConfig, PretrainedConfig

from .configuration_base import (
    VOC_CLASS_NAMES,
    VOC_UNSEEN_LABEL_IDS,
    ZeroShotSegmentationConfigMixin,
    check_int,
    check_prompt_templates,
    resolve_clip_config,
    resolve_vocabulary,
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


class OTSegConfig(ZeroShotSegmentationConfigMixin, PretrainedConfig):
    r"""
    Configuration of an [`OTSegForSemanticSegmentation`] model. Defaults give the PASCAL VOC inductive
    recipe of the OTSeg paper (CLIP ViT-B/16 at 512 px, 20 classes, classes 15-19 unseen).

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The wrapped CLIP. Defaults to ViT-B/16 at image size 512 with projection 512 (not transformers'
            default CLIP, which is ViT-B/32 at 224).
        id2label (`dict[int, str]`, *optional*):
            Class names of the vocabulary, ids 0..K-1. Defaults to the 20 PASCAL VOC classes. `num_labels` alone
            is an error (the model needs names); given with `id2label`, it must equal its length.
        label2id (`dict[str, int]`, *optional*):
            Inverse of `id2label`; derived when not given.
        seen_label_ids (`list[int]`, *optional*):
            Ids of the classes seen in training. `None` means fully supervised (every class seen). When not
            given: VOC's seen classes 0-14 for the default VOC vocabulary, `None` for any other vocabulary.
        transductive (`bool`, *optional*, defaults to `False`):
            Whether the model is trained transductively (self-training on unseen pixels with pseudo labels;
            no seen-class penalty at inference). Needs at least one unseen class.
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
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.05):
            Entropic regularisation of every Sinkhorn problem.
        sinkhorn_max_iter (`int`, *optional*, defaults to 100):
            Most Sinkhorn iterations.
        sinkhorn_tol (`float`, *optional*, defaults to 1e-6):
            Sinkhorn stopping tolerance on mean |u - u_prev|.
        sinkhorn_grad_mode (`str`, *optional*, defaults to `"recompute"`):
            How training backpropagates through the Sinkhorn iterations, always exactly: `"recompute"` keeps the
            potentials of every iteration, `"checkpoint"` those of every sqrt(max_iter)-th only (the same
            gradient to the bit, less memory, a slower backward), `"unrolled"` lets autograd record every
            iteration (most memory; for double backward). See `otseg_hf.model.sinkhorn.log_sinkhorn`.
        matching (`str`, *optional*, defaults to `"sinkhorn"`):
            How pixels are matched to prompts in the MPS path and the decoder: `"sinkhorn"` (optimal transport,
            the paper) or `"softmax"` (plain cross-attention, T = softmax over pixels of S / epsilon divided by N:
            only the prompt marginal holds). `"softmax"` exists for ablations.
        ensemble_weight (`float`, *optional*, defaults to 0.5):
            Weight of the decoder logits in the OTSeg+ ensemble; the score logits get 1 - weight.
        seen_class_penalty (`float`, *optional*, defaults to 0.1):
            Subtracted from the probabilities of seen classes at inference (inductive models).
        focal_loss_weight (`float`, *optional*, defaults to 100.0):
            Weight of the sigmoid focal loss of each path.
        dice_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the dice loss of each path.
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
            Standard deviation of the truncated normal init of the head's linear layers.

    Example:

    ```python
    >>> from otseg_hf import OTSegConfig, OTSegForSemanticSegmentation
    >>> config = OTSegConfig()  # VOC inductive, random weights
    >>> model = OTSegForSemanticSegmentation(config)
    ```"""

    model_type = "otseg"
    sub_configs = {"clip_config": CLIPConfig}

    def __init__(
        self,
        clip_config: CLIPConfig | dict | None = None,
        seen_label_ids: list[int] | None | str = "voc_default",
        transductive: bool = False,
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
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_max_iter: int = 100,
        sinkhorn_tol: float = 1e-6,
        matching: str = "sinkhorn",
        sinkhorn_grad_mode: str = "recompute",
        ensemble_weight: float = 0.5,
        seen_class_penalty: float = 0.1,
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
        self.prompt_templates = list(VOC_PROMPT_TEMPLATES if prompt_templates is None else prompt_templates)
        self.num_visual_prompts = num_visual_prompts
        self.visual_prompt_depth = visual_prompt_depth
        self.visual_prompt_dropout = visual_prompt_dropout
        self.prompt_norm_eps = prompt_norm_eps
        self.num_decoder_layers = num_decoder_layers
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_dropout = decoder_dropout
        self.attention_dropout = attention_dropout
        self.decoder_layer_norm_eps = decoder_layer_norm_eps
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.matching = matching
        self.sinkhorn_grad_mode = sinkhorn_grad_mode
        self.ensemble_weight = ensemble_weight
        self.seen_class_penalty = seen_class_penalty
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
        """The texts the tokenizer gets per class, each with one `{}` for the name: the N prompt templates.
        `OTSegProcessor(prompt_templates=config.tokenizer_templates)` makes the `input_ids` this model reads."""
        return list(self.prompt_templates)

    # -- checks -------------------------------------------------------------------------------------
    def validate(self):
        """Raise `ValueError` naming the first invalid field."""
        vision = self.clip_config.vision_config
        self.check_label_setting()
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
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name in ("prompt_norm_eps", "decoder_layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.matching not in ("sinkhorn", "softmax"):
            raise ValueError(f"matching must be 'sinkhorn' or 'softmax', got {self.matching!r}")
        if not 0.0 <= self.ensemble_weight <= 1.0:
            raise ValueError(f"ensemble_weight must be in [0, 1], got {self.ensemble_weight}")
        self.check_solver_loss_and_inference()


__all__ = ["OTSegConfig", "VOC_CLASS_NAMES", "VOC_PROMPT_TEMPLATES", "VOC_UNSEEN_LABEL_IDS"]
