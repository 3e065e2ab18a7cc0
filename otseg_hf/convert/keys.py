"""The key mapping between the reference's checkpoints (spec section 12) and our state dicts, both ways.

Every reference tensor is mapped by a rule ("copy", "transpose", or "qkv": one fused projection into three),
except a fixed list of parameters that never influence an output (`dropped_reference_keys`); any other
unmatched or missing key and any shape mismatch is a `ReferenceCheckpointError` naming the key. The mapping is
exact and invertible (`to_reference_state_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.configuration_otseg import OTSegConfig
from ..model.modeling_otseg import OTSegForSemanticSegmentation


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
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ReferenceCheckpointError(_name_keys(f"{where} holds NaN or infinite values in", bad))


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
