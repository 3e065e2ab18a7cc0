"""An `OTSegConfig` read off a reference checkpoint's tensor shapes.

Sizes (widths, layer counts, number and depth of the visual prompts, position grid, decoder FFN size) are read
from the tensors' shapes. Attention head counts cannot be read from shapes: like OpenAI's CLIP, we take
width / 64 (`head_dim`).
"""

from __future__ import annotations

import math
import re

import torch
from transformers import CLIPConfig

from ..model.configuration_otseg import VOC_PROMPT_TEMPLATES, OTSegConfig
from .keys import ReferenceCheckpointError, has_text_tower


# ----------------------------------------------------------------------------------------------------
# sizes from shapes
# ----------------------------------------------------------------------------------------------------
def _layer_count(state_dict: dict, pattern: str, where: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    if not indices:
        return 0
    expected = set(range(max(indices) + 1))
    if indices != expected:
        raise ReferenceCheckpointError(f"{where}: layer(s) {sorted(expected - indices)} missing")
    return len(indices)


def _get(state_dict: dict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ReferenceCheckpointError(f"missing key {key!r}")
    value = state_dict[key]
    if not isinstance(value, torch.Tensor):
        raise ReferenceCheckpointError(f"entry {key!r} is a {type(value).__name__}, expected a tensor")
    return value


def _heads(width: int, head_dim: int, where: str) -> int:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ReferenceCheckpointError(f"head_dim must be a positive integer (--head-dim), got {head_dim!r}")
    if width % head_dim:
        raise ReferenceCheckpointError(f"{where} width {width} is not a multiple of head_dim={head_dim}")
    return width // head_dim


def text_config_from_openai(state_dict: dict, prefix: str = "text_encoder.", head_dim: int = 64) -> dict:
    """A `CLIPTextConfig` dict for an OpenAI-layout text tower (`prefix` "text_encoder." or "").

    Special tokens follow OpenAI's vocabulary: <|startoftext|> = vocab - 2, <|endoftext|> = vocab - 1
    (the largest id, which OpenAI pools at); padding uses <|endoftext|> like transformers' CLIPTokenizer.
    """
    vocab_size, width = _get(state_dict, f"{prefix}token_embedding.weight").shape
    num_layers = _layer_count(
        state_dict, rf"^{re.escape(prefix)}transformer\.resblocks\.(\d+)\.", "text tower"
    )
    if num_layers == 0:
        raise ReferenceCheckpointError(
            f"missing key {prefix + 'transformer.resblocks.0.attn.in_proj_weight'!r}"
        )
    return dict(
        vocab_size=int(vocab_size),
        hidden_size=int(width),
        intermediate_size=int(_get(state_dict, f"{prefix}transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        projection_dim=int(_get(state_dict, f"{prefix}text_projection").shape[1]),
        num_hidden_layers=num_layers,
        num_attention_heads=_heads(int(width), head_dim, "text"),
        max_position_embeddings=int(_get(state_dict, f"{prefix}positional_embedding").shape[0]),
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=int(vocab_size) - 2,
        eos_token_id=int(vocab_size) - 1,
        pad_token_id=int(vocab_size) - 1,
    )


def infer_config(
    reference_state_dict: dict[str, torch.Tensor],
    class_names: list[str],
    seen_label_ids: list[int] | None = None,
    transductive: bool = False,
    prompt_templates: list[str] | None = None,
    text_config: dict | None = None,
    head_dim: int = 64,
    **config_overrides,
) -> OTSegConfig:
    """The `OTSegConfig` of a reference checkpoint, sizes read from its tensors.

    Args:
        reference_state_dict: the checkpoint's state dict.
        class_names: the vocabulary, ids 0..K-1.
        seen_label_ids: seen class ids; `None` for fully supervised.
        transductive: the transductive setting.
        prompt_templates: text templates (N of them); VOC's six when not given.
        text_config: `CLIPTextConfig` fields, needed when the checkpoint has no text tower.
        head_dim: attention head size of both towers (OpenAI CLIP: 64).
        **config_overrides: other `OTSegConfig` fields (e.g. the inference window).
    """
    sd = reference_state_dict
    class_embedding = _get(sd, "backbone.class_embedding")
    width = int(class_embedding.shape[0])
    conv = _get(sd, "backbone.conv1.weight")
    if conv.dim() != 4 or conv.shape[-1] != conv.shape[-2]:
        raise ReferenceCheckpointError(f"key 'backbone.conv1.weight' has shape {tuple(conv.shape)}")
    patch = int(conv.shape[-1])
    positions = int(_get(sd, "backbone.positional_embedding").shape[0])
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1 or grid == 0:
        raise ReferenceCheckpointError(
            f"key 'backbone.positional_embedding' has {positions} rows, not 1 + a square grid"
        )
    num_layers = _layer_count(sd, r"^backbone\.transformer\.resblocks\.(\d+)\.", "backbone")
    if num_layers == 0:
        raise ReferenceCheckpointError("missing key 'backbone.transformer.resblocks.0.attn.in_proj_weight'")
    projection_dim = int(_get(sd, "backbone.proj").shape[1])
    prompts = _get(sd, "backbone.prompt_embeddings")
    if prompts.dim() != 3:
        raise ReferenceCheckpointError(f"key 'backbone.prompt_embeddings' has shape {tuple(prompts.shape)}")
    depth = (
        int(sd["backbone.deep_prompt_embeddings"].shape[0]) if "backbone.deep_prompt_embeddings" in sd else 0
    )
    num_decoder_layers = _layer_count(sd, r"^decode_head\.decoder_1\.layers\.(\d+)\.", "decode_head")
    if num_decoder_layers == 0:
        raise ReferenceCheckpointError("missing key 'decode_head.decoder_1.layers.0.multihead_attn.q.weight'")
    ffn_key = "decode_head.decoder_1.layers.0.linear1.weight"
    decoder_ffn_dim = int(_get(sd, ffn_key).shape[0]) if num_decoder_layers > 1 else 4 * projection_dim

    if has_text_tower(sd):
        text_config = text_config_from_openai(sd, "text_encoder.", head_dim)
    elif text_config is None:
        raise ReferenceCheckpointError(
            "the checkpoint has no text encoder (text_encoder.*): pass text_config from the CLIP that provides it"
        )
    text_config = {**text_config, "projection_dim": projection_dim}
    vision_config = dict(
        hidden_size=width,
        intermediate_size=int(_get(sd, "backbone.transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        projection_dim=projection_dim,
        num_hidden_layers=num_layers,
        num_attention_heads=_heads(width, head_dim, "vision"),
        num_channels=int(conv.shape[1]),
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    clip_config = CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=projection_dim
    )
    return OTSegConfig(
        clip_config=clip_config.to_dict(),
        id2label=dict(enumerate(class_names)),
        seen_label_ids=seen_label_ids,
        transductive=transductive,
        prompt_templates=list(prompt_templates or VOC_PROMPT_TEMPLATES),
        num_visual_prompts=int(prompts.shape[1]),
        visual_prompt_depth=depth,
        num_decoder_layers=num_decoder_layers,
        decoder_ffn_dim=decoder_ffn_dim,
        **config_overrides,
    )
