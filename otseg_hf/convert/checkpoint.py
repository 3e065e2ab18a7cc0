"""Convert the OTSeg authors' mmsegmentation checkpoints (and OpenAI CLIP weights) to `otseg_hf`.

    python -m otseg_hf.convert.checkpoint --checkpoint voc_inductive.pth --dataset voc \\
        --setting inductive --text-embeddings voc12_otseg.npy --out otseg-vit-b16-voc-inductive

writes a Hub-ready folder (`otseg_hf.hub.folders.save_otseg_folder`): safetensors + config, the image processor of the
dataset's test protocol, the tokenizer and processor when a CLIP tokenizer is at hand (`--tokenizer`, or a
transformers CLIP folder as `--clip`), the code for `trust_remote_code` and a model card. It loads with
`OTSegForSemanticSegmentation.from_pretrained` and both pipelines.

The reference layout is described in spec section 12. Every reference tensor is mapped, except a
fixed list of parameters that never influence an output (`dropped_reference_keys`); any other
unmatched or missing key and any shape mismatch is a `ReferenceCheckpointError` (a `ValueError`)
naming the key. The mapping is exact and invertible (`to_reference_state_dict`).

Sizes (widths, layer counts, number and depth of the visual prompts, position grid, decoder FFN
size) are read from the tensors' shapes. Attention head counts cannot be read from shapes: like
OpenAI's CLIP, we take width / 64 (`head_dim`).

Reading files safely:
- reference `.pth`: `torch.load(weights_only=True)`; numpy scalars/arrays that mmcv may leave in
  the checkpoint's `meta` are allowed, nothing else outside torch's allow-list.
- OpenAI CLIP `.pt`: a TorchScript archive. `torch.jit.load` has no safe mode (a TorchScript
  model is a program, see PyTorch's SECURITY.md and pytorch/pytorch#143403), and
  `torch.load(weights_only=True)` refuses TorchScript archives. We therefore read the archive's
  `data.pkl` with a restricted unpickler that only rebuilds tensors and inert attribute holders:
  no TorchScript code is compiled or run, no Python global outside a short allow-list is resolved.
- transformers CLIP folder: `CLIPModel.from_pretrained` (safetensors, or torch's weights-only load).
- text embeddings `.npy`: `numpy.load(allow_pickle=False)`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig

from ..data.splits import DATASETS
from ..hub.folders import default_image_processor, save_otseg_folder
from ..model.configuration_otseg import CONTEXT_PROMPT_TEMPLATES, VOC_PROMPT_TEMPLATES, OTSegConfig
from ..model.image_processing_otseg import OTSegImageProcessor
from ..model.modeling_otseg import OTSegForSemanticSegmentation
from ..model.processing_otseg import load_tokenizer

# SHA-256 of OpenAI's ViT-B/16 file (it is part of OpenAI's download URL; the `clip` package checks it)
OPENAI_VIT_B16_SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"

SETTINGS = ("inductive", "transductive", "fully-supervised")


class ReferenceCheckpointError(ValueError):
    """A file or state dict is not what the conversion expects; the message says what and where."""


# ----------------------------------------------------------------------------------------------------
# the key mapping
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    """One reference tensor and the tensor(s) of ours it becomes.

    kind: "copy" (same tensor), "transpose" (reference `x @ W` matrix -> Linear weight) or
    "qkv" (reference `in_proj_*` rows [q; k; v] -> three projections).
    """

    reference: str
    ours: tuple[str, ...]
    kind: str = "copy"


def _param_rules(reference: str, ours: str) -> list[_Rule]:
    return [_Rule(f"{reference}.{name}", (f"{ours}.{name}",)) for name in ("weight", "bias")]


def _block_rules(reference_prefix: str, our_prefix: str, num_layers: int) -> list[_Rule]:
    """OpenAI `{reference_prefix}transformer.resblocks.{i}` -> transformers `{our_prefix}.encoder.layers.{i}`."""
    rules = []
    for i in range(num_layers):
        ref, ours = f"{reference_prefix}transformer.resblocks.{i}", f"{our_prefix}.encoder.layers.{i}"
        for name in ("weight", "bias"):
            projections = tuple(f"{ours}.self_attn.{x}_proj.{name}" for x in "qkv")
            rules.append(_Rule(f"{ref}.attn.in_proj_{name}", projections, "qkv"))
        for ref_module, our_module in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
            ("ln_2", "layer_norm2"),
        ):
            rules += _param_rules(f"{ref}.{ref_module}", f"{ours}.{our_module}")
    return rules


def _vision_rules(config: OTSegConfig) -> list[_Rule]:
    vision = "clip.vision_model"
    rules = [
        _Rule("backbone.class_embedding", (f"{vision}.embeddings.class_embedding",)),
        # kept at the checkpoint's grid; the reference's class-embedding quirk lives in our forward
        _Rule("backbone.positional_embedding", (f"{vision}.embeddings.position_embedding.weight",)),
        _Rule("backbone.conv1.weight", (f"{vision}.embeddings.patch_embedding.weight",)),
        *_param_rules("backbone.ln_pre", f"{vision}.pre_layrnorm"),
        *_block_rules("backbone.", vision, config.clip_config.vision_config.num_hidden_layers),
        *_param_rules("backbone.ln_post", f"{vision}.post_layernorm"),
        _Rule("backbone.proj", ("clip.visual_projection.weight",), "transpose"),
        _Rule("backbone.prompt_embeddings", ("visual_prompts.prompt_embeddings",)),
        *_param_rules("backbone.prompt_proj", "visual_prompts.prompt_proj"),
        *_param_rules("backbone.prompt_norm", "visual_prompts.prompt_norm"),
    ]
    if config.visual_prompt_depth > 0:  # the reference has no such parameter without deep prompts
        rules.append(_Rule("backbone.deep_prompt_embeddings", ("visual_prompts.deep_prompt_embeddings",)))
    return rules


def _text_rules(config: OTSegConfig, prefix: str = "text_encoder.") -> list[_Rule]:
    """The OpenAI text tower; `prefix` is "text_encoder." in the reference, "" in an OpenAI CLIP file."""
    text = "clip.text_model"
    return [
        _Rule(f"{prefix}token_embedding.weight", (f"{text}.embeddings.token_embedding.weight",)),
        _Rule(f"{prefix}positional_embedding", (f"{text}.embeddings.position_embedding.weight",)),
        *_block_rules(prefix, text, config.clip_config.text_config.num_hidden_layers),
        *_param_rules(f"{prefix}ln_final", f"{text}.final_layer_norm"),
        _Rule(f"{prefix}text_projection", ("clip.text_projection.weight",), "transpose"),
    ]


def _head_rules(config: OTSegConfig) -> list[_Rule]:
    rules = _param_rules("decode_head.q_proj", "head.descriptor.proj")
    last = config.num_decoder_layers - 1
    for index in range(config.num_decoder_layers):
        ref, ours = f"decode_head.decoder_1.layers.{index}", f"head.decoder.layers.{index}"
        modules = [("multihead_attn.q", "q_proj"), ("multihead_attn.k", "k_proj")]
        if index < last:
            modules += [
                ("multihead_attn.v", "v_proj"),
                ("multihead_attn.proj", "out_proj"),
                ("linear1", "fc1"),
                ("linear2", "fc2"),
                ("norm2", "cross_attn_norm"),
                ("norm3", "ffn_norm"),
            ]
        for ref_module, our_module in modules:
            rules += _param_rules(f"{ref}.{ref_module}", f"{ours}.{our_module}")
    return rules


def dropped_reference_keys(config: OTSegConfig) -> list[str]:
    """Reference keys dropped on purpose: they never influence an output (spec section 5).

    Every decoder layer's unused self-attention (`self_attn.*`) and its norm (`norm1.*`); the last
    decoder layer's value and output projections (`multihead_attn.v/proj`), FFN (`linear1/2`) and
    norms (`norm2/3`), of which only the similarity map is used; and the loss's `empty_weight` buffer.
    """
    keys = []
    last = config.num_decoder_layers - 1
    for index in range(config.num_decoder_layers):
        prefix = f"decode_head.decoder_1.layers.{index}"
        modules = ["self_attn.out_proj", "norm1"]
        keys += [f"{prefix}.self_attn.in_proj_weight", f"{prefix}.self_attn.in_proj_bias"]
        if index == last:
            modules += ["multihead_attn.v", "multihead_attn.proj", "linear1", "linear2", "norm2", "norm3"]
        keys += [f"{prefix}.{module}.{name}" for module in modules for name in ("weight", "bias")]
    keys.append("decode_head.loss_decode.criterion.empty_weight")
    return keys


def _expected_shapes(config: OTSegConfig) -> dict[str, tuple[int, ...]]:
    """Our model's state-dict shapes for `config`, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = OTSegForSemanticSegmentation(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _reference_shape(rule: _Rule, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    ours = [shapes[key] for key in rule.ours]
    if rule.kind == "transpose":
        return tuple(reversed(ours[0]))
    if rule.kind == "qkv":
        return (sum(shape[0] for shape in ours), *ours[0][1:])
    return ours[0]


def _name_keys(what: str, keys: list[str]) -> str:
    more = f" (and {len(keys) - 1} more: {', '.join(keys[1:6])}{', ...' if len(keys) > 6 else ''})"
    return f"{what} {keys[0]!r}" + (more if len(keys) > 1 else "")


def _check_tensors(state_dict: dict, where: str) -> None:
    if not isinstance(state_dict, dict):
        raise ReferenceCheckpointError(f"{where} must be a dict of tensors, got {type(state_dict).__name__}")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ReferenceCheckpointError(
                f"{where}: entry {key!r} is a {type(value).__name__}, expected a tensor"
            )


def _apply_rules(
    rules: list[_Rule],
    source: dict[str, torch.Tensor],
    shapes: dict[str, tuple[int, ...]],
    where: str,
    allowed_extra: set[str] = frozenset(),
) -> dict[str, torch.Tensor]:
    """Map `source` (reference names) to ours with `rules`; every key must be matched or allowed."""
    missing = [rule.reference for rule in rules if rule.reference not in source]
    if missing:
        raise ReferenceCheckpointError(_name_keys(f"{where}: missing key", missing))
    known = {rule.reference for rule in rules} | set(allowed_extra)
    unexpected = [key for key in source if key not in known]
    if unexpected:
        raise ReferenceCheckpointError(_name_keys(f"{where}: unexpected key", unexpected))
    converted = {}
    for rule in rules:
        tensor = source[rule.reference]
        expected = _reference_shape(rule, shapes)
        if tuple(tensor.shape) != expected:
            raise ReferenceCheckpointError(
                f"{where}: key {rule.reference!r} has shape {tuple(tensor.shape)}, expected {expected}"
            )
        if rule.kind == "copy":
            converted[rule.ours[0]] = tensor
        elif rule.kind == "transpose":
            converted[rule.ours[0]] = tensor.t().contiguous()
        else:
            for key, chunk in zip(rule.ours, tensor.chunk(3, dim=0), strict=True):
                converted[key] = chunk.clone()
    return converted


# ----------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------
def has_text_tower(reference_state_dict: dict) -> bool:
    """Whether a reference state dict carries the CLIP text encoder (`text_encoder.*`)."""
    return any(key.startswith("text_encoder.") for key in reference_state_dict)


def convert_reference_state_dict(
    reference_state_dict: dict[str, torch.Tensor],
    config: OTSegConfig,
    text_tower: dict[str, torch.Tensor] | None = None,
    class_text_embeds: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Map a reference state dict (spec section 12 names) to ours.

    Args:
        reference_state_dict: the checkpoint's `state_dict` (`backbone.*`, `text_encoder.*`,
            `decode_head.*`).
        config: the target configuration (see `infer_config`); every shape is checked against it.
        text_tower: our-named text tower (`clip.text_model.*`, `clip.text_projection.weight`, optionally
            `clip.logit_scale`), e.g. from `openai_text_tower` or `transformers_text_tower`. Used only when
            the checkpoint has no `text_encoder.*` (the checkpoint's tower wins); required then.
        class_text_embeds: (K, N, D) text cache; zeros when not given (call `set_class_names` later).

    Returns:
        A state dict that `OTSegForSemanticSegmentation(config).load_state_dict(..., strict=True)` accepts.
        `clip.logit_scale` (unused by OTSeg, absent from the reference) comes from `text_tower` or the
        config's `logit_scale_init_value`.

    Raises:
        ReferenceCheckpointError: on a missing, unexpected or mis-shaped key (the message names it).
    """
    _check_tensors(reference_state_dict, "reference state dict")
    shapes = _expected_shapes(config)
    rules = _vision_rules(config) + _head_rules(config)
    with_text = has_text_tower(reference_state_dict)
    if with_text:
        rules += _text_rules(config)
    converted = _apply_rules(
        rules, reference_state_dict, shapes, "reference state dict", set(dropped_reference_keys(config))
    )
    text_keys = [k for k in shapes if k.startswith("clip.text_model.") or k == "clip.text_projection.weight"]
    logit_scale = None
    if text_tower is not None:
        _check_tensors(text_tower, "text tower")
        logit_scale = text_tower.get("clip.logit_scale")
    if not with_text:
        if text_tower is None:
            raise ReferenceCheckpointError(
                "the checkpoint has no text encoder (text_encoder.*): give a text tower from an OpenAI CLIP "
                "ViT-B/16 .pt file or a transformers CLIP folder (--clip)"
            )
        tower = {k: v for k, v in text_tower.items() if k != "clip.logit_scale"}
        missing = [k for k in text_keys if k not in tower]
        if missing:
            raise ReferenceCheckpointError(_name_keys("text tower: missing key", missing))
        unexpected = [k for k in tower if k not in text_keys]
        if unexpected:
            raise ReferenceCheckpointError(_name_keys("text tower: unexpected key", unexpected))
        for key in text_keys:
            if tuple(tower[key].shape) != shapes[key]:
                raise ReferenceCheckpointError(
                    f"text tower: key {key!r} has shape {tuple(tower[key].shape)}, expected {shapes[key]}"
                )
            converted[key] = tower[key]
    if logit_scale is None:
        logit_scale = torch.tensor(config.clip_config.logit_scale_init_value)
    converted["clip.logit_scale"] = logit_scale.reshape(shapes["clip.logit_scale"])
    if config.visual_prompt_depth == 0:
        converted["visual_prompts.deep_prompt_embeddings"] = torch.zeros(
            shapes["visual_prompts.deep_prompt_embeddings"]
        )
    if class_text_embeds is None:
        class_text_embeds = torch.zeros(shapes["class_text_embeds"])
    elif tuple(class_text_embeds.shape) != shapes["class_text_embeds"]:
        raise ReferenceCheckpointError(
            f"class text embeddings have shape {tuple(class_text_embeds.shape)}, expected "
            f"{shapes['class_text_embeds']} (classes, prompt templates, projection dim)"
        )
    converted["class_text_embeds"] = class_text_embeds.float()
    if set(converted) != set(shapes):  # a bug here, not in the input
        raise RuntimeError(f"conversion produced keys {sorted(set(converted) ^ set(shapes))} out of place")
    return converted


def to_reference_state_dict(
    state_dict: dict[str, torch.Tensor], config: OTSegConfig, include_text: bool = True
) -> dict[str, torch.Tensor]:
    """Inverse of `convert_reference_state_dict`: our state dict -> reference names and layouts.

    The result has every reference key except `dropped_reference_keys(config)` (and the text tower when
    `include_text=False`). `class_text_embeds` and `clip.logit_scale` have no reference counterpart and
    are left out.
    """
    _check_tensors(state_dict, "state dict")
    shapes = _expected_shapes(config)
    missing = [k for k in shapes if k not in state_dict]
    if missing:
        raise ReferenceCheckpointError(_name_keys("state dict: missing key", missing))
    unexpected = [k for k in state_dict if k not in shapes]
    if unexpected:
        raise ReferenceCheckpointError(_name_keys("state dict: unexpected key", unexpected))
    rules = _vision_rules(config) + _head_rules(config) + (_text_rules(config) if include_text else [])
    reference = {}
    for rule in rules:
        tensors = [state_dict[key] for key in rule.ours]
        for key, tensor in zip(rule.ours, tensors, strict=True):
            if tuple(tensor.shape) != shapes[key]:
                raise ReferenceCheckpointError(
                    f"state dict: key {key!r} has shape {tuple(tensor.shape)}, expected {shapes[key]}"
                )
        if rule.kind == "copy":
            reference[rule.reference] = tensors[0]
        elif rule.kind == "transpose":
            reference[rule.reference] = tensors[0].t().contiguous()
        else:
            reference[rule.reference] = torch.cat(tensors, dim=0)
    return reference


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


# ----------------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------------
# numpy objects mmcv may leave in a checkpoint's meta; data only (object arrays go through the same
# restricted unpickler element by element)
_NUMPY_DATA_GLOBALS = {
    f"{core}.{name}"
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("scalar", "_reconstruct")
} | {"numpy.ndarray", "numpy.dtype"}


def _numpy_dtype_classes() -> list[type]:
    """numpy's dtype classes (`numpy.dtypes.Float64DType`, ...) that a pickled dtype is built from."""
    dtypes = getattr(np, "dtypes", None)
    return (
        [
            cls
            for name, cls in vars(dtypes).items()
            if isinstance(cls, type) and name.endswith("DType") and name != "ObjectDType"
        ]
        if dtypes is not None
        else []
    )


def _resolve(qualified_name: str):
    module, _, name = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def read_reference_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `state_dict` of a reference mmsegmentation checkpoint, read without running pickled code.

    Raises:
        ReferenceCheckpointError: the file cannot be read with `weights_only=True` (it holds objects
            other than tensors and plain data), is not a torch file, or holds no OTSeg state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    not_a_checkpoint = f"{str(path)!r} is not a PyTorch checkpoint"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path)
        if not unsafe:  # not a pickle torch can read at all
            raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(error)})") from None
        if not set(unsafe) <= _NUMPY_DATA_GLOBALS:
            raise ReferenceCheckpointError(
                f"{str(path)!r} was refused by torch's weights-only loader: it references {', '.join(unsafe)}, "
                "not only tensors and plain data. It is not loaded (unpickling it could run code); an authors' "
                "checkpoint holds only tensors, numbers and strings"
            ) from None
        try:
            with torch.serialization.safe_globals(
                [_resolve(name) for name in unsafe] + _numpy_dtype_classes()
            ):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as retry_error:
            raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(retry_error)})") from None
    except Exception as error:  # bad magic number, not a zip, truncated, ...
        raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(error)})") from None
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict) or not any(
        isinstance(k, str) and k.startswith(("backbone.", "decode_head.")) for k in state_dict
    ):
        raise ReferenceCheckpointError(
            f"{str(path)!r} holds no OTSeg state dict (expected a dict with 'state_dict' whose keys start with "
            "'backbone.' and 'decode_head.')"
        )
    _check_tensors(state_dict, f"{str(path)!r} state_dict")
    return dict(state_dict)


def _brief(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


# -- OpenAI TorchScript archives ----------------------------------------------------------------------
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Inert stand-in for a TorchScript object (a module): holds the attributes it was pickled with."""

    def __init__(self, *args):
        self.attributes = {}

    def __setstate__(self, state):
        self.attributes = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage, offset, size, stride, *_):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor without storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _identity(value, *_):
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Restricted unpickler for a TorchScript archive's data.pkl (see the module docstring)."""

    _GLOBALS = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("collections", "OrderedDict"): dict,
        ("torch.jit._pickle", "build_intlist"): _identity,
        ("torch.jit._pickle", "build_doublelist"): _identity,
        ("torch.jit._pickle", "build_boollist"): _identity,
        ("torch.jit._pickle", "build_tensorlist"): _identity,
        ("torch.jit._pickle", "restore_type_tag"): _identity,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights archive")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not re.fullmatch(r"\w+", str(key)):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        if key not in self.storages:
            try:
                data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key!r} missing from the archive") from None
            dtype = storage_type.dtype
            if len(data) != int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(
                    f"storage {key!r} has {len(data)} bytes, expected {numel} x {dtype}"
                )
            self.storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _named_tensors(
    obj: _ScriptObject, prefix: str = "", seen: frozenset = frozenset()
) -> dict[str, torch.Tensor]:
    """Tensor attributes of a module tree, dotted names like `state_dict()`'s."""
    if id(obj) in seen:
        raise ReferenceCheckpointError(f"the archive's module tree has a cycle at {prefix.rstrip('.')!r}")
    seen = seen | {id(obj)}
    tensors = {}
    for name, value in obj.attributes.items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + str(name)] = value.clone()
        elif isinstance(value, _ScriptObject):
            tensors.update(_named_tensors(value, f"{prefix}{name}.", seen))
    return tensors


def load_openai_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI CLIP `.pt` TorchScript archive, named like `torch.jit.load(path).state_dict()`.

    Reads the archive's `data.pkl` with a restricted unpickler (nothing is compiled or executed; see the
    module docstring). Returns every tensor attribute, so also a few non-parameter ones.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"CLIP file {str(path)!r} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise ReferenceCheckpointError(f"{str(path)!r} is not a TorchScript archive (not a zip file)")
    with zipfile.ZipFile(path) as archive:
        records = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(records) != 1:
            raise ReferenceCheckpointError(f"{str(path)!r} is not a TorchScript archive (no single data.pkl)")
        prefix = records[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ReferenceCheckpointError(f"{str(path)!r} stores big-endian tensors; not supported")
        try:
            with archive.open(records[0]) as file:
                root = _ArchiveUnpickler(file, archive, prefix).load()
        except Exception as error:
            raise ReferenceCheckpointError(f"{str(path)!r} could not be read safely: {error}") from None
    if not isinstance(root, _ScriptObject):
        raise ReferenceCheckpointError(f"{str(path)!r} does not hold a TorchScript module")
    return _named_tensors(root)


@dataclass
class TextTower:
    """A CLIP text tower in our names (`clip.text_model.*`, `clip.text_projection.weight`,
    `clip.logit_scale`) with its `CLIPTextConfig` fields."""

    state_dict: dict[str, torch.Tensor]
    text_config: dict


def openai_text_tower(openai_state_dict: dict[str, torch.Tensor], head_dim: int = 64) -> TextTower:
    """The text tower of an OpenAI CLIP state dict (e.g. from `load_openai_clip_state_dict`)."""
    text_config = text_config_from_openai(openai_state_dict, "", head_dim)
    config = OTSegConfig(
        clip_config=dict(text_config=text_config, projection_dim=text_config["projection_dim"])
    )
    rules = _text_rules(config, prefix="")
    source = {
        rule.reference: openai_state_dict[rule.reference]
        for rule in rules
        if rule.reference in openai_state_dict
    }
    state_dict = _apply_rules(rules, source, _expected_shapes(config), "OpenAI CLIP text tower")
    if "logit_scale" in openai_state_dict:
        state_dict["clip.logit_scale"] = openai_state_dict["logit_scale"]
    return TextTower({k: v.float() for k, v in state_dict.items()}, text_config)


def transformers_text_tower(path: str | os.PathLike) -> tuple[TextTower, object | None]:
    """The text tower of a transformers CLIP folder, and its tokenizer when the folder has one."""
    from transformers import CLIPModel

    try:
        clip = CLIPModel.from_pretrained(path)
    except Exception as error:
        raise ReferenceCheckpointError(f"{str(path)!r} is not a transformers CLIP folder: {error}") from None
    state_dict = {
        f"clip.{k}": v.float()
        for k, v in clip.state_dict().items()
        if k.startswith("text_model.") or k in ("text_projection.weight", "logit_scale")
    }
    tokenizer = load_tokenizer(path)
    return TextTower(state_dict, clip.config.text_config.to_dict()), tokenizer


def load_clip_text_tower(path: str | os.PathLike, head_dim: int = 64) -> tuple[TextTower, object | None]:
    """A text tower from an OpenAI `.pt` file or a transformers CLIP folder (and a tokenizer if found)."""
    if Path(path).is_file():
        return openai_text_tower(load_openai_clip_state_dict(path), head_dim), None
    return transformers_text_tower(path)


def load_text_embeddings(path: str | os.PathLike) -> torch.Tensor:
    """The reference's precomputed prompt embeddings (`*_otseg.npy`, (K, N, D) float16) as float32.

    Used as they are (no re-normalisation), like the reference does.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ReferenceCheckpointError(f"{str(path)!r} is not a .npy array file: {error}") from None
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise ReferenceCheckpointError(
            f"{str(path)!r} holds a {array.dtype} array of shape {array.shape}; expected floats of shape "
            "(classes, prompt templates, projection dim)"
        )
    embeds = torch.from_numpy(array.astype(np.float32))
    if not bool(torch.isfinite(embeds).all()):
        raise ReferenceCheckpointError(f"{str(path)!r} holds non-finite values")
    return embeds


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------------
def convert_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    setting: str,
    dataset: str | None = None,
    class_names: list[str] | None = None,
    seen_label_ids: list[int] | None = None,
    text_embeddings: str | os.PathLike | None = None,
    clip: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    prompt_templates: list[str] | None = None,
    head_dim: int = 64,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Read, convert, check and save; nothing is written unless every step succeeds.

    Args:
        checkpoint: the reference `.pth`.
        out: the output folder (must not exist or be empty, unless `overwrite`).
        setting: "inductive", "transductive" or "fully-supervised".
        dataset: a key of `dataset_splits.DATASETS` ("voc", "context", "coco-stuff") for class names,
            unseen ids, templates and the inference window.
        class_names, seen_label_ids: an explicit vocabulary and seen ids (override the dataset's).
        text_embeddings: the reference's `*_otseg.npy` to fill the class text cache.
        clip: an OpenAI CLIP `.pt` or a transformers CLIP folder; its text tower is used when the checkpoint
            has none; its tokenizer (folder only) computes the class text cache when no text embeddings are
            given, and is saved with the model.
        tokenizer: a CLIP tokenizer (folder or Hub id) to compute the class text cache (when no text embeddings are
            given) and to save with the model, for other vocabularies.
        prompt_templates: explicit templates (default: the dataset's; else from the `.npy` N: 6 -> VOC's,
            8 -> Context's; else Context's eight).
        head_dim: attention head size (64 for OpenAI CLIP).
        overwrite: replace an existing non-empty `out`.

    Returns:
        The output folder: model, image processor (the dataset's test short side, else the training size),
        tokenizer and processor (when a tokenizer is at hand), code and model card.
    """
    out = Path(out)
    if setting not in SETTINGS:
        raise ReferenceCheckpointError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ReferenceCheckpointError(f"{str(out)!r} exists and is not an empty folder (pass overwrite)")

    # 1. vocabulary and setting
    split = None
    if dataset is not None:
        if dataset not in DATASETS:
            raise ReferenceCheckpointError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        split = DATASETS[dataset]
    if class_names is None:
        if split is None:
            raise ReferenceCheckpointError("give a dataset or explicit class names")
        class_names = list(split.class_names)
    class_names = list(class_names)
    if setting == "fully-supervised":
        seen = None
    elif seen_label_ids is not None:
        seen = [int(i) for i in seen_label_ids]
    elif split is not None and list(split.class_names) == class_names and split.unseen_label_ids:
        seen = list(split.seen_label_ids)
    else:
        raise ReferenceCheckpointError(f"the {setting} setting needs seen label ids (--seen-label-ids)")

    # 2. read everything
    reference = read_reference_checkpoint(checkpoint)
    embeds = load_text_embeddings(text_embeddings) if text_embeddings is not None else None
    tower, clip_tokenizer = (None, None)
    if clip is not None:
        if Path(clip).is_file():
            digest = sha256_of(clip)
            known = (
                "OpenAI's published ViT-B/16" if digest == OPENAI_VIT_B16_SHA256 else "not OpenAI's ViT-B/16"
            )
            log(f"CLIP file sha256 {digest} ({known})")
        tower, clip_tokenizer = load_clip_text_tower(clip, head_dim)
        if has_text_tower(reference):
            log("the checkpoint carries its text encoder: using it (the --clip text tower is not used)")
    if prompt_templates is None:
        if split is not None:
            prompt_templates = list(split.prompt_templates)
        elif embeds is not None and embeds.shape[1] == len(VOC_PROMPT_TEMPLATES):
            prompt_templates = list(VOC_PROMPT_TEMPLATES)
        else:
            prompt_templates = list(CONTEXT_PROMPT_TEMPLATES)
    window = {}
    if split is not None:
        window = dict(
            inference_window_size=split.inference_window_size,
            inference_window_stride=split.inference_window_stride,
        )

    # 3. convert and check
    config = infer_config(
        reference,
        class_names,
        seen_label_ids=seen,
        transductive=setting == "transductive",
        prompt_templates=prompt_templates,
        text_config=tower.text_config if tower is not None else None,
        head_dim=head_dim,
        **window,
    )
    state_dict = convert_reference_state_dict(
        reference,
        config,
        text_tower=tower.state_dict if tower is not None else None,
        class_text_embeds=embeds,
    )
    model = OTSegForSemanticSegmentation(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    text_tokenizer = clip_tokenizer if tokenizer is None else load_tokenizer(tokenizer, "pass a tokenizer folder")
    if embeds is None:
        if text_tokenizer is None:
            raise ReferenceCheckpointError(
                "no class text embeddings: pass --text-embeddings (the reference's .npy) or a tokenizer "
                "(--tokenizer, or --clip with a transformers CLIP folder that has one)"
            )
        model.set_class_names(class_names, text_tokenizer, seen_label_ids=seen)

    # 4. write: into a temporary folder beside `out`, moved in place at the end
    if split is not None:
        patch = config.clip_config.vision_config.patch_size
        image_processor = OTSegImageProcessor(
            size={"shortest_edge": split.test_short_side}, size_divisor=patch
        )
    else:
        image_processor = default_image_processor(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_otseg_folder(
            model, staging, tokenizer=text_tokenizer, image_processor=image_processor, model_name=out.name
        )
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(
        f"wrote {out}: {config.setting}, {len(class_names)} classes, {len(prompt_templates)} templates, "
        f"P={config.num_visual_prompts}, depth={config.visual_prompt_depth}, "
        f"grid={config.clip_config.vision_config.image_size // config.clip_config.vision_config.patch_size}, "
        f"{'with' if text_tokenizer is not None else 'without'} a tokenizer"
    )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert an OTSeg reference (mmsegmentation) checkpoint to a transformers folder.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="the authors' .pth checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="dataset preset: class names, unseen ids, templates, window",
    )
    parser.add_argument(
        "--setting", required=True, choices=SETTINGS, help="the checkpoint's training setting"
    )
    parser.add_argument(
        "--text-embeddings", type=Path, help="the reference's precomputed *_otseg.npy (K, N, D)"
    )
    parser.add_argument(
        "--clip",
        help="OpenAI CLIP ViT-B/16 .pt or a transformers CLIP folder: the text tower when the checkpoint has none",
    )
    parser.add_argument(
        "--tokenizer",
        help="CLIP tokenizer (folder or Hub id): computes the class text cache without --text-embeddings, and is "
        "saved with the model for other vocabularies",
    )
    parser.add_argument(
        "--class-names", nargs="+", help="explicit class names, ids 0..K-1 (override --dataset)"
    )
    parser.add_argument("--seen-label-ids", nargs="+", type=int, help="explicit seen class ids")
    parser.add_argument("--prompt-templates", nargs="+", help="explicit prompt templates, each with one {}")
    parser.add_argument("--head-dim", type=int, default=64, help="attention head size of both towers")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        convert_checkpoint(
            args.checkpoint,
            args.out,
            setting=args.setting,
            dataset=args.dataset,
            class_names=args.class_names,
            seen_label_ids=args.seen_label_ids,
            text_embeddings=args.text_embeddings,
            clip=args.clip,
            tokenizer=args.tokenizer,
            prompt_templates=args.prompt_templates,
            head_dim=args.head_dim,
            overwrite=args.overwrite,
        )
    except ValueError as error:  # ReferenceCheckpointError and invalid configurations
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()


__all__ = [
    "OPENAI_VIT_B16_SHA256",
    "ReferenceCheckpointError",
    "TextTower",
    "convert_checkpoint",
    "convert_reference_state_dict",
    "dropped_reference_keys",
    "infer_config",
    "load_clip_text_tower",
    "load_openai_clip_state_dict",
    "load_text_embeddings",
    "openai_text_tower",
    "read_reference_checkpoint",
    "to_reference_state_dict",
    "transformers_text_tower",
]
