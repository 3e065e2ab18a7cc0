"""Model parts shared by OTSeg and ZegOT: the relationship descriptor, the Sinkhorn options and the multi-prompt
Sinkhorn (MPS / MPOT) score map (spec sections 3, 4 and 6), CLIP's vision embeddings with the reference's position
resizing, and `ZeroShotSegmentationPreTrainedModel`, the base class of both models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

from .processing_otseg import load_tokenizer
from .sinkhorn import log_sinkhorn


class RelationshipDescriptor(nn.Module):
    """Class queries from text and image: `Linear(2D -> D)([g * t, t])` (spec section 3).

    Args:
        dim (`int`): joint embedding size D.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, global_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) image embeddings, (K, N, D) prompt embeddings -> (B, K, N, D) queries."""
        text = text_embeds.unsqueeze(0).expand(global_embeds.shape[0], -1, -1, -1)  # (B, K, N, D)
        image_text = global_embeds[:, None, None, :] * text
        return self.proj(torch.cat([image_text, text], dim=-1))


@dataclass(frozen=True)
class SinkhornOptions:
    """How the score map and the decoder solve their transport problems (the config's `sinkhorn_*` fields).

    Attributes:
        epsilon: entropic regularisation.
        max_iter: most iterations.
        tol: stopping tolerance on mean |u - u_prev|.
        grad_mode: `log_sinkhorn`'s backward (`"recompute"`, `"checkpoint"` or `"unrolled"`).
        matching: `"sinkhorn"`, or `"softmax"` for the ablation without transport.
        per_image_stopping: each image's K class problems stop together on their own mean error (inference:
            batch invariant, as the reference's one image at a time); `False` is the batch-wide rule (training).
    """

    epsilon: float
    max_iter: int = 100
    tol: float = 1e-6
    grad_mode: str = "recompute"
    matching: str = "sinkhorn"
    per_image_stopping: bool = False

    @classmethod
    def from_config(cls, config, per_image_stopping: bool = False) -> SinkhornOptions:
        return cls(
            epsilon=config.sinkhorn_epsilon,
            max_iter=config.sinkhorn_max_iter,
            tol=config.sinkhorn_tol,
            grad_mode=config.sinkhorn_grad_mode,
            matching=getattr(config, "matching", "sinkhorn"),
            per_image_stopping=per_image_stopping,
        )


def sinkhorn_similarity_map(
    pixel_embeds: torch.Tensor, prompt_embeds: torch.Tensor, options: SinkhornOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal-transport matching of pixels to each class's prompts (spec sections 4 and 5.2-5.3).

    For every image b and class k, the cosine similarities S (M pixels x N prompts) define the cost
    1 - S of an entropic OT problem with uniform marginals 1/M and 1/N; the class map is
    `M * N * sum_n T * S`. With `options.matching == "softmax"` (the ablation without transport),
    T = softmax over the pixels of S / epsilon, divided by N (each prompt's column sums to 1/N, the pixel
    marginal is free).

    Args:
        pixel_embeds: (B, M, D) L2-normalised pixel embeddings.
        prompt_embeds: (B, K, N, D) L2-normalised prompt embeddings.
        options: the solver's settings.

    Returns:
        The map (B, K, M) and the plan (B, K, M, N).
    """
    batch, num_classes, num_prompts, _ = prompt_embeds.shape
    num_pixels = pixel_embeds.shape[1]
    similarity = torch.einsum("bmd,bknd->bkmn", pixel_embeds, prompt_embeds)
    if options.matching == "softmax":
        plan = torch.softmax(similarity.float() / options.epsilon, dim=2) / num_prompts  # (B, K, M, N)
    else:
        plan = log_sinkhorn(
            (1 - similarity).flatten(0, 1),  # 'b k m n -> (b k) m n': image-major, so image b is group b
            options.epsilon,
            max_iter=options.max_iter,
            tol=options.tol,
            grad_mode=options.grad_mode,
            stop_groups=batch if options.per_image_stopping else None,
        )  # (B K, M, N)
        plan = plan.view(batch, num_classes, num_pixels, num_prompts)
    score = (plan * similarity).sum(-1) * (num_pixels * num_prompts)  # (B, K, M)
    return score.to(pixel_embeds.dtype), plan


def multi_prompt_sinkhorn_score(
    pixel_embeds: torch.Tensor, queries: torch.Tensor, options: SinkhornOptions
) -> torch.Tensor:
    """The MPS score map (spec section 4): (B, M, D) pixels, (B, K, N, D) queries -> (B, K, M)."""
    score, _ = sinkhorn_similarity_map(pixel_embeds, F.normalize(queries, dim=-1), options)
    return score


class ZeroShotCLIPVisionEmbeddings(CLIPVisionEmbeddings):
    """CLIP's vision embeddings (the same weights and keys) that can also embed an image of any grid the
    reference's way: the position table resized bilinearly to the image's grid (spec section 2.3).

    Both models call this module rather than reading its weights, so hooks on the module (accelerate's
    offloading and `device_map` loading) see every use: the patch and position embeddings are called as
    modules and the class embedding is read inside this `forward`. Called as CLIP calls it, it is CLIP's.
    """

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        *,
        resized_positions: bool = False,
        class_embedding_twice: bool = False,
    ) -> torch.Tensor:
        """`resized_positions=False`: CLIP's forward. Otherwise (B, 3, H, W) -> (B, 1 + M, Cv): the class token
        `c + p_0` (`c + (p_0 + c)` with `class_embedding_twice`, the OTSeg reference's quirk) then the patches
        plus the resized positions."""
        if not resized_positions:
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, Cv, h, w)
        height, width = patches.shape[-2:]
        ids = torch.arange(self.num_positions, device=patches.device)
        positions = resize_position_embeddings(self.position_embedding(ids), height, width)  # (1 + M, Cv)
        cls = self.class_embedding + positions[0]
        if class_embedding_twice:
            cls = self.class_embedding + cls
        patches = patches.flatten(2).transpose(1, 2)  # 'b c h w -> b (h w) c'
        return torch.cat([cls.expand(patches.shape[0], 1, -1), patches + positions[1:]], dim=1)


@dataclass
class VisionRecord:
    """What a vision pass records when asked (`output_hidden_states` / `output_attentions`): the input of every
    vision layer as the layer sees it (visual prompts included) then the last layer's output, and each layer's
    attention weights (B, heads, T, T) (eager attention only)."""

    hidden_states: list[torch.Tensor] | None = field(default=None)
    attentions: list[torch.Tensor] | None = field(default=None)


ALIGNMENT = 64  # bytes: torch's CPU allocator's alignment


def _align_cpu_tensors(model: nn.Module) -> None:
    """Copy every CPU parameter and buffer whose data does not start on a 64-byte boundary into memory that
    does (torch's own allocation), in place, keeping tensors that share memory shared.

    transformers 5.x with safetensors >= 0.8 can load CPU weights into buffers at an offset of 4 bytes from that
    boundary, and the CPU matrix kernels then take another path whose sums round differently (about 1e-7
    relative): the same weights would give other logits after `save_pretrained` / `from_pretrained` than
    before. Offloaded weights (on the "meta" device) are realigned where accelerate's hooks keep them in CPU
    memory (`OffloadedWeightsLoader.state_dict`); those it reads from the weights file at every forward cannot be."""
    copies: dict[int, torch.Tensor] = {}

    def aligned(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "cpu" or tensor.data_ptr() % ALIGNMENT == 0:
            return tensor
        return copies.setdefault(tensor.data_ptr(), tensor.detach().clone())

    for module in model.modules():
        weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        in_memory = getattr(getattr(weights_map, "dataset", None), "state_dict", None)
        if isinstance(in_memory, dict):
            for name, tensor in in_memory.items():
                if isinstance(tensor, torch.Tensor):
                    in_memory[name] = aligned(tensor)
        for store in (module._parameters, module._buffers):
            for name, tensor in store.items():
                copy = tensor if tensor is None else aligned(tensor)
                if copy is tensor:
                    continue
                if isinstance(tensor, nn.Parameter):
                    tensor.data = copy
                else:
                    store[name] = copy


class ZeroShotSegmentationPreTrainedModel(PreTrainedModel):
    """Base class of the models that wrap a frozen `CLIPModel` as `self.clip` and segment a vocabulary of class
    names (OTSeg and ZegOT).

    It holds what both share: the `PreTrainedModel` attributes, `from_clip`, a `from_pretrained` that freezes
    `model.clip` again (transformers' loader replaces every loaded tensor by a new parameter that requires
    gradients, which would silently make the whole CLIP trainable), the vocabulary change, the text-embedding
    and text-cache checks, the text token embeddings as the input embeddings, the initialisation of CLIP's
    weights that CLIP's own `_init_weights` leaves out, and the vision pass through CLIP's modules (patch and
    resized position embeddings, every encoder layer called as a module, hidden states and attentions recorded
    on request). Subclasses set `config_class`, build `self.clip` with `_build_clip` and end with `post_init()`.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = [
        "CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings", "ZeroShotCLIPVisionEmbeddings"
    ]  # fmt: skip
    _supports_sdpa = True
    _supports_flash_attn = False
    supports_gradient_checkpointing = True  # CLIP's encoder layers recompute in training (GradientCheckpointingLayer)
    class_embedding_twice = False  # OTSeg's reference adds the class embedding twice to the CLS token

    @staticmethod
    def _build_clip(config) -> CLIPModel:
        """The wrapped CLIP of `config.clip_config`, frozen, with [`ZeroShotCLIPVisionEmbeddings`] (same weights)."""
        clip = CLIPModel(config.clip_config)
        clip.vision_model.embeddings = ZeroShotCLIPVisionEmbeddings(config.clip_config.vision_config)
        return clip.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module):
        """Our Linear and LayerNorm layers, and CLIP's `logit_scale`, which CLIP sets in its constructor only (so a
        model built on the meta device would keep it uninitialised). Every other CLIP weight is dispatched by
        transformers to CLIP's own `_init_weights`; `transformers.initialization` skips loaded tensors, so loading
        a pretrained CLIP never re-initialises it. Subclasses add their own modules and buffers."""
        from transformers import initialization as init

        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ZeroShotSegmentationPreTrainedModel):
            init.constant_(module.clip.logit_scale, self.config.clip_config.logit_scale_init_value)
            init.zeros_(module.class_text_embeds)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' `from_pretrained`, then: `model.clip` frozen again, CPU weights moved to aligned memory
        (`_align_cpu_tensors`: a loaded model's logits are the saved model's to the bit), and a folder with
        missing weights (transformers would initialise them at random and only print a report) or with NaN /
        infinite weights is a `ValueError` naming the tensors."""
        from safetensors import SafetensorError

        want_info = kwargs.pop("output_loading_info", False)
        where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except SafetensorError as error:
            raise ValueError(f"{where}: the weights file is damaged or cut short ({error})") from None
        model.clip.requires_grad_(False)
        _align_cpu_tensors(model)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        offloaded = any(p.device.type == "meta" for p in model.parameters())  # device_map / offloading hooks
        if isinstance(dtype, torch.dtype) and not offloaded and any(p.dtype != dtype for p in model.parameters()):
            model.to(dtype)  # the nested clip_config may pin float32: one dtype for the whole model, as asked
            clip_config = model.config.clip_config  # and the configs say so (CLIP's text/vision ones kept float32)
            for config in (model.config, clip_config, clip_config.text_config, clip_config.vision_config):
                config.dtype = dtype
        missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("position_ids"))
        if missing:
            raise ValueError(
                f"{where} lacks {len(missing)} weight(s) of {cls.__name__}: {_first(missing)}; the folder is "
                "damaged or of another model (they would be random): save it again or convert the checkpoint again"
            )
        bad = [name for name, tensor in model.state_dict().items()
               if tensor.is_floating_point() and tensor.device.type != "meta"
               and not bool(torch.isfinite(tensor).all())]  # fmt: skip (offloaded tensors are on "meta")
        if bad:
            raise ValueError(f"{where} holds NaN or infinite weights in {_first(bad)}: the weights are damaged")
        return (model, info) if want_info else model

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path,
        class_names: list[str],
        seen_label_ids: list[int] | None = None,
        transductive: bool = False,
        tokenizer=None,
        image_size: int = 512,
        **config_overrides,
    ):
        """Build the model around a pretrained CLIP: its weights copied, the position table resized bilinearly
        to the grid of `image_size` (spec section 2.3), the head initialised, the text cache of `class_names`.

        Args:
            clip_name_or_path: a Hub id or a local directory made by `CLIPModel.save_pretrained`, or a
                `CLIPModel` instance (then `tokenizer` is required).
            class_names: the vocabulary.
            seen_label_ids: ids of the seen classes; `None` for fully supervised.
            transductive: the transductive setting.
            tokenizer: a CLIP tokenizer; loaded from `clip_name_or_path` if not given.
            image_size: training crop size.
            **config_overrides: other fields of the model's config class.
        """
        if isinstance(clip_name_or_path, CLIPModel):
            clip = clip_name_or_path
            if tokenizer is None:
                raise ValueError("pass tokenizer= when giving a CLIPModel instance")
        else:
            clip = CLIPModel.from_pretrained(clip_name_or_path)
        if tokenizer is None:
            tokenizer = load_tokenizer(clip_name_or_path, missing="pass tokenizer= (a CLIPTokenizer)")
        clip_config = clip.config.to_dict()
        clip_config["vision_config"]["image_size"] = image_size
        config = cls.config_class(
            clip_config=clip_config,
            id2label=dict(enumerate(class_names)),
            seen_label_ids=seen_label_ids,
            transductive=transductive,
            **config_overrides,
        )
        model = cls(config)
        state = {k: v for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
        key = "vision_model.embeddings.position_embedding.weight"
        grid = image_size // config.clip_config.vision_config.patch_size
        state[key] = resize_position_embeddings(state[key], grid, grid)
        missing, unexpected = model.clip.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"CLIP weights do not match: missing {missing}, unexpected {unexpected}")
        model.set_class_names(class_names, tokenizer, seen_label_ids=seen_label_ids)
        return model

    # -- transformers conventions ----------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        """The text token embeddings of the wrapped CLIP (frozen; the vocabulary is text)."""
        return self.clip.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.clip.text_model.embeddings.token_embedding = value

    def get_class_text_embeds(self) -> torch.Tensor:
        """The (K, N, D) class text embeddings of `config.id2label` the model segments with (the cache)."""
        return self.class_text_embeds

    # -- vocabulary ------------------------------------------------------------------------------------
    def _vocabulary_config(self, class_names: list[str], seen_label_ids: list[int] | None | str):
        """The config of a new vocabulary, validated (names, seen ids, the setting) before anything changes.
        `seen_label_ids="by_name"`: the names seen in the old vocabulary stay seen (None stays None)."""
        if seen_label_ids == "by_name":
            if self.config.seen_label_ids is None:
                seen_label_ids = None
            else:
                seen_names = {self.config.id2label[i] for i in self.config.seen_label_ids}
                seen_label_ids = [i for i, name in enumerate(class_names) if name in seen_names]
        new_config = self.config.to_dict()
        new_config.update(id2label=dict(enumerate(class_names)), label2id=None, seen_label_ids=seen_label_ids)
        new_config.pop("num_labels", None)
        return type(self.config).from_dict(new_config)

    def _adopt_vocabulary(self, checked) -> None:
        """Take the class names and seen ids of a config made by `_vocabulary_config`."""
        self.config.id2label = checked.id2label
        self.config.label2id = checked.label2id
        self.config.seen_label_ids = checked.seen_label_ids

    def _check_text_embeds(self, text_embeds: torch.Tensor) -> None:
        """Raise `ValueError` unless `text_embeds` is (num_classes, num_prompts, projection_dim)."""
        dim = self.config.projection_dim
        if (
            not isinstance(text_embeds, torch.Tensor)
            or text_embeds.dim() != 3
            or text_embeds.shape[-1] != dim
        ):
            shape = tuple(text_embeds.shape) if isinstance(text_embeds, torch.Tensor) else type(text_embeds)
            raise ValueError(f"text_embeds must have shape (num_classes, num_prompts, {dim}), got {shape}")
        if text_embeds.shape[0] == 0 or text_embeds.shape[1] == 0:
            raise ValueError(
                f"text_embeds {tuple(text_embeds.shape)} has no classes or no prompts: it needs at least one of each"
            )
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(text_embeds).all()):
            raise ValueError("text_embeds holds NaN or infinite values")

    def _check_text_cache(self) -> None:
        """Raise `ValueError` if the class text embeddings were never computed (all zeros); checked once."""
        message = (
            "the class text embeddings are not computed: call model.set_class_names(names, tokenizer), "
            f"build the model with {type(self).__name__}.from_clip, or pass text_embeds"
        )
        if torch.compiler.is_compiling():  # no host read in a compiled graph: an assertion in it, every call
            # (reading `_text_cache_checked` here makes the first eager call recompile the compiled model)
            torch._assert_async(self.class_text_embeds.abs().sum() > 0, message)
            return
        if getattr(self, "_text_cache_checked", False):
            return
        if not bool(self.class_text_embeds.abs().sum() > 0):
            raise ValueError(message)
        self._text_cache_checked = True

    # -- vision ----------------------------------------------------------------------------------------
    def _embed_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) -> CLIP's embeddings with positions resized to the grid, after ln_pre (B, 1 + M, Cv), and
        the grid (h, w)."""
        vision = self.clip.vision_model
        hidden = vision.embeddings(
            pixel_values, resized_positions=True, class_embedding_twice=self.class_embedding_twice
        )
        patch = self.config.clip_config.vision_config.patch_size
        return vision.pre_layrnorm(hidden), (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)

    def _run_vision_layers(self, hidden: torch.Tensor, before_layer=None, record: VisionRecord | None = None):
        """Run CLIP's vision encoder layers, each called as a module (hooks and gradient checkpointing see it).

        Args:
            hidden: (B, T, Cv) input of the first layer.
            before_layer: `f(index, hidden) -> hidden` applied before layer `index` (the visual prompts), or None.
            record: filled with the hidden states and attentions it asks for.

        Returns:
            The output of every layer, a list of (B, T_i, Cv).
        """
        layers = self.clip.vision_model.encoder.layers
        hooks = []
        if record is not None and record.attentions is not None:
            if self.config.clip_config.vision_config._attn_implementation != "eager":
                raise ValueError(
                    "output_attentions needs eager attention: load or build the model with "
                    "attn_implementation='eager'"
                )
            hooks = [
                layer.self_attn.register_forward_hook(lambda _m, _i, out: record.attentions.append(out[1]))
                for layer in layers
            ]
        outputs = []
        try:
            for index, layer in enumerate(layers):
                if before_layer is not None:
                    hidden = before_layer(index, hidden)
                if record is not None and record.hidden_states is not None:
                    record.hidden_states.append(hidden)
                hidden = layer(hidden, None)
                outputs.append(hidden)
        finally:
            for hook in hooks:
                hook.remove()
        if record is not None and record.hidden_states is not None:
            record.hidden_states.append(hidden)
        return outputs

    def _vision_record(self, output_hidden_states: bool | None, output_attentions: bool | None) -> VisionRecord:
        """What to record, `None` arguments falling back to the config as transformers models do."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return VisionRecord(
            hidden_states=[] if output_hidden_states else None, attentions=[] if output_attentions else None
        )


def _first(names: list[str], count: int = 5) -> str:
    return ", ".join(names[:count]) + (f" and {len(names) - count} more" if len(names) > count else "")


def check_pixel_values(pixel_values: torch.Tensor, vision_config, labels: torch.Tensor | None = None) -> None:
    """Raise `ValueError` unless `pixel_values` is a non-empty float (B, C, H, W) batch of finite values with H, W
    positive multiples of the patch size (and `labels`, if given, one (H', W') map per image)."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
        raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}")
    batch, channels, height, width = pixel_values.shape
    if batch == 0:
        raise ValueError("pixel_values is an empty batch (batch size 0)")
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be float (normalised images, as the image processor gives), got {pixel_values.dtype}"
        )
    if channels != vision_config.num_channels:
        raise ValueError(f"pixel_values must have {vision_config.num_channels} channels, got {channels}")
    patch = vision_config.patch_size
    if height < patch or width < patch:
        raise ValueError(f"images must be at least one patch ({patch}x{patch}) large, got {height}x{width}")
    if height % patch or width % patch:
        raise ValueError(
            f"image height and width must be multiples of the patch size {patch}, got {height}x{width}; "
            "resize or pad them (the image processor does)"
        )
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.dim() != 3 or len(labels) != batch):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape (batch, height, width) with batch {batch}, got {shape}")
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(pixel_values).all()):
        raise ValueError("pixel_values holds NaN or infinite values: check the images")


def resize_position_embeddings(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a (1 + S*S, C) CLIP position table to (1 + height*width, C): bilinear, align_corners=False,
    class position unchanged (spec section 2.3). The table itself is returned when no resize is needed."""
    size = math.isqrt(table.shape[0] - 1)
    if size * size != table.shape[0] - 1:
        raise ValueError(f"position embeddings of {table.shape[0]} rows are not 1 + a square grid")
    if (height, width) == (size, size):
        return table
    spatial = table[1:].reshape(1, size, size, -1).permute(0, 3, 1, 2).float()  # (1, C, S, S)
    spatial = F.interpolate(spatial, size=(height, width), mode="bilinear", align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(height * width, -1).to(table.dtype)
    return torch.cat([table[:1], spatial], dim=0)


__all__ = [
    "RelationshipDescriptor",
    "SinkhornOptions",
    "VisionRecord",
    "ZeroShotCLIPVisionEmbeddings",
    "ZeroShotSegmentationPreTrainedModel",
    "multi_prompt_sinkhorn_score",
    "sinkhorn_similarity_map",
]
