"""Tests of `OTSegForSemanticSegmentation` against literal transcriptions of spec/otseg.md.

The `reference_*` functions below are written from the spec's text (sections 2-5 and 8) with plain
torch ops on the model's own weight tensors; they call no helper of the package except the OT
solver `otseg_hf.model.sinkhorn.log_sinkhorn` (tested elsewhere) and CLIP's encoder layers, used as black
boxes. Every comparison is in eval mode (dropout off) unless stated.

Tolerances: the transcriptions compute the same float32 numbers in a different order; the Sinkhorn
stopping test (mean |u - u_prev| < 1e-6) may then stop one iteration apart, which moves the maps by
~1e-6 relative. 1e-4 covers both and is far below any real defect (wrong weight, order, eps...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import CLASS_NAMES, TINY_OVERRIDES
from transformers import AutoConfig, AutoModelForSemanticSegmentation, CLIPModel

from otseg_hf import OTSegConfig, OTSegForSemanticSegmentation, OTSegSemanticSegmenterOutput
from otseg_hf.model.sinkhorn import log_sinkhorn
from otseg_hf.testing import tiny_clip_config

ATOL = RTOL = 1e-4
NO_DROPOUT = dict(visual_prompt_dropout=0.0, decoder_dropout=0.0, attention_dropout=0.0)
# spec section 1: VOC's six templates (the default)
VOC_TEMPLATES = [
    "a photo of a {}.",
    "a portrait of a {}.",
    "a part of a {}.",
    "a segment of a {}.",
    "a photo of small {}.",
    "a photo of medium {}.",
]
CLIP_KEY_POSITIONS = "vision_model.embeddings.position_embedding.weight"


# ===================================================================================================
# transcriptions of the spec
# ===================================================================================================
def reference_features(model, pixel_values, class_embedding_count=2, position_mode="bilinear"):
    """Spec section 2, steps 1-7. Returns g (B, D), pixels (B, M, D), (h, w).

    `class_embedding_count` and `position_mode` exist only to show the tests are sensitive to the
    CLS quirk and to the interpolation mode; the spec values are 2 and "bilinear"."""
    vision = model.clip.vision_model
    embeddings = vision.embeddings
    prompts = model.visual_prompts
    config = model.config
    conv = embeddings.patch_embedding.weight  # (Cv, 3, p, p)
    width, patch = conv.shape[0], conv.shape[-1]
    batch = pixel_values.shape[0]
    # 1. conv p x p, stride p, no bias -> tokens (B, M, Cv), row-major over the grid
    grid = F.conv2d(pixel_values, conv, bias=None, stride=patch)  # (B, Cv, h, w)
    h, w = grid.shape[-2:]
    tokens = grid.reshape(batch, width, h * w).permute(0, 2, 1)
    # 3. positions stored for S x S; other grids: bilinear, align_corners=False; CLS position untouched
    table = embeddings.position_embedding.weight  # (1 + S^2, Cv)
    side = round((table.shape[0] - 1) ** 0.5)
    spatial = table[1:]
    if (h, w) != (side, side):
        square = table[1:].reshape(side, side, width).permute(2, 0, 1).unsqueeze(0)  # (1, Cv, S, S)
        resized = F.interpolate(square, size=(h, w), mode=position_mode, align_corners=False)
        spatial = resized[0].permute(1, 2, 0).reshape(h * w, width)
    # 2. CLS input = pos[0] + 2 * class_embedding (the reference's quirk)
    cls = table[0] + class_embedding_count * embeddings.class_embedding
    hidden = torch.cat([cls.expand(batch, 1, width), tokens + spatial], dim=1)
    # 4. ln_pre, eps 1e-5
    hidden = F.layer_norm(hidden, (width,), vision.pre_layrnorm.weight, vision.pre_layrnorm.bias, 1e-5)
    # 5. deep prompts
    num_prompts, depth = config.num_visual_prompts, config.visual_prompt_depth

    def projected(table):  # prompt_proj = Linear(Cv, Cv); dropout is off in eval
        return F.linear(table, prompts.prompt_proj.weight, prompts.prompt_proj.bias).expand(batch, -1, -1)

    for i, layer in enumerate(vision.encoder.layers):
        if i == 0:  # [cls, prompts, patches]
            hidden = torch.cat([hidden[:, :1], projected(prompts.prompt_embeddings[0]), hidden[:, 1:]], 1)
        elif i <= depth:  # replace the P prompt tokens
            fresh = projected(prompts.deep_prompt_embeddings[i - 1])
            hidden = torch.cat([hidden[:, :1], fresh, hidden[:, 1 + num_prompts :]], 1)
        elif i == depth + 1:  # drop them
            hidden = torch.cat([hidden[:, :1], hidden[:, 1 + num_prompts :]], 1)
        hidden = layer(hidden, None)
    # 6. prompt_norm (eps 1e-6), then ln_post (eps 1e-5), then the projection (no bias)
    norm, post = prompts.prompt_norm, vision.post_layernorm
    hidden = F.layer_norm(hidden, (width,), norm.weight, norm.bias, 1e-6)
    hidden = F.layer_norm(hidden, (width,), post.weight, post.bias, 1e-5)
    hidden = hidden @ model.clip.visual_projection.weight.T
    # 7. g = token 0, pixels = last M tokens, both normalised
    return F.normalize(hidden[:, 0], dim=-1), F.normalize(hidden[:, -h * w :], dim=-1), (h, w)


def reference_queries(model, global_embeds, text):
    """Spec section 3: q = Linear(2D -> D)(concat(g * text, text)), (B, K, N, D)."""
    proj = model.head.descriptor.proj
    text = text.unsqueeze(0).expand(global_embeds.shape[0], -1, -1, -1)
    joint = torch.cat([global_embeds[:, None, None, :] * text, text], dim=-1)
    return F.linear(joint, proj.weight, proj.bias)


def reference_ot_map(pixels, prompts, epsilon=0.05):
    """Spec sections 4/5.2-5.3: S = cosine(pixel m, prompt n), T = Sinkhorn(1 - S, 1/M, 1/N, eps),
    map = sum_n M N T S. pixels (B, M, D), prompts (B, K, N, D), both normalised."""
    similarity = torch.einsum("bmd,bknd->bkmn", pixels, prompts)
    b, k, m, n = similarity.shape
    plan = log_sinkhorn((1 - similarity).reshape(b * k, m, n), epsilon).reshape(b, k, m, n)
    return m * n * (plan * similarity).sum(-1), plan


def reference_score(pixels, queries):
    """Spec section 4: the MPS score map (B, K, M)."""
    return reference_ot_map(pixels, F.normalize(queries, dim=-1))[0]


def reference_decoder_layer(layer, queries, memory, last):
    """Spec section 5, one post-norm layer (eval: dropout off). Returns (queries or None, A_l)."""
    dim = queries.shape[-1]
    q = F.normalize(F.linear(queries, layer.q_proj.weight, layer.q_proj.bias), dim=-1)
    k = F.normalize(F.linear(memory, layer.k_proj.weight, layer.k_proj.bias), dim=-1)
    layer_map, plan = reference_ot_map(k, q)
    if last:
        return None, layer_map
    v = F.linear(memory, layer.v_proj.weight, layer.v_proj.bias)
    attended = torch.einsum("bkmn,bmd->bknd", plan, v)  # the plan is the attention, no renormalisation
    attended = F.linear(attended, layer.out_proj.weight, layer.out_proj.bias)
    norm1, norm2 = layer.cross_attn_norm, layer.ffn_norm
    queries = F.layer_norm(queries + attended, (dim,), norm1.weight, norm1.bias, 1e-5)
    ffn = F.linear(
        F.relu(F.linear(queries, layer.fc1.weight, layer.fc1.bias)), layer.fc2.weight, layer.fc2.bias
    )
    return F.layer_norm(queries + ffn, (dim,), norm2.weight, norm2.bias, 1e-5), layer_map


def combine_maps(maps):
    """Decoder logits: A_L * prod_{l<L} sigmoid(A_l)^(1/(L-1)), written out per L."""
    s = [a.sigmoid() for a in maps]
    if len(maps) == 2:
        return maps[1] * s[0]
    if len(maps) == 3:  # spec: A_3 * sigmoid(A_1)^(1/2) * sigmoid(A_2)^(1/2)
        return maps[2] * s[0].sqrt() * s[1].sqrt()
    if len(maps) == 4:
        return maps[3] * s[0] ** (1 / 3) * s[1] ** (1 / 3) * s[2] ** (1 / 3)
    raise NotImplementedError(len(maps))


def reference_decoder(model, queries, memory):
    layers = model.head.decoder.layers
    maps = []
    for index, layer in enumerate(layers):
        queries, layer_map = reference_decoder_layer(layer, queries, memory, last=index == len(layers) - 1)
        maps.append(layer_map)
    return combine_maps(maps)


def reference_outputs(model, pixel_values, text=None):
    """Spec sections 2-5 and 7: (ensemble, decoder, score) logits, each (B, K, h, w)."""
    text = model.class_text_embeds if text is None else text
    global_embeds, pixels, (h, w) = reference_features(model, pixel_values)
    queries = reference_queries(model, global_embeds, text)
    score = reference_score(pixels, queries)
    decoder = reference_decoder(model, queries, pixels)
    batch, num_classes = score.shape[:2]
    score, decoder = score.reshape(batch, num_classes, h, w), decoder.reshape(batch, num_classes, h, w)
    return 0.5 * decoder + 0.5 * score, decoder, score


def reference_path_loss(logits, labels, num_masks, crop_size):
    """Spec section 8, one path: 100 * focal(alpha 0.25, gamma 2) + 1 * dice, one-hot targets, ignore
    pixels negative for every class; the logits are upsampled bilinearly to the crop size, then to the
    label size."""
    x = F.interpolate(logits, size=crop_size, mode="bilinear", align_corners=False)
    if x.shape[-2:] != labels.shape[-2:]:
        x = F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    y = torch.stack([labels == k for k in range(logits.shape[1])], dim=1).float()  # (B, K, H, W)
    p = x.sigmoid()
    ce = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    p_t = p * y + (1 - p) * (1 - y)
    focal = (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
    focal = focal.mean(dim=(2, 3)).sum() / num_masks  # per-map mean over all pixels, summed
    present = y.amax(dim=(2, 3))
    dice = 1 - (2 * (p * y).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + y.sum(dim=(2, 3)) + 1)
    dice = (dice * present).sum() / num_masks  # present (image, class) pairs only
    return 100 * focal + dice


def reference_num_masks(labels, num_classes):
    pairs = {
        (b, int(c)) for b in range(labels.shape[0]) for c in labels[b].unique() if 0 <= int(c) < num_classes
    }
    return max(1, len(pairs))


def reference_loss(decoder_logits, score_logits, labels, crop_size=(32, 32)):
    """Both paths, summed; `crop_size` is the size of `pixel_values`."""
    num_masks = reference_num_masks(labels, decoder_logits.shape[1])
    return sum(
        reference_path_loss(path, labels, num_masks, crop_size) for path in (decoder_logits, score_logits)
    )


# ===================================================================================================
# helpers
# ===================================================================================================
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine two threads per
    process oversubscribe the cores (the file runs ~3x slower); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def perturb_(model, seed=1, scale=0.05):
    """Move every weight off its init: the CLIP and prompt layer norms start as identities and the
    head's biases as zeros, which would hide a skipped norm or bias."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def images(batch=2, height=32, width=32, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def hand_labels():
    """Two 32 x 32 label maps of the 5 tiny classes (0-2 seen, 3-4 unseen) and 255 (ignore)."""
    labels = torch.full((2, 32, 32), 255, dtype=torch.long)
    labels[0, :, :16] = 0
    labels[0, :16, 16:] = 3
    labels[0, 16:, 16:24] = 1  # image 0: 0, 3, 1 and an ignore block
    labels[1, :16] = 2
    labels[1, 16:, :16] = 4
    labels[1, 16:, 16:] = 3  # image 1: 2, 4, 3
    return labels


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


# ===================================================================================================
# 2. vision side
# ===================================================================================================
@pytest.mark.parametrize(
    ("height", "width", "depth"),
    [
        (32, 32, 2),  # native 4 x 4 grid, prompts in every layer (depth = layers - 1)
        (48, 32, 2),  # non-square 6 x 4 grid: positions interpolated
        (24, 24, 2),  # a smaller 3 x 3 grid
        (16, 40, 1),  # non-square 2 x 5; prompts dropped after layer 1
        (32, 32, 1),
        (32, 32, 0),  # prompts only in layer 0
    ],
)
@torch.no_grad()
def test_forward_features_matches_transcription(make_model, height, width, depth):
    model = perturb_(make_model(visual_prompt_depth=depth))
    assert len(model.clip.vision_model.encoder.layers) == 3
    pixel_values = images(height=height, width=width)
    global_embeds, pixels, grid = model.forward_features(pixel_values)
    ref_global, ref_pixels, ref_grid = reference_features(model, pixel_values)
    assert grid == ref_grid == (height // 8, width // 8)
    assert global_embeds.shape == (2, 16)
    assert pixels.shape == (2, (height // 8) * (width // 8), 16)
    close(global_embeds, ref_global)
    close(pixels, ref_pixels)
    close(pixels.norm(dim=-1), torch.ones(pixels.shape[:2]))
    close(global_embeds.norm(dim=-1), torch.ones(2))


@torch.no_grad()
def test_transcription_is_sensitive_to_cls_quirk_and_position_mode(make_model):
    # the quirk (2 x class_embedding) and the bilinear mode are what the test above pins down
    model = perturb_(make_model())
    pixel_values = images(height=48, width=32)
    global_embeds, pixels, _ = model.forward_features(pixel_values)
    once, _, _ = reference_features(model, pixel_values, class_embedding_count=1)
    assert not torch.allclose(global_embeds, once, atol=1e-3)
    _, bicubic, _ = reference_features(model, pixel_values, position_mode="bicubic")
    assert not torch.allclose(pixels, bicubic, atol=1e-3)


@torch.no_grad()
def test_visual_prompt_depth_changes_the_features(make_model):
    # each deep prompt row reaches the output: altering the last row used moves the features
    model = perturb_(make_model(visual_prompt_depth=2))
    pixel_values = images()
    before = model.forward_features(pixel_values)[1].clone()
    model.visual_prompts.deep_prompt_embeddings[1].add_(1.0)
    after = model.forward_features(pixel_values)[1]
    assert not torch.allclose(before, after, atol=1e-3)
    close(after, reference_features(model, pixel_values)[1])


# ===================================================================================================
# 3-5. head
# ===================================================================================================
@torch.no_grad()
def test_relationship_descriptor_matches_transcription(make_model):
    model = perturb_(make_model())
    global_embeds = F.normalize(torch.randn(2, 16), dim=-1)
    text = model.class_text_embeds  # (K, N, D) = (5, 6, 16)
    queries = model.head.descriptor(global_embeds, text)
    assert queries.shape == (2, 5, 6, 16)
    close(queries, reference_queries(model, global_embeds, text))


@torch.no_grad()
def test_decoder_layer_matches_transcription(make_model):
    model = perturb_(make_model())
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(2, 5, 6, 16, generator=generator)
    memory = F.normalize(torch.randn(2, 16, 16, generator=generator), dim=-1)
    layer = model.head.decoder.layers[0]
    new_queries, layer_map = layer(queries, memory)
    ref_queries, ref_map = reference_decoder_layer(layer, queries, memory, last=False)
    assert new_queries.shape == (2, 5, 6, 16)
    assert layer_map.shape == (2, 5, 16)
    close(layer_map, ref_map)
    close(new_queries, ref_queries)


class _FixedMap(torch.nn.Module):
    """A decoder layer stand-in that returns a given similarity map."""

    def __init__(self, layer_map):
        super().__init__()
        self.layer_map = layer_map

    def forward(self, queries, memory, options=None):
        return queries, self.layer_map


def test_decoder_gate_stays_finite_where_the_sigmoid_would_underflow(make_model):
    """Softmax matching makes maps far below -88, where sigmoid(map) is 0 in float32 and the gradient of
    sigmoid(map) ** (1/2) infinite: the gate's floor keeps the value (the last map times a gate of ~0) and
    gives finite gradients. Within [-N, N], where Sinkhorn maps lie, the gate is the spec's to the bit."""
    decoder = make_model().head.decoder
    first = torch.tensor([[[-200.0, -3.0, 0.5, 2.0]]], requires_grad=True)  # (B, K, M)
    second = torch.tensor([[[-150.0, 1.0, -1.0, 3.0]]], requires_grad=True)
    last = torch.tensor([[[4.0, -2.0, 1.5, 0.25]]], requires_grad=True)
    decoder.layers = torch.nn.ModuleList([_FixedMap(first), _FixedMap(second), _FixedMap(last)])
    logits = decoder(torch.zeros(1, 1, 1, 16), torch.zeros(1, 4, 16))
    logits.sum().backward()
    for tensor in (first, second, last):
        assert torch.isfinite(tensor.grad).all()
    expected = last * first.sigmoid() ** 0.5 * second.sigmoid() ** 0.5  # the spec's formula
    assert torch.equal(logits[..., 1:], expected[..., 1:])
    assert abs(logits[0, 0, 0].item()) < 1e-30


def test_last_decoder_layer_has_only_query_and_key_projections(make_model):
    # spec section 5: the last layer's value/output projections, FFN and norms never influence an output
    model = make_model()
    layers = model.head.decoder.layers
    assert len(layers) == 3
    last = {name.split(".")[0] for name, _ in layers[-1].named_parameters()}
    assert last == {"q_proj", "k_proj"}
    first = {name.split(".")[0] for name, _ in layers[0].named_parameters()}
    assert {"v_proj", "out_proj", "fc1", "fc2"} <= first


@pytest.mark.parametrize("num_decoder_layers", [2, 3, 4])
@torch.no_grad()
def test_logits_match_transcription(make_model, num_decoder_layers):
    model = perturb_(make_model(num_decoder_layers=num_decoder_layers))
    pixel_values = images()
    output = model(pixel_values)
    assert isinstance(output, OTSegSemanticSegmenterOutput)
    assert output.loss is None
    logits, decoder, score = reference_outputs(model, pixel_values)
    assert output.logits.shape == output.decoder_logits.shape == output.score_logits.shape == (2, 5, 4, 4)
    close(output.score_logits, score)
    close(output.decoder_logits, decoder)
    close(output.logits, logits)
    close(output.logits, 0.5 * output.decoder_logits + 0.5 * output.score_logits)


@torch.no_grad()
def test_logits_of_non_square_input_match_transcription(make_model):
    model = perturb_(make_model())
    pixel_values = images(batch=1, height=48, width=24)
    output = model(pixel_values)
    logits, decoder, score = reference_outputs(model, pixel_values)
    assert output.logits.shape == (1, 5, 6, 3)
    close(output.score_logits, score)
    close(output.decoder_logits, decoder)
    close(output.logits, logits)


@torch.no_grad()
def test_ensemble_weight_is_used(make_model):
    model = perturb_(make_model(ensemble_weight=0.8))
    output = model(images())
    close(output.logits, 0.8 * output.decoder_logits + 0.2 * output.score_logits)


@torch.no_grad()
def test_return_dict_false_gives_a_tuple(make_model):
    model = make_model()
    output = model(images(), labels=hand_labels(), return_dict=False)
    reference = model(images(), labels=hand_labels())
    assert len(output) == 4
    for item, name in zip(output, ["loss", "logits", "decoder_logits", "score_logits"]):
        torch.testing.assert_close(item, reference[name])


# ===================================================================================================
# 8. settings, end to end with labels
# ===================================================================================================
@torch.no_grad()
def test_inductive_training_logits_are_the_seen_classes_in_seen_order(make_model):
    model = perturb_(make_model(seen_label_ids=[3, 0, 1]))
    pixel_values = images()
    full = model(pixel_values).logits  # inference: every class
    trained = model(pixel_values, labels=hand_labels())
    assert full.shape == (2, 5, 4, 4)
    assert trained.logits.shape == (2, 3, 4, 4)
    close(trained.logits, full[:, [3, 0, 1]])


@torch.no_grad()
def test_inductive_loss_matches_transcription_on_remapped_labels(make_model):
    model = perturb_(make_model(seen_label_ids=[3, 0, 1]))
    pixel_values, labels = images(), hand_labels()
    output = model(pixel_values, labels=labels)
    # seen 3 -> 0, 0 -> 1, 1 -> 2; unseen 2, 4 and ignore -> 255
    remap = {3: 0, 0: 1, 1: 2}
    remapped = labels.clone().apply_(lambda c: remap.get(c, 255))
    assert reference_num_masks(remapped, 3) == 4  # image 0: 0, 3, 1; image 1: 3
    _, decoder, score = reference_outputs(model, pixel_values, model.class_text_embeds[[3, 0, 1]])
    expected = reference_loss(decoder, score, remapped)
    close(output.loss, expected)
    # guard: a loss on the unmapped labels would differ
    assert not torch.allclose(expected, reference_loss(decoder, score, labels.clamp(max=2)), atol=1e-3)


@torch.no_grad()
def test_inductive_loss_ignores_unseen_pixels(make_model):
    model = perturb_(make_model())  # seen 0, 1, 2
    pixel_values, labels = images(), hand_labels()
    unseen_ignored = labels.masked_fill((labels == 3) | (labels == 4), 255)
    loss = model(pixel_values, labels=labels).loss
    assert torch.equal(loss, model(pixel_values, labels=unseen_ignored).loss)
    relabelled = labels.masked_fill((labels == 3) | (labels == 4), 0)
    assert not torch.allclose(loss, model(pixel_values, labels=relabelled).loss)


@torch.no_grad()
def test_transductive_loss_uses_unseen_pseudo_labels(make_model):
    model = perturb_(make_model(transductive=True))  # seen 0, 1, 2; unseen 3, 4
    pixel_values, labels = images(), hand_labels()
    output = model(pixel_values, labels=labels)
    assert output.logits.shape == (2, 5, 4, 4)  # every class
    _, decoder, score = reference_outputs(model, pixel_values)
    close(output.decoder_logits, decoder)
    close(output.score_logits, score)
    # pseudo label: argmax over the unseen classes of sigmoid(0.5 score + 0.5 decoder), upsampled
    size = labels.shape[-2:]
    ensemble = 0.5 * output.score_logits + 0.5 * output.decoder_logits
    up = F.interpolate(ensemble, size=size, mode="bilinear", align_corners=False)
    probs = up.sigmoid()
    pseudo = torch.where(probs[:, 3] >= probs[:, 4], 3, 4)  # ties -> the first unseen class
    unseen_gt = (labels == 3) | (labels == 4)
    expected_labels = torch.where(unseen_gt, pseudo, labels)
    assert not torch.equal(expected_labels, labels)  # the pseudo labels do change something
    close(output.loss, reference_loss(output.decoder_logits, output.score_logits, expected_labels))
    assert not torch.allclose(
        output.loss, reference_loss(output.decoder_logits, output.score_logits, labels), atol=1e-3
    )


@torch.no_grad()
def test_fully_supervised_loss_matches_transcription(make_model):
    model = perturb_(make_model(seen_label_ids=None))
    assert model.config.setting == "fully_supervised"
    pixel_values, labels = images(), hand_labels()
    output = model(pixel_values, labels=labels)
    assert output.logits.shape == (2, 5, 4, 4)
    _, decoder, score = reference_outputs(model, pixel_values)
    assert reference_num_masks(labels, 5) == 6
    close(output.loss, reference_loss(decoder, score, labels))


@torch.no_grad()
def test_labels_at_feature_size_and_all_ignore(make_model):
    # labels of another size than the crop: logits go to the label size; all-ignore gives num_masks 1
    model = perturb_(make_model(seen_label_ids=None))
    pixel_values = images()
    labels = torch.tensor([[0, 1, 2, 255]] * 4).expand(2, 4, 4).clone()
    labels[1] = 255
    output = model(pixel_values, labels=labels)
    close(output.loss, reference_loss(output.decoder_logits, output.score_logits, labels))


@torch.no_grad()
def test_other_vocabulary_with_labels_is_fully_supervised(make_model):
    # with text_embeds every given class counts as seen, even for an inductive model
    model = perturb_(make_model())
    pixel_values, labels = images(), hand_labels()
    text = model.class_text_embeds[[4, 3, 2, 1, 0]]
    output = model(pixel_values, labels=labels, text_embeds=text)
    assert output.logits.shape == (2, 5, 4, 4)
    _, decoder, score = reference_outputs(model, pixel_values, text)
    close(output.loss, reference_loss(decoder, score, labels))


# ===================================================================================================
# 1/5. text
# ===================================================================================================
def reference_text(model, tokenizer, names):
    """Spec section 1: every class x template through CLIP's text model, projected, normalised.

    Each prompt is tokenised alone (no padding); prompts of equal token length share a batch."""
    prompts = [template.format(name) for name in names for template in VOC_TEMPLATES]
    ids = [tokenizer(prompt, return_tensors="pt")["input_ids"][0] for prompt in prompts]
    rows = [None] * len(prompts)
    for length in {len(i) for i in ids}:
        group = [index for index, i in enumerate(ids) if len(i) == length]
        features = model.clip.get_text_features(input_ids=torch.stack([ids[i] for i in group])).pooler_output
        for index, feature in zip(group, features):
            rows[index] = feature
    return F.normalize(torch.stack(rows), dim=-1).reshape(len(names), len(VOC_TEMPLATES), -1)


@torch.no_grad()
def test_from_clip_computes_the_text_cache(make_model, tokenizer):
    model = make_model()
    assert model.config.prompt_templates == VOC_TEMPLATES
    assert model.class_text_embeds.shape == (5, 6, 16)
    close(model.class_text_embeds, reference_text(model, tokenizer, CLASS_NAMES))


@torch.no_grad()
def test_set_class_names_recomputes_cache_and_keeps_seen_by_name(make_model, tokenizer):
    model = make_model()  # seen: red circle, blue square, green triangle
    names = ["green triangle", "purple hexagon", "red circle", "yellow star"]
    model.set_class_names(names, tokenizer)
    assert model.class_text_embeds.shape == (4, 6, 16)
    close(model.class_text_embeds, reference_text(model, tokenizer, names))
    assert model.config.id2label == dict(enumerate(names))
    assert model.config.label2id == {name: i for i, name in enumerate(names)}
    assert model.config.seen_label_ids == [0, 2]
    assert model.config.unseen_label_ids == [1, 3]
    assert model.config.setting == "inductive"
    assert model(images()).logits.shape == (2, 4, 4, 4)


@torch.no_grad()
def test_set_class_names_explicit_seen_ids_and_fully_supervised(make_model, tokenizer):
    model = make_model()
    model.set_class_names(["a", "b", "c"], tokenizer, seen_label_ids=[2])
    assert model.config.seen_label_ids == [2]
    supervised = make_model(seen_label_ids=None)
    supervised.set_class_names(["a", "red circle"], tokenizer)
    assert supervised.config.seen_label_ids is None
    assert supervised.config.setting == "fully_supervised"


def test_set_class_names_rejects_bad_input(make_model, tokenizer):
    model = make_model()
    with pytest.raises(ValueError, match="tokenizer"):
        model.set_class_names(["cat", "dog"], tokenizer=None)
    with pytest.raises(ValueError, match="duplicated"):
        model.set_class_names(["cat", "cat"], tokenizer)
    transductive = make_model(transductive=True)
    with pytest.raises(ValueError, match="transductive|unseen"):
        transductive.set_class_names(["red circle", "blue square"], tokenizer)  # both seen: no unseen class
    assert transductive.config.class_names == CLASS_NAMES  # unchanged after the failure


@torch.no_grad()
def test_text_embeds_and_input_ids_paths_equal_the_cache(make_model, tokenizer):
    model = perturb_(make_model())
    model.set_class_names(CLASS_NAMES, tokenizer)  # the cache of the perturbed text encoder
    pixel_values = images()
    cached = model(pixel_values).logits
    via_embeds = model(pixel_values, text_embeds=model.class_text_embeds.clone()).logits
    prompts = [template.format(name) for name in CLASS_NAMES for template in VOC_TEMPLATES]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    via_ids = model(
        pixel_values, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
    ).logits
    torch.testing.assert_close(via_embeds, cached)
    close(via_ids, cached)
    # a different vocabulary through text_embeds: its own K
    assert model(pixel_values, text_embeds=model.class_text_embeds[:2]).logits.shape == (2, 2, 4, 4)


def test_model_without_text_cache_raises(tiny_clip_dir):
    config = OTSegConfig(
        clip_config=tiny_clip_config(),
        id2label=dict(enumerate(CLASS_NAMES)),
        seen_label_ids=[0, 1, 2],
        **TINY_OVERRIDES,
    )
    model = OTSegForSemanticSegmentation(config).eval()
    with pytest.raises(ValueError, match="set_class_names"):
        model(images())
    # text_embeds still work without a cache
    text = F.normalize(torch.randn(5, 6, 16), dim=-1)
    assert model(images(), text_embeds=text).logits.shape == (2, 5, 4, 4)


# ===================================================================================================
# 6. from_clip
# ===================================================================================================
@torch.no_grad()
def test_from_clip_resizes_positions_and_keeps_every_other_clip_weight(tiny_clip_dir):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    model = OTSegForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=[0, 1, 2], image_size=48, **TINY_OVERRIDES
    )
    assert model.config.clip_config.vision_config.image_size == 48
    source = clip.state_dict()
    loaded = model.clip.state_dict()
    # positions: 1 + 4*4 rows -> 1 + 6*6, CLS row untouched, spatial part bilinear, align_corners=False
    table = source[CLIP_KEY_POSITIONS]
    grid = table[1:].reshape(4, 4, 32).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(grid, size=(6, 6), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    new = loaded[CLIP_KEY_POSITIONS]
    assert new.shape == (37, 32)
    assert torch.equal(new[0], table[0])
    torch.testing.assert_close(new[1:], resized.reshape(36, 32), atol=1e-6, rtol=1e-6)
    # everything else is the saved CLIP, bit for bit
    others = [key for key in source if key != CLIP_KEY_POSITIONS and not key.endswith("position_ids")]
    assert len(others) > 50
    for key in others:
        assert torch.equal(loaded[key], source[key]), key
    # a 48-pixel input runs on the stored grid
    assert model(images(height=48, width=48)).logits.shape == (2, 5, 6, 6)


def test_from_clip_needs_a_tokenizer_with_a_clip_instance(tiny_clip_dir):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    with pytest.raises(ValueError, match="tokenizer"):
        OTSegForSemanticSegmentation.from_clip(clip, CLASS_NAMES, image_size=32, **TINY_OVERRIDES)


def test_from_clip_freezes_clip_and_trains_prompts_and_head(make_model):
    model = make_model()
    assert all(not p.requires_grad for p in model.clip.parameters())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {name for name, _ in model.named_parameters() if name.startswith(("visual_prompts.", "head."))}
    assert trainable == expected
    for name in (
        "visual_prompts.prompt_embeddings",
        "visual_prompts.deep_prompt_embeddings",
        "visual_prompts.prompt_proj.weight",
        "visual_prompts.prompt_norm.weight",
        "head.descriptor.proj.weight",
    ):
        assert name in trainable
    assert model.visual_prompts.prompt_embeddings.shape == (1, 3, 32)
    assert model.visual_prompts.deep_prompt_embeddings.shape == (2, 3, 32)
    assert "class_text_embeds" in dict(model.named_buffers())


# ===================================================================================================
# 7. save / load
# ===================================================================================================
@pytest.fixture
def saved_model(make_model, tmp_path):
    model = perturb_(make_model(transductive=True))
    folder = tmp_path / "otseg-tiny"
    model.save_pretrained(folder)
    return model, folder


@torch.no_grad()
@pytest.mark.parametrize("loader", [OTSegForSemanticSegmentation, AutoModelForSemanticSegmentation])
def test_save_and_load_round_trip(saved_model, loader):
    model, folder = saved_model
    loaded = loader.from_pretrained(folder).eval()
    assert type(loaded) is OTSegForSemanticSegmentation
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert set(original) == set(reloaded)
    for key in original:
        assert torch.equal(original[key], reloaded[key]), key
    assert loaded.config.to_dict()["seen_label_ids"] == [0, 1, 2]
    assert loaded.config.setting == "transductive"
    # The weights are bit-identical, yet tensors read from a memory-mapped safetensors file may sit
    # at another memory alignment, so vectorised kernels can round differently (~1e-7 relative):
    # the logits are compared with a tolerance rather than for equality.
    pixel_values = images()
    torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loader", [OTSegForSemanticSegmentation, AutoModelForSemanticSegmentation])
def test_from_pretrained_keeps_clip_frozen(saved_model, loader):
    # spec section 2.8: every CLIP weight is frozen -- also in a model resumed from a checkpoint (the
    # transductive recipe starts from the inductive checkpoint)
    _, folder = saved_model
    loaded = loader.from_pretrained(folder)
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {
        name for name, _ in loaded.named_parameters() if name.startswith(("visual_prompts.", "head."))
    }


def test_saved_folder_holds_weights_config_and_code(saved_model):
    _, folder = saved_model
    files = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_otseg.py", "modeling_otseg.py"} <= files
    # the relative imports of modeling_otseg.py travel with it
    assert {"modeling_base.py", "sinkhorn.py", "losses.py", "loss_targets.py"} <= files
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is OTSegConfig
    assert (
        config.auto_map["AutoModelForSemanticSegmentation"] == "modeling_otseg.OTSegForSemanticSegmentation"
    )


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockOTSeg(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "otseg_hf" or name.startswith("otseg_hf."):
                raise ImportError("otseg_hf is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockOTSeg())
    try:
        import otseg_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("otseg_hf was importable")

    import torch
    from transformers import AutoModelForSemanticSegmentation

    folder, inputs, result = sys.argv[1:4]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("otseg_hf"), type(model).__module__
    assert "otseg_hf" not in sys.modules
    with torch.no_grad():
        logits = model(torch.load(inputs)).logits
    torch.save(logits, result)
    """
)


@torch.no_grad()
def test_trust_remote_code_load_without_the_package(saved_model, tmp_path):
    model, folder = saved_model
    pixel_values = images()
    torch.save(pixel_values, tmp_path / "inputs.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": "",
    }
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "logits.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    remote = torch.load(tmp_path / "logits.pt")
    torch.testing.assert_close(remote, model(pixel_values).logits, atol=1e-5, rtol=1e-5)


# ===================================================================================================
# 8. training
# ===================================================================================================
def test_adamw_steps_train_prompts_and_head_only(make_model):
    model = make_model(**NO_DROPOUT).train()
    clip_before = {key: value.clone() for key, value in model.clip.state_dict().items()}
    text_before = model.class_text_embeds.clone()
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    pixel_values, labels = images(), hand_labels()
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = model(pixel_values, labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, clip_before[key]), key
    assert torch.equal(model.class_text_embeds, text_before)
    for name, parameter in model.named_parameters():
        if name in trainable:
            assert not torch.equal(parameter, trainable[name]), name


@pytest.mark.parametrize(
    "setting", [dict(), dict(transductive=True), dict(seen_label_ids=None), dict(num_decoder_layers=2)]
)
def test_every_trainable_parameter_gets_a_gradient(make_model, setting):
    # no unused parameter: DDP works without find_unused_parameters
    model = perturb_(make_model(**setting)).train()
    model(images(), labels=hand_labels()).loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
            assert parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    # every deep prompt row (layers 1..depth) is used
    row_grads = model.visual_prompts.deep_prompt_embeddings.grad.abs().sum(dim=(1, 2))
    assert (row_grads > 0).all()


@torch.no_grad()
def test_eval_is_deterministic_and_train_applies_dropout(make_model):
    model = make_model()
    pixel_values = images()
    first, second = model(pixel_values).logits, model(pixel_values).logits
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    dropped = model(pixel_values).logits
    assert not torch.allclose(dropped, first, atol=1e-4)  # the dropouts are active in training


# ===================================================================================================
# 9. bad inputs
# ===================================================================================================
BAD_INPUTS = [
    (dict(pixel_values=torch.zeros(1, 1, 32, 32)), "channels"),
    (dict(pixel_values=torch.zeros(1, 3, 4, 32)), "at least one patch"),
    (dict(pixel_values=torch.zeros(1, 3, 36, 32)), "multiples of the patch size"),
    (dict(pixel_values=torch.zeros(3, 32, 32)), "pixel_values"),
    (dict(labels=torch.full((2, 32, 32), 5)), r"label ids \[5\] are outside"),
    (dict(labels=torch.full((2, 32, 32), -1)), r"label ids \[-1\] are outside"),
    (dict(labels=torch.zeros(2, 32, 32)), "integer"),
    (dict(labels=torch.zeros(32, 32, dtype=torch.long)), "labels must have shape"),
    (dict(text_embeds=torch.zeros(5, 16)), "text_embeds"),
    (dict(text_embeds=torch.zeros(5, 6, 8)), "text_embeds"),
    (dict(input_ids=torch.zeros(7, 10, dtype=torch.long)), "input_ids"),
    (dict(input_ids=torch.zeros(6, 10, dtype=torch.long), text_embeds=torch.zeros(1, 6, 16)), "either"),
]


@pytest.mark.parametrize(("inputs", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_raise_value_error(make_model, inputs, message):
    model = make_model()
    inputs = {"pixel_values": images(), **inputs}
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_inductive_labels_without_seen_classes_raise(make_model):
    model = make_model(seen_label_ids=[]).train()
    with pytest.raises(ValueError, match="seen"):
        model(images(), labels=hand_labels())


# ------------------------------------------------------------------------------------------------
# matching="softmax": the ablation without optimal transport
# ------------------------------------------------------------------------------------------------
def test_softmax_matching_is_plain_cross_attention():
    from otseg_hf.model.modeling_base import SinkhornOptions, sinkhorn_similarity_map

    generator = torch.Generator().manual_seed(0)
    pixels = F.normalize(torch.randn(2, 7, 4, generator=generator), dim=-1)  # (B, M, D)
    prompts = F.normalize(torch.randn(2, 3, 5, 4, generator=generator), dim=-1)  # (B, K, N, D)
    score, plan = sinkhorn_similarity_map(pixels, prompts, SinkhornOptions(0.1, matching="softmax"))
    for b in range(2):
        for k in range(3):
            s = pixels[b] @ prompts[b, k].T  # (M, N)
            t = torch.exp(s / 0.1) / torch.exp(s / 0.1).sum(0, keepdim=True) / 5  # softmax over pixels, / N
            torch.testing.assert_close(plan[b, k], t)
            torch.testing.assert_close(score[b, k], 7 * 5 * (t * s).sum(-1))
    sinkhorn_score, _ = sinkhorn_similarity_map(pixels, prompts, SinkhornOptions(0.1))
    assert not torch.allclose(score, sinkhorn_score)


def test_softmax_matching_model_runs_and_differs(make_model):
    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, 32, 32)
    sinkhorn = make_model()
    softmax = make_model(matching="softmax")
    softmax.load_state_dict(sinkhorn.state_dict())
    assert softmax.config.matching == "softmax"
    with torch.no_grad():
        assert not torch.allclose(sinkhorn(pixel_values).logits, softmax(pixel_values).logits)
    with pytest.raises(ValueError, match="matching"):
        make_model(matching="greedy")


# ------------------------------------------------------------------------------------------------
# sinkhorn_grad_mode: how training backpropagates through the iterations
# ------------------------------------------------------------------------------------------------
def test_sinkhorn_grad_modes_give_the_same_gradients(make_model):
    """ "checkpoint" keeps fewer potentials and must give the default's gradients to the bit (every Sinkhorn
    call: the MPS path and each decoder layer); "unrolled" lets autograd record the iterations: equal up to
    rounding. Dropout off, so the three runs see the same network."""
    gradients = {}
    for mode in ("recompute", "checkpoint", "unrolled"):
        model = perturb_(make_model(sinkhorn_grad_mode=mode, visual_prompt_dropout=0.0, decoder_dropout=0.0,
                                    attention_dropout=0.0)).train()  # fmt: skip
        model(images(), labels=hand_labels()).loss.backward()
        gradients[mode] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert gradients["recompute"].keys() == gradients["checkpoint"].keys() == gradients["unrolled"].keys()
    assert any("decoder" in name for name in gradients["recompute"])
    for name, grad in gradients["recompute"].items():
        assert torch.equal(gradients["checkpoint"][name], grad), name
        torch.testing.assert_close(
            gradients["unrolled"][name], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item()
        )
    with pytest.raises(ValueError, match="sinkhorn_grad_mode"):
        make_model(sinkhorn_grad_mode="detach")
