"""Model parts shared by OTSeg and ZegOT: the relationship descriptor and the multi-prompt Sinkhorn
(MPS / MPOT) score map (spec sections 3, 4 and 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


def sinkhorn_similarity_map(
    pixel_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    epsilon: float,
    max_iter: int = 100,
    tol: float = 1e-6,
    matching: str = "sinkhorn",
    grad_mode: str = "recompute",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal-transport matching of pixels to each class's prompts (spec sections 4 and 5.2-5.3).

    For every image b and class k, the cosine similarities S (M pixels x N prompts) define the cost
    1 - S of an entropic OT problem with uniform marginals 1/M and 1/N; the class map is
    `M * N * sum_n T * S`.

    Args:
        pixel_embeds: (B, M, D) L2-normalised pixel embeddings.
        prompt_embeds: (B, K, N, D) L2-normalised prompt embeddings.
        matching: `"sinkhorn"`, or `"softmax"` for the ablation without transport: T = softmax over the pixels
            of S / epsilon, divided by N (each prompt's column sums to 1/N, the pixel marginal is free).
        grad_mode: `log_sinkhorn`'s backward (`"recompute"`, `"checkpoint"` or `"unrolled"`).

    Returns:
        The map (B, K, M) and the plan (B, K, M, N).
    """
    batch, num_classes, num_prompts, _ = prompt_embeds.shape
    num_pixels = pixel_embeds.shape[1]
    similarity = torch.einsum("bmd,bknd->bkmn", pixel_embeds, prompt_embeds)
    if matching == "softmax":
        plan = torch.softmax(similarity.float() / epsilon, dim=2) / num_prompts  # (B, K, M, N)
    else:
        plan = log_sinkhorn(
            (1 - similarity).flatten(0, 1), epsilon, max_iter=max_iter, tol=tol, grad_mode=grad_mode
        )  # (B K, M, N)
        plan = plan.view(batch, num_classes, num_pixels, num_prompts)
    score = (plan * similarity).sum(-1) * (num_pixels * num_prompts)  # (B, K, M)
    return score.to(pixel_embeds.dtype), plan


def multi_prompt_sinkhorn_score(
    pixel_embeds: torch.Tensor,
    queries: torch.Tensor,
    epsilon: float,
    max_iter: int = 100,
    tol: float = 1e-6,
    matching: str = "sinkhorn",
    grad_mode: str = "recompute",
) -> torch.Tensor:
    """The MPS score map (spec section 4): (B, M, D) pixels, (B, K, N, D) queries -> (B, K, M)."""
    queries = F.normalize(queries, dim=-1)
    score, _ = sinkhorn_similarity_map(pixel_embeds, queries, epsilon, max_iter, tol, matching, grad_mode)
    return score


__all__ = ["RelationshipDescriptor", "multi_prompt_sinkhorn_score", "sinkhorn_similarity_map"]


class FrozenCLIPMixin:
    """For models that wrap a frozen `CLIPModel` as `self.clip` and segment a vocabulary of class names (OTSeg
    and ZegOT): the `PreTrainedModel` attributes they share, `from_clip`, a `from_pretrained` that freezes
    `model.clip` again (transformers' loader replaces every loaded tensor by a new parameter that requires
    gradients, which would silently make the whole CLIP trainable), and the vocabulary and input checks."""

    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives a tuple
        model.clip.requires_grad_(False)
        return loaded

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
        from transformers import AutoTokenizer, CLIPModel

        if isinstance(clip_name_or_path, CLIPModel):
            clip = clip_name_or_path
            if tokenizer is None:
                raise ValueError("pass tokenizer= when giving a CLIPModel instance")
        else:
            clip = CLIPModel.from_pretrained(clip_name_or_path)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"no tokenizer found at {clip_name_or_path!r}; pass tokenizer= (a CLIPTokenizer)"
                ) from error
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

    def _check_text_cache(self) -> None:
        """Raise `ValueError` if the class text embeddings were never computed (all zeros); checked once."""
        if getattr(self, "_text_cache_checked", False):
            return
        if not bool(self.class_text_embeds.abs().sum() > 0):
            raise ValueError(
                "the class text embeddings are not computed: call model.set_class_names(names, tokenizer), "
                f"build the model with {type(self).__name__}.from_clip, or pass text_embeds"
            )
        self._text_cache_checked = True

    def _embed_patches(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """CLIP's patch embedding and its position table for the image's grid (bilinearly resized, spec
        section 2.3): (B, 3, H, W) -> patches (B, M, Cv), positions (1 + M, Cv) (CLS first), grid (h, w)."""
        embeddings = self.clip.vision_model.embeddings
        patches = embeddings.patch_embedding(pixel_values.to(embeddings.patch_embedding.weight.dtype))
        height, width = patches.shape[-2:]
        positions = resize_position_embeddings(embeddings.position_embedding.weight, height, width)
        return patches.flatten(2).transpose(1, 2), positions, (height, width)


def check_pixel_values(pixel_values: torch.Tensor, vision_config) -> None:
    """Raise `ValueError` unless `pixel_values` is (B, C, H, W) with H, W positive multiples of the patch size."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
        raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}")
    _, channels, height, width = pixel_values.shape
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
