"""Conversion of the reference (mmsegmentation) checkpoints and OpenAI CLIP files.

Reference checkpoints are synthesised from the layout of spec section 12 with random tensors at
tiny sizes. The converted model is checked against a forward pass written here from the spec's
formulas on the reference-named tensors (OpenAI-style blocks, VPT-deep prompts, descriptor, MPS,
Sinkhorn decoder, ensemble), so neither side borrows code from the other (except the OT solver).
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from otseg_hf import OTSegForSemanticSegmentation, OTSegProcessor
from otseg_hf.cli.convert import main
from otseg_hf.convert.checkpoint import (
    ReferenceCheckpointError,
    convert_checkpoint,
    convert_reference_state_dict,
    dropped_reference_keys,
    infer_config,
    load_openai_clip_state_dict,
    load_text_embeddings,
    openai_text_tower,
    read_reference_checkpoint,
    to_reference_state_dict,
)
from otseg_hf.data.splits import DATASETS
from otseg_hf.model.sinkhorn import log_sinkhorn

# tiny reference sizes; every size differs from the others so that a mix-up shows as a shape error
SIZES = dict(
    width=32,  # Cv
    vision_layers=3,
    patch=8,
    grid=4,  # S: 32 x 32 pixel crops
    projection_dim=16,  # D
    num_prompts=3,  # P
    depth=2,
    text_width=48,  # W
    text_layers=2,
    vocab_size=514,  # the char tokenizer of otseg_hf.testing: <|startoftext|> 512, <|endoftext|> 513
    context_length=64,
    decoder_layers=3,
    ffn_dim=40,
)
HEAD_DIM = 16  # 2 vision heads, 3 text heads
CLASS_NAMES = ["red circle", "blue square", "green triangle", "yellow star", "striped square"]
SEEN_LABEL_IDS = [0, 1, 2]
NUM_TEMPLATES = 6


def build_reference_state_dict(seed: int = 0, with_text: bool = True, **overrides) -> dict[str, torch.Tensor]:
    """A reference-format state dict (spec section 12) with random tensors of the right shapes."""
    s = {**SIZES, **overrides}
    generator = torch.Generator().manual_seed(seed)
    sd = {}

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=generator) * std

    def linear(prefix, out_features, in_features):
        sd[f"{prefix}.weight"] = randn(out_features, in_features, std=in_features**-0.5)
        sd[f"{prefix}.bias"] = randn(out_features, std=0.1)

    def norm(prefix, dim):
        sd[f"{prefix}.weight"] = 1 + randn(dim, std=0.1)
        sd[f"{prefix}.bias"] = randn(dim, std=0.1)

    def blocks(prefix, width, num_layers):
        for i in range(num_layers):
            p = f"{prefix}transformer.resblocks.{i}"
            sd[f"{p}.attn.in_proj_weight"] = randn(3 * width, width, std=width**-0.5)
            sd[f"{p}.attn.in_proj_bias"] = randn(3 * width, std=0.1)
            linear(f"{p}.attn.out_proj", width, width)
            norm(f"{p}.ln_1", width)
            linear(f"{p}.mlp.c_fc", 2 * width, width)
            linear(f"{p}.mlp.c_proj", width, 2 * width)
            norm(f"{p}.ln_2", width)

    width, dim = s["width"], s["projection_dim"]
    sd["backbone.class_embedding"] = randn(width, std=0.5)
    sd["backbone.positional_embedding"] = randn(1 + s["grid"] ** 2, width, std=0.5)
    sd["backbone.conv1.weight"] = randn(width, 3, s["patch"], s["patch"], std=(3 * s["patch"] ** 2) ** -0.5)
    norm("backbone.ln_pre", width)
    blocks("backbone.", width, s["vision_layers"])
    norm("backbone.ln_post", width)
    sd["backbone.proj"] = randn(width, dim, std=width**-0.5)
    sd["backbone.prompt_embeddings"] = randn(1, s["num_prompts"], width)
    sd["backbone.deep_prompt_embeddings"] = randn(s["depth"], s["num_prompts"], width)
    linear("backbone.prompt_proj", width, width)
    norm("backbone.prompt_norm", width)

    if with_text:
        text_width = s["text_width"]
        sd["text_encoder.token_embedding.weight"] = randn(s["vocab_size"], text_width, std=0.5)
        sd["text_encoder.positional_embedding"] = randn(s["context_length"], text_width, std=0.1)
        blocks("text_encoder.", text_width, s["text_layers"])
        norm("text_encoder.ln_final", text_width)
        sd["text_encoder.text_projection"] = randn(text_width, dim, std=text_width**-0.5)

    linear("decode_head.q_proj", dim, 2 * dim)
    for index in range(s["decoder_layers"]):
        p = f"decode_head.decoder_1.layers.{index}"
        sd[f"{p}.self_attn.in_proj_weight"] = randn(3 * dim, dim)
        sd[f"{p}.self_attn.in_proj_bias"] = randn(3 * dim)
        linear(f"{p}.self_attn.out_proj", dim, dim)
        for name in ("q", "k", "v", "proj"):
            linear(f"{p}.multihead_attn.{name}", dim, dim)
        linear(f"{p}.linear1", s["ffn_dim"], dim)
        linear(f"{p}.linear2", dim, s["ffn_dim"])
        for name in ("norm1", "norm2", "norm3"):
            norm(f"{p}.{name}", dim)
    sd["decode_head.loss_decode.criterion.empty_weight"] = torch.cat(
        [torch.ones(len(SEEN_LABEL_IDS)), torch.tensor([0.1])]
    )
    return sd


def expected_dropped_keys(num_layers: int) -> set[str]:
    """The spec's list of reference parameters that never influence an output, written out here."""
    keys = {"decode_head.loss_decode.criterion.empty_weight"}
    for index in range(num_layers):
        p = f"decode_head.decoder_1.layers.{index}"
        keys |= {f"{p}.self_attn.in_proj_weight", f"{p}.self_attn.in_proj_bias"}
        keys |= {f"{p}.self_attn.out_proj.{n}" for n in ("weight", "bias")}
        keys |= {f"{p}.norm1.{n}" for n in ("weight", "bias")}
    last = f"decode_head.decoder_1.layers.{num_layers - 1}"
    for module in ("multihead_attn.v", "multihead_attn.proj", "linear1", "linear2", "norm2", "norm3"):
        keys |= {f"{last}.{module}.{n}" for n in ("weight", "bias")}
    return keys


def random_text_embeds(num_classes: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(
        torch.randn(num_classes, NUM_TEMPLATES, SIZES["projection_dim"], generator=generator), dim=-1
    )


def tiny_config(reference, class_names=CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, **overrides):
    return infer_config(
        reference,
        class_names,
        seen_label_ids=seen_label_ids,
        head_dim=HEAD_DIM,
        inference_window_size=32,
        inference_window_stride=24,
        **overrides,
    )


def converted_model(reference, config, **kwargs):
    model = OTSegForSemanticSegmentation(config)
    model.load_state_dict(convert_reference_state_dict(reference, config, **kwargs), strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# the spec's forward, on reference-named tensors
# ----------------------------------------------------------------------------------------------------
def _ln(x, sd, prefix, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def _linear(x, sd, prefix):
    return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def _openai_block(x, sd, prefix, heads, mask=None):
    """Pre-LN block: x + attn(ln_1(x)); x + mlp(ln_2(x)), QuickGELU, q/k/v stacked in in_proj."""
    batch, tokens, width = x.shape
    head_dim = width // heads
    qkv = (
        _ln(x, sd, f"{prefix}.ln_1") @ sd[f"{prefix}.attn.in_proj_weight"].T
        + sd[f"{prefix}.attn.in_proj_bias"]
    )
    q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = x + _linear(attended, sd, f"{prefix}.attn.out_proj")
    hidden = _linear(_ln(x, sd, f"{prefix}.ln_2"), sd, f"{prefix}.mlp.c_fc")
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    return x + _linear(hidden, sd, f"{prefix}.mlp.c_proj")


def _transport_map(pixels, queries):
    """(B, M, D), (B, K, N, D) normalised -> (M N sum_n T S) (B, K, M), plan T (B, K, M, N)."""
    similarity = torch.einsum("bmd,bknd->bkmn", pixels, queries)
    batch, num_classes, num_pixels, num_prompts = similarity.shape
    # the reference segments one image at a time at inference: each image's problems stop together
    plan = torch.stack([log_sinkhorn(1 - image, 0.05, max_iter=100, tol=1e-6) for image in similarity])
    return (num_pixels * num_prompts * plan * similarity).sum(-1), plan


def spec_forward(sd, pixel_values, text, heads, num_layers, num_prompts, depth, decoder_layers):
    """Spec sections 2-5 and 7: returns (ensemble, decoder, score) logits (B, K, h, w)."""
    # 2.1-2.3 patches, class token (its embedding added twice), positions resized bilinearly
    conv = sd["backbone.conv1.weight"]
    x = F.conv2d(pixel_values, conv, stride=conv.shape[-1])
    batch, width, h, w = x.shape
    num_pixels = h * w
    x = x.flatten(2).transpose(1, 2)
    cls, pos = sd["backbone.class_embedding"], sd["backbone.positional_embedding"]
    grid = math.isqrt(pos.shape[0] - 1)
    spatial = pos[1:].reshape(1, grid, grid, width).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(num_pixels, width)
    x = torch.cat([cls.expand(batch, 1, width), x], dim=1) + torch.cat([(pos[0] + cls)[None], spatial])
    # 2.4 ln_pre; 2.5 VPT-deep prompts
    x = _ln(x, sd, "backbone.ln_pre")

    def prompts(embeddings):
        return _linear(embeddings, sd, "backbone.prompt_proj").expand(batch, -1, -1)

    x = torch.cat([x[:, :1], prompts(sd["backbone.prompt_embeddings"][0]), x[:, 1:]], dim=1)
    for i in range(num_layers):
        if 1 <= i <= depth:
            x = torch.cat(
                [x[:, :1], prompts(sd["backbone.deep_prompt_embeddings"][i - 1]), x[:, 1 + num_prompts :]], 1
            )
        elif i > depth:
            x = torch.cat([x[:, :1], x[:, -num_pixels:]], dim=1)
        x = _openai_block(x, sd, f"backbone.transformer.resblocks.{i}", heads)
    # 2.6-2.7 prompt_norm, ln_post, @ proj; normalised global and pixel embeddings
    x = _ln(_ln(x, sd, "backbone.prompt_norm", eps=1e-6), sd, "backbone.ln_post") @ sd["backbone.proj"]
    global_embeds, pixels = F.normalize(x[:, 0], dim=-1), F.normalize(x[:, -num_pixels:], dim=-1)
    # 3. descriptor
    text = text[None].expand(batch, -1, -1, -1)
    queries = _linear(
        torch.cat([global_embeds[:, None, None] * text, text], dim=-1), sd, "decode_head.q_proj"
    )
    # 4. MPS score
    score, _ = _transport_map(pixels, F.normalize(queries, dim=-1))
    # 5. decoder
    maps = []
    for index in range(decoder_layers):
        p = f"decode_head.decoder_1.layers.{index}"
        q = F.normalize(_linear(queries, sd, f"{p}.multihead_attn.q"), dim=-1)
        k = F.normalize(_linear(pixels, sd, f"{p}.multihead_attn.k"), dim=-1)
        layer_map, plan = _transport_map(k, q)
        maps.append(layer_map)
        if index == decoder_layers - 1:
            break
        v = _linear(pixels, sd, f"{p}.multihead_attn.v")
        out = _linear(torch.einsum("bkmn,bmd->bknd", plan, v), sd, f"{p}.multihead_attn.proj")
        queries = _ln(queries + out, sd, f"{p}.norm2")
        ffn = _linear(F.relu(_linear(queries, sd, f"{p}.linear1")), sd, f"{p}.linear2")
        queries = _ln(queries + ffn, sd, f"{p}.norm3")
    decoder = maps[-1]
    for layer_map in maps[:-1]:
        decoder = decoder * torch.sigmoid(layer_map) ** (1 / (len(maps) - 1))
    # 7. ensemble
    decoder, score = decoder.unflatten(-1, (h, w)), score.unflatten(-1, (h, w))
    return 0.5 * decoder + 0.5 * score, decoder, score


def spec_text_forward(sd, input_ids, heads):
    """OpenAI CLIP text encoder: causal blocks, ln_final, token of the largest id (EOT), @ text_projection."""
    length = input_ids.shape[1]
    x = (
        sd["text_encoder.token_embedding.weight"][input_ids]
        + sd["text_encoder.positional_embedding"][:length]
    )
    mask = torch.full((length, length), float("-inf")).triu(1)
    layers = len({k.split(".")[3] for k in sd if k.startswith("text_encoder.transformer.resblocks.")})
    for i in range(layers):
        x = _openai_block(x, sd, f"text_encoder.transformer.resblocks.{i}", heads, mask)
    x = _ln(x, sd, "text_encoder.ln_final")
    x = x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)] @ sd["text_encoder.text_projection"]
    return F.normalize(x, dim=-1)


# ----------------------------------------------------------------------------------------------------
# mapping
# ----------------------------------------------------------------------------------------------------
def test_infer_config_reads_sizes_from_shapes():
    config = tiny_config(build_reference_state_dict())
    vision, text = config.clip_config.vision_config, config.clip_config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (32, 3, 8)
    assert vision.image_size == SIZES["grid"] * SIZES["patch"]
    assert (vision.num_attention_heads, vision.intermediate_size) == (2, 64)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (48, 2, 3)
    assert (text.vocab_size, text.max_position_embeddings, text.eos_token_id) == (514, 64, 513)
    assert config.projection_dim == 16
    assert (config.num_visual_prompts, config.visual_prompt_depth) == (3, 2)
    assert (config.num_decoder_layers, config.decoder_ffn_dim) == (3, 40)


def test_convert_loads_strict_and_inverts_exactly():
    reference = build_reference_state_dict()
    config = tiny_config(reference)
    model = converted_model(reference, config)
    state = model.state_dict()
    # a few layouts checked by hand: transposed projections, q/k/v rows of in_proj
    assert torch.equal(state["clip.visual_projection.weight"], reference["backbone.proj"].T)
    assert torch.equal(state["clip.text_projection.weight"], reference["text_encoder.text_projection"].T)
    in_proj = reference["backbone.transformer.resblocks.1.attn.in_proj_weight"]
    for index, name in enumerate("qkv"):
        ours = state[f"clip.vision_model.encoder.layers.1.self_attn.{name}_proj.weight"]
        assert torch.equal(ours, in_proj[32 * index : 32 * (index + 1)])
    assert torch.equal(state["head.descriptor.proj.weight"], reference["decode_head.q_proj.weight"])

    back = to_reference_state_dict(state, config)
    assert set(reference) - set(back) == expected_dropped_keys(SIZES["decoder_layers"])
    assert set(dropped_reference_keys(config)) == expected_dropped_keys(SIZES["decoder_layers"])
    assert set(back) <= set(reference)
    for key, tensor in back.items():
        assert torch.equal(tensor, reference[key]), key


@pytest.mark.parametrize("size", [32, 48])  # the checkpoint's grid, and a resized one
def test_converted_model_matches_the_spec_forward(size):
    reference = build_reference_state_dict()
    config = tiny_config(reference)
    text = random_text_embeds(len(CLASS_NAMES))
    model = converted_model(reference, config, class_text_embeds=text)
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        output = model(pixel_values)
        expected = spec_forward(
            reference, pixel_values, text, heads=2, num_layers=3, num_prompts=3, depth=2, decoder_layers=3
        )
    for ours, theirs in zip((output.logits, output.decoder_logits, output.score_logits), expected):
        assert ours.shape == (2, len(CLASS_NAMES), size // 8, size // 8)
        assert theirs.std() > 1e-2  # not a degenerate comparison
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_converted_text_tower_matches_openai_text_forward():
    reference = build_reference_state_dict()
    model = converted_model(reference, tiny_config(reference))
    generator = torch.Generator().manual_seed(4)
    length = 12
    input_ids = torch.randint(0, 512, (2 * NUM_TEMPLATES, length), generator=generator)
    input_ids[:, 0] = 512  # <|startoftext|>
    ends = torch.randint(3, length, (input_ids.shape[0],), generator=generator)
    for row, end in enumerate(ends.tolist()):
        input_ids[row, end] = 513  # <|endoftext|>, the largest id
        input_ids[row, end + 1 :] = 0  # OpenAI pads with zeros
    ours = model.get_text_embeddings(input_ids).flatten(0, 1)
    torch.testing.assert_close(ours, spec_text_forward(reference, input_ids, heads=3), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# corrupt inputs
# ----------------------------------------------------------------------------------------------------
def _missing(sd):
    del sd["backbone.ln_post.bias"]
    return "backbone.ln_post.bias"


def _extra(sd):
    sd["decode_head.extra_proj.weight"] = torch.zeros(2)
    return "decode_head.extra_proj.weight"


def _wrong_shape(sd):
    sd["decode_head.decoder_1.layers.1.linear2.weight"] = torch.zeros(16, 41)
    return "decode_head.decoder_1.layers.1.linear2.weight"


def _partial_text(sd):
    del sd["text_encoder.transformer.resblocks.1.mlp.c_fc.bias"]
    return "text_encoder.transformer.resblocks.1.mlp.c_fc.bias"


CORRUPTIONS = [_missing, _extra, _wrong_shape, _partial_text]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_corrupt_state_dict_names_the_key(corrupt):
    reference = build_reference_state_dict()
    config = tiny_config(reference)
    key = corrupt(reference)
    with pytest.raises(ReferenceCheckpointError, match=key.replace(".", r"\.")):
        convert_reference_state_dict(reference, config)


def test_transposed_projection_is_a_shape_error():
    reference = build_reference_state_dict()
    config = tiny_config(reference)
    reference["backbone.proj"] = reference["backbone.proj"].T.contiguous()
    with pytest.raises(ReferenceCheckpointError, match=r"'backbone\.proj' has shape \(16, 32\)"):
        convert_reference_state_dict(reference, config)


def _write_checkpoint(path, state_dict, **meta):
    torch.save({"meta": {"iter": 20000, **meta}, "state_dict": state_dict}, path)
    return path


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_cli_refuses_corrupt_checkpoint_and_writes_nothing(tmp_path, corrupt, capsys):
    reference = build_reference_state_dict()
    key = corrupt(reference)
    checkpoint = _write_checkpoint(tmp_path / "bad.pth", reference)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--dataset", "voc", "--setting", "inductive"]
             + ["--out", str(out), "--head-dim", str(HEAD_DIM)])  # fmt: skip
    assert key in str(exit_info.value)
    _assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("content", ["text", "empty", "list", "npy"])
def test_not_a_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pth"
    if content == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    else:
        with open(path, "wb") as file:
            np.save(file, np.zeros((2, 2)))
    with pytest.raises(ReferenceCheckpointError, match="not a PyTorch checkpoint|no OTSeg state dict"):
        read_reference_checkpoint(path)
    out = tmp_path / "out"
    with pytest.raises(ReferenceCheckpointError):
        convert_checkpoint(path, out, setting="inductive", dataset="voc", head_dim=HEAD_DIM)
    _assert_nothing_written(tmp_path, out)


class _WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    control_marker, marker = tmp_path / "control-ran", tmp_path / "ran"
    control = _write_checkpoint(tmp_path / "control.pth", {"backbone.x": _WritesMarker(control_marker)})
    torch.load(control, weights_only=False)  # the payload works when unpickled without restrictions
    assert control_marker.exists()

    reference = build_reference_state_dict()
    reference["backbone.x"] = _WritesMarker(marker)
    evil = _write_checkpoint(tmp_path / "evil.pth", reference)
    with pytest.raises(ReferenceCheckpointError, match="refused"):
        read_reference_checkpoint(evil)
    out = tmp_path / "out"
    with pytest.raises(ReferenceCheckpointError, match="refused"):
        convert_checkpoint(evil, out, setting="inductive", dataset="voc", head_dim=HEAD_DIM)
    assert not marker.exists()
    _assert_nothing_written(tmp_path, out)


def test_numpy_values_in_meta_are_accepted(tmp_path):
    reference = build_reference_state_dict()
    path = _write_checkpoint(tmp_path / "np.pth", reference, best_score=np.float64(0.5), hist=np.arange(3))
    loaded = read_reference_checkpoint(path)
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_text_embeddings_file_checks(tmp_path):
    good = tmp_path / "good.npy"
    embeds = random_text_embeds(4).numpy().astype(np.float16)
    np.save(good, embeds)
    assert torch.equal(load_text_embeddings(good), torch.from_numpy(embeds.astype(np.float32)))
    flat = tmp_path / "flat.npy"
    np.save(flat, embeds[0])
    with pytest.raises(ReferenceCheckpointError, match="shape"):
        load_text_embeddings(flat)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReferenceCheckpointError, match="not a .npy array"):
        load_text_embeddings(objects)


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------
def test_cli_end_to_end_with_text_embeddings(tmp_path):
    voc = DATASETS["voc"]
    reference = build_reference_state_dict()
    checkpoint = _write_checkpoint(tmp_path / "voc.pth", reference, CLASSES=voc.class_names)
    embeds = random_text_embeds(voc.num_classes).numpy().astype(np.float16)
    np.save(tmp_path / "voc12_otseg.npy", embeds)
    out = tmp_path / "otseg-voc"
    main(["--checkpoint", str(checkpoint), "--dataset", "voc", "--setting", "inductive", "--out", str(out),
          "--text-embeddings", str(tmp_path / "voc12_otseg.npy"), "--head-dim", str(HEAD_DIM)])  # fmt: skip
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    # a Hub-ready folder: VOC's test protocol in the image processor (short side 512, patch multiples), the
    # code and a card; no tokenizer was at hand, so no processor
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"shortest_edge": 512} and preprocessor["size_divisor"] == SIZES["patch"]
    assert (out / "modeling_otseg.py").is_file() and (out / "README.md").is_file()
    assert not (out / "processor_config.json").exists() and not (out / "tokenizer_config.json").exists()

    model = OTSegForSemanticSegmentation.from_pretrained(out).eval()
    config = model.config
    assert config.class_names == list(voc.class_names)
    assert config.setting == "inductive" and config.unseen_label_ids == [15, 16, 17, 18, 19]
    assert config.prompt_templates == list(voc.prompt_templates)
    assert (config.inference_window_size, config.inference_window_stride) == (512, 426)
    assert torch.equal(model.class_text_embeds, torch.from_numpy(embeds.astype(np.float32)))
    # every mapped tensor survived the folder; the inverse gives the checkpoint back
    back = to_reference_state_dict(model.state_dict(), config)
    assert set(reference) - set(back) == expected_dropped_keys(SIZES["decoder_layers"])
    for key, tensor in back.items():
        assert torch.equal(tensor, reference[key]), key
    pixel_values = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    text = torch.from_numpy(embeds.astype(np.float32))
    with torch.no_grad():
        expected, _, _ = spec_forward(reference, pixel_values, text, 2, 3, 3, 2, 3)
        torch.testing.assert_close(model(pixel_values).logits, expected, atol=1e-5, rtol=1e-5)


def test_cli_refuses_a_non_empty_output_folder(tmp_path):
    checkpoint = _write_checkpoint(tmp_path / "voc.pth", build_reference_state_dict())
    np.save(tmp_path / "t.npy", random_text_embeds(20).numpy().astype(np.float16))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an empty folder"):
        main(["--checkpoint", str(checkpoint), "--dataset", "voc", "--setting", "transductive", "--out", str(out),
              "--text-embeddings", str(tmp_path / "t.npy"), "--head-dim", str(HEAD_DIM)])  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_text_tower_and_tokenizer_from_a_transformers_clip_folder(tmp_path, tiny_clip_dir):
    # tiny_clip_dir (conftest): text width 32, 2 layers, projection 16; vision sizes differ and are unused
    reference = build_reference_state_dict(with_text=False)
    checkpoint = _write_checkpoint(tmp_path / "no-text.pth", reference)
    out = tmp_path / "out"
    convert_checkpoint(
        checkpoint,
        out,
        setting="transductive",
        class_names=CLASS_NAMES,
        seen_label_ids=SEEN_LABEL_IDS,
        clip=tiny_clip_dir,
        head_dim=HEAD_DIM,
        log=lambda *_: None,
    )
    model = OTSegForSemanticSegmentation.from_pretrained(out).eval()
    assert model.config.setting == "transductive"
    # the folder's tokenizer travels with the model: processor with the model's templates, image processor at the
    # training size (no dataset given)
    processor = OTSegProcessor.from_pretrained(out)
    assert processor.prompt_templates == model.config.prompt_templates
    assert processor.tokenizer.get_vocab() == CLIPTokenizer.from_pretrained(tiny_clip_dir).get_vocab()
    assert dict(processor.image_processor.size) == {"shortest_edge": SIZES["grid"] * SIZES["patch"]}
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    theirs = clip.state_dict()
    for key, tensor in model.state_dict().items():
        if key.startswith(("clip.text_model.", "clip.text_projection")):
            assert torch.equal(tensor, theirs[key.removeprefix("clip.")]), key
    # the class text cache was computed with the folder's tokenizer and the Context templates (8)
    templates = model.config.prompt_templates
    assert len(templates) == 8
    tokenizer = CLIPTokenizer.from_pretrained(tiny_clip_dir)
    tokens = tokenizer(
        [t.format(c) for c in CLASS_NAMES for t in templates], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        features = clip.get_text_features(**tokens)
    features = getattr(features, "pooler_output", features)
    expected = F.normalize(features, dim=-1).view(len(CLASS_NAMES), len(templates), -1)
    torch.testing.assert_close(model.class_text_embeds, expected, atol=1e-6, rtol=1e-5)


def test_missing_text_tower_without_clip_is_an_error(tmp_path):
    checkpoint = _write_checkpoint(tmp_path / "no-text.pth", build_reference_state_dict(with_text=False))
    out = tmp_path / "out"
    with pytest.raises(ReferenceCheckpointError, match="no text encoder"):
        convert_checkpoint(checkpoint, out, setting="fully-supervised", dataset="voc", head_dim=HEAD_DIM)
    _assert_nothing_written(tmp_path, out)


# ----------------------------------------------------------------------------------------------------
# OpenAI TorchScript archives
# ----------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 2 * width), gelu=nn.GELU(), c_proj=nn.Linear(2 * width, width))
        )
        self.ln_2 = nn.LayerNorm(width)


class _Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])


class _OpenAICLIPLike(nn.Module):
    """OpenAI CLIP's attribute names for the text tower, plus a stub visual tower and the int buffers."""

    def __init__(self):
        super().__init__()
        s = SIZES
        self.visual = nn.Module()
        self.visual.proj = nn.Parameter(torch.zeros(s["width"], s["projection_dim"]))
        self.transformer = _Transformer(s["text_width"], s["text_layers"], 3)
        self.token_embedding = nn.Embedding(s["vocab_size"], s["text_width"])
        self.positional_embedding = nn.Parameter(torch.zeros(s["context_length"], s["text_width"]))
        self.ln_final = nn.LayerNorm(s["text_width"])
        self.text_projection = nn.Parameter(torch.zeros(s["text_width"], s["projection_dim"]))
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))
        self.register_buffer("context_length", torch.tensor(s["context_length"]))
        self.register_buffer("vocab_size", torch.tensor(s["vocab_size"]))

    def forward(self, x):
        return x + 1


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_openai_archive_is_read_safely_and_feeds_the_text_tower(tmp_path):
    reference = build_reference_state_dict()
    text = {k.removeprefix("text_encoder."): v for k, v in reference.items() if k.startswith("text_encoder.")}
    module = _OpenAICLIPLike()
    missing, unexpected = module.load_state_dict(text, strict=False)
    assert not unexpected and set(missing) == {"visual.proj", "logit_scale", "context_length", "vocab_size"}
    module = module.half()  # OpenAI's files store float16
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1)), path)

    tensors = load_openai_clip_state_dict(path)
    jit_state = torch.jit.load(path, map_location="cpu").state_dict()  # our own file: trusted here
    assert set(jit_state) <= set(tensors)
    for key, tensor in jit_state.items():
        assert tensors[key].dtype == tensor.dtype and torch.equal(tensors[key], tensor), key

    tower = openai_text_tower(tensors, head_dim=HEAD_DIM)
    without_text = {k: v for k, v in reference.items() if not k.startswith("text_encoder.")}
    config = tiny_config(reference)
    from_archive = convert_reference_state_dict(without_text, config, text_tower=tower.state_dict)
    halved = {k: (v.half().float() if k.startswith("text_encoder.") else v) for k, v in reference.items()}
    from_checkpoint = convert_reference_state_dict(halved, config)
    assert set(from_archive) == set(from_checkpoint)
    for key in from_checkpoint:
        if key != "clip.logit_scale":
            assert torch.equal(from_archive[key], from_checkpoint[key]), key
    assert from_archive["clip.logit_scale"].item() == pytest.approx(4.6052, abs=1e-2)


def test_openai_archive_that_runs_code_is_refused(tmp_path):
    control_marker, marker = tmp_path / "control-ran", tmp_path / "ran"
    pickle.loads(pickle.dumps(_WritesMarker(control_marker), protocol=2))  # the payload works unrestricted
    assert control_marker.exists()
    path = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_WritesMarker(marker), protocol=2))
        archive.writestr("archive/version", "3\n")
    with pytest.raises(ReferenceCheckpointError, match="exec' is not allowed"):
        load_openai_clip_state_dict(path)
    assert not marker.exists()
    not_an_archive = tmp_path / "plain.pt"
    not_an_archive.write_text("nope")
    with pytest.raises(ReferenceCheckpointError, match="not a TorchScript archive"):
        load_openai_clip_state_dict(not_an_archive)


# ----------------------------------------------------------------------------------------------------
# dataset presets
# ----------------------------------------------------------------------------------------------------
def test_dataset_splits():
    counts = {name: split.num_classes for name, split in DATASETS.items()}
    assert counts == {"voc": 20, "context": 59, "coco-stuff": 171, "ade20k": 150}
    unseen = {name: len(split.unseen_label_ids) for name, split in DATASETS.items()}
    assert unseen == {"voc": 5, "context": 10, "coco-stuff": 15, "ade20k": 0}
    for split in DATASETS.values():
        assert len(set(split.class_names)) == split.num_classes, split.name
        assert all(name == name.strip() and name for name in split.class_names), split.name
        assert len(set(split.unseen_label_ids)) == len(split.unseen_label_ids), split.name
        assert all(0 <= i < split.num_classes for i in split.unseen_label_ids), split.name
        assert len(split.seen_label_ids) + len(split.unseen_label_ids) == split.num_classes
        assert all(t.count("{}") == 1 for t in split.prompt_templates)
    assert DATASETS["voc"].unseen_class_names == ("pottedplant", "sheep", "sofa", "train", "tvmonitor")
    assert len(DATASETS["voc"].prompt_templates) == 6
    assert all(len(DATASETS[n].prompt_templates) == 8 for n in ("context", "coco-stuff", "ade20k"))
    assert DATASETS["context"].image_size == 480 and DATASETS["voc"].image_size == 512
    # spot checks of the public class orders (first, last, and the unseen classes of the splits)
    assert DATASETS["context"].unseen_class_names == (
        "cow", "motorbike", "sofa", "cat", "boat", "fence", "bird", "tv monitor", "keyboard", "aeroplane",
    )  # fmt: skip
    assert DATASETS["coco-stuff"].unseen_class_names == (
        "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard", "clouds",
        "grass", "playingfield", "river", "road", "tree", "wall-concrete",
    )  # fmt: skip
    coco = DATASETS["coco-stuff"].class_names
    assert (coco[0], coco[79], coco[80], coco[-1]) == ("person", "toothbrush", "banner", "wood")
    ade = DATASETS["ade20k"].class_names
    assert (ade[0], ade[7], ade[-1]) == ("wall", "bed", "flag")
