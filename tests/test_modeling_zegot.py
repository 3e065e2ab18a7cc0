"""Tests of `ZegOTConfig` / `ZegOTForSemanticSegmentation` (spec/zegot.md, with otseg.md sections 3, 4, 6, 8).

Expected values are transcribed from the spec in this file (Sinkhorn, MPOT, the multi-layer combination,
the loss and the label settings), or written by hand (token layouts); none is read back from the code
under test. The MPOT transcriptions take the model's cached class embeddings as their text input; that
cache is itself checked against CLIP's own text features of the equivalent texts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSemanticSegmentation, CLIPModel

from otseg_hf.model.configuration_zegot import ZegOTConfig
from otseg_hf.model.modeling_zegot import ZegOTForSemanticSegmentation
from otseg_hf.testing import tiny_clip_config

CLASS_NAMES = ["red circle", "blue square", "green triangle", "yellow star", "striped square"]
SEEN_LABEL_IDS = [0, 1, 2]
# tiny ZegOT: 8x8 patches, 32x32 training size (4x4 grid), D = 16, text width 32, 64 text positions
TINY = dict(num_text_prompts=3, num_context_tokens=4, inference_window_size=32, inference_window_stride=24)
TRAINABLE = {
    "prompt_learner.contexts",
    *(f"descriptors.{i}.proj.{p}" for i in range(3) for p in ("weight", "bias")),
}
SOS, EOS = 512, 513  # the char tokenizer's special ids (otseg_hf.testing)


@pytest.fixture(scope="module")
def clip4():
    """A tiny random CLIP with 4 vision blocks, so that "the last three blocks" is a proper subset."""
    torch.manual_seed(1)
    return CLIPModel(tiny_clip_config(num_hidden_layers=4)).eval()


@pytest.fixture
def build(clip4, tokenizer):
    def make(class_names=CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, transductive=False, seed=0, **overrides):
        torch.manual_seed(seed)
        model = ZegOTForSemanticSegmentation.from_clip(
            clip4,
            class_names,
            seen_label_ids=seen_label_ids,
            transductive=transductive,
            tokenizer=tokenizer,
            image_size=32,
            **{**TINY, **overrides},
        )
        return model.eval()

    return make


def images(batch=2, height=32, width=32, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def random_labels(batch=2, size=32, num_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, size // 8, size // 8), generator=generator)
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)  # blocks of one class
    labels[:, :3, :5] = 255  # some ignore pixels
    return labels


# ---------------------------------------------------------------------------------------------------
# spec transcriptions
# ---------------------------------------------------------------------------------------------------
def sinkhorn_spec(cost, eps=0.05, max_iter=100, tol=1e-6):
    """otseg.md section 6, literally: (B', M, N) cost -> plan."""
    batch, m, n = cost.shape
    mu, nu = torch.full((batch, m), 1.0 / m), torch.full((batch, n), 1.0 / n)
    u, v = torch.zeros(batch, m), torch.zeros(batch, n)
    for _ in range(max_iter):
        u_prev = u
        u = u + eps * (
            torch.log(mu + 1e-8) - torch.logsumexp((u[:, :, None] + v[:, None, :] - cost) / eps, dim=2)
        )
        v = v + eps * (
            torch.log(nu + 1e-8) - torch.logsumexp((u[:, :, None] + v[:, None, :] - cost) / eps, dim=1)
        )
        if (u - u_prev).abs().mean() < tol:
            break
    return torch.exp((u[:, :, None] + v[:, None, :] - cost) / eps)


def mpot_spec(pixels, global_embed, text, proj_weight, proj_bias):
    """zegot.md MPOT with otseg.md sections 3-4: (B, M, D), (B, D), (K, N, D) -> score (B, K, M)."""
    batch, m, _ = pixels.shape
    k, n, _ = text.shape
    text = text[None].expand(batch, -1, -1, -1)
    queries = torch.cat([global_embed[:, None, None, :] * text, text], dim=-1) @ proj_weight.T + proj_bias
    queries = queries / queries.norm(dim=-1, keepdim=True)
    similarity = torch.einsum("bmd,bknd->bkmn", pixels, queries)  # (B, K, M, N)
    # at inference the reference segments one image at a time: each image's K problems stop together
    plan = torch.stack([sinkhorn_spec(1 - similarity[i]) for i in range(batch)])  # (B, K, M, N)
    return (m * n * plan * similarity).sum(-1)


def layer_maps_spec(clip, model, pixel_values, text):
    """DLFA: pixels of the last three blocks of the plain CLIP ViT, each through post_layernorm and the visual
    projection, normalised; g the normalised CLIP image embedding; one descriptor per layer."""
    vision = clip.vision_model
    with torch.no_grad():
        hidden_states = vision(
            pixel_values, output_hidden_states=True
        ).hidden_states  # embeddings + each block
        g = clip.get_image_features(pixel_values=pixel_values).pooler_output
        g = g / g.norm(dim=-1, keepdim=True)
        height, width = pixel_values.shape[-2] // 8, pixel_values.shape[-1] // 8
        maps = []
        for hidden, descriptor in zip(hidden_states[-3:], model.descriptors):
            pixels = clip.visual_projection(vision.post_layernorm(hidden))[:, 1:]
            pixels = pixels / pixels.norm(dim=-1, keepdim=True)
            score = mpot_spec(pixels, g, text, descriptor.proj.weight, descriptor.proj.bias)
            maps.append(score.reshape(*score.shape[:2], height, width))
    return maps


def mask_loss_spec(logits, labels, num_masks):
    """otseg.md section 8: 100 * focal(alpha 0.25, gamma 2) + 1 * dice, ignore pixels negatives everywhere."""
    x = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    focal_sum, dice_sum = 0.0, 0.0
    for b in range(x.shape[0]):
        for k in range(x.shape[1]):
            y = (labels[b] == k).float()
            p = torch.sigmoid(x[b, k])
            bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
            p_t = p * y + (1 - p) * (1 - y)
            alpha_t = 0.25 * y + 0.75 * (1 - y)
            focal_sum = focal_sum + (alpha_t * (1 - p_t) ** 2 * bce).mean()
            if y.sum() > 0:
                dice_sum = dice_sum + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return 100.0 * focal_sum / num_masks + 1.0 * dice_sum / num_masks


def num_masks_spec(labels, num_classes):
    present = sum(int((labels[b] == k).any()) for b in range(labels.shape[0]) for k in range(num_classes))
    return max(present, 1)


# ---------------------------------------------------------------------------------------------------
# config: every decision of zegot.md is a field
# ---------------------------------------------------------------------------------------------------
def test_config_defaults_are_the_decisions_of_the_spec():
    config = ZegOTConfig()
    assert config.model_type == "zegot"
    assert (config.num_text_prompts, config.num_context_tokens, config.context_init_std) == (4, 8, 0.02)
    assert config.feature_layers == [-3, -2, -1]
    assert config.feature_layer_indices == [9, 10, 11]  # the last three of 12 ViT-B/16 blocks
    assert config.layer_combination == "mean"
    assert (config.layer_loss_weight, config.combined_loss_weight) == (1.0, 1.0)
    assert config.seen_class_penalty == 0.0  # no seen-class calibration unless configured
    assert (config.sinkhorn_epsilon, config.sinkhorn_max_iter, config.sinkhorn_tol) == (0.05, 100, 1e-6)
    assert (config.focal_loss_weight, config.dice_loss_weight) == (100.0, 1.0)
    assert (config.focal_alpha, config.focal_gamma, config.ignore_index) == (0.25, 2.0, 255)
    assert config.class_name_format == "{}."
    assert config.seen_label_ids == list(range(15)) and config.setting == "inductive"
    vision = config.clip_config.vision_config
    assert (vision.patch_size, vision.image_size, config.projection_dim) == (16, 512, 512)
    again = ZegOTConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(num_text_prompts=0), "num_text_prompts"),
        (dict(num_context_tokens=75), "num_context_tokens"),
        (dict(context_init_std=0.0), "context_init_std"),
        (dict(class_name_format="{} {}"), "class_name_format"),
        (dict(feature_layers=[12]), "feature_layers"),
        (dict(feature_layers=[-1, 11]), "feature_layers"),
        (dict(feature_layers=[]), "feature_layers"),
        (dict(layer_combination="max"), "layer_combination"),
        (dict(layer_loss_weight=-1.0), "layer_loss_weight"),
        (dict(layer_loss_weight=0.0, combined_loss_weight=0.0), "combined_loss_weight"),
        (dict(seen_class_penalty=-1.5), "seen_class_penalty"),
        (dict(seen_class_penalty=1.5), "seen_class_penalty"),
        (dict(sinkhorn_epsilon=0.0), "sinkhorn_epsilon"),
        (dict(seen_label_ids=[0, 20]), "seen_label_ids"),
        (dict(seen_label_ids=None, transductive=True), "transductive"),
        (dict(ignore_index=3), "ignore_index"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        ZegOTConfig(**overrides)


# ---------------------------------------------------------------------------------------------------
# trainable parameters
# ---------------------------------------------------------------------------------------------------
def test_only_contexts_and_descriptors_train_and_clip_stays_bit_identical(build):
    model = build().train()
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    contexts_before = model.prompt_learner.contexts.detach().clone()
    descriptors_before = [d.proj.weight.detach().clone() for d in model.descriptors]
    cache_before = model.class_text_embeds.clone()
    # every parameter handed to the optimizer, with weight decay: only those with gradients may move
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(3):
        loss = model(images(seed=step), labels=random_labels(seed=step)).loss
        optimizer.zero_grad()
        loss.backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
        assert with_grad == TRAINABLE
        assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name in TRAINABLE)
        optimizer.step()
    clip_after = model.clip.state_dict()
    assert all(torch.equal(clip_before[k], clip_after[k]) for k in clip_before)
    assert not torch.equal(model.prompt_learner.contexts, contexts_before)
    assert all(not torch.equal(d.proj.weight, w) for d, w in zip(model.descriptors, descriptors_before))
    # inference after training: the cache is refreshed from the trained contexts
    model.eval()
    with torch.no_grad():
        logits = model(images()).logits
        fresh = model.encode_prompts(model.class_token_ids, model.class_eos_index)
        expected = model(images(), text_embeds=fresh).logits
    assert not torch.allclose(model.class_text_embeds, cache_before)
    torch.testing.assert_close(model.class_text_embeds, fresh, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_trainable_parameters_fewer_than_otseg(make_model, tiny_clip_dir, tokenizer):
    otseg = make_model()  # tiny OTSeg of conftest, same 3-layer CLIP
    zegot = ZegOTForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, tokenizer=tokenizer, image_size=32,
        inference_window_size=32, inference_window_stride=24,
    )  # fmt: skip
    count = trainable_count
    # N L W contexts + 3 descriptors Linear(2D -> D), with N = 4, L = 8, W = 32, D = 16
    assert count(zegot) == 4 * 8 * 32 + 3 * (2 * 16 * 16 + 16)
    print(
        f"trainable parameters: ZegOT {count(zegot)}, OTSeg {count(otseg)}, ratio {count(zegot) / count(otseg):.3f}"
    )
    assert count(zegot) < count(otseg)


# ---------------------------------------------------------------------------------------------------
# the prompt learner
# ---------------------------------------------------------------------------------------------------
def test_class_name_tokens_on_hand_made_examples(build, tokenizer):
    model = build(num_context_tokens=3, num_text_prompts=2)
    # CLIP's byte alphabet: printable ASCII c has id ord(c) - 33; the last character of a word gets "</w>"
    # (+256). "ab." -> a, b</w>, .</w>; "red circle." -> r e d</w> c i r c l e</w> .</w>
    ab = [SOS, 64, 256 + 65, 256 + 13, EOS]
    red_circle = [SOS, 81, 68, 256 + 67, 66, 72, 81, 66, 75, 256 + 68, 256 + 13, EOS]
    ids, eos_index = model.tokenize_class_names(["ab", "red circle"], tokenizer)
    width = 64 - 3  # text positions - contexts
    assert ids.shape == (2, width)
    assert ids[0].tolist() == ab + [EOS] * (width - len(ab))  # padded with the pad token (= end token here)
    assert ids[1].tolist() == red_circle + [EOS] * (width - len(red_circle))
    assert eos_index.tolist() == [4, 11]
    with pytest.raises(ValueError, match="longer than"):
        model.tokenize_class_names(["x" * 70], tokenizer)


def test_prompt_learner_splices_contexts_after_the_start_token(build):
    model = build(num_context_tokens=3, num_text_prompts=2)
    num_classes, length, width = 2, 5, model.config.clip_config.text_config.hidden_size
    token_embeds = torch.stack(
        [
            torch.stack([torch.full((width,), 100.0 * k + s) for s in range(length)])
            for k in range(num_classes)
        ]
    )
    with torch.no_grad():
        model.prompt_learner.contexts.copy_(
            torch.stack(
                [torch.stack([torch.full((width,), -(10.0 * n + j + 1)) for j in range(3)]) for n in range(2)]
            )
        )
        out = model.prompt_learner(token_embeds)
    assert out.shape == (num_classes, 2, length + 3, width)
    for k in range(num_classes):
        for n in range(2):
            # [SOS] [V_1..V_3] name . [EOS] pad
            expected = (
                [100.0 * k]
                + [-(10.0 * n + j + 1) for j in range(3)]
                + [100.0 * k + s for s in range(1, length)]
            )
            assert out[k, n, :, 0].tolist() == expected
            assert torch.equal(out[k, n], out[k, n, :, :1].expand(-1, width))


def test_prompts_equal_clip_text_features_of_the_spliced_words(build, tokenizer):
    """With contexts set to the embeddings of the tokens of "xyz" / "abc", prompt n of class "red circle" is the text
    "xyz red circle." / "abc red circle.": the spliced sequence, positions, causal mask and end-token pooling must
    reproduce CLIP's own text features of those texts."""
    model = build(
        class_names=["ab", "red circle"], seen_label_ids=None, num_context_tokens=3, num_text_prompts=2
    )
    token_embedding = model.clip.text_model.embeddings.token_embedding.weight
    words = [[87, 88, 256 + 89], [64, 65, 256 + 66]]  # x y z</w>, a b c</w>
    with torch.no_grad():
        model.prompt_learner.contexts.copy_(token_embedding[torch.tensor(words)])
        model.update_class_text_embeds()
        texts = [f"{w} {name}." for name in ["ab", "red circle"] for w in ("xyz", "abc")]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model.clip.get_text_features(**tokens).pooler_output
        expected = (expected / expected.norm(dim=-1, keepdim=True)).view(2, 2, -1)
    torch.testing.assert_close(model.class_text_embeds, expected, rtol=0, atol=1e-5)


def test_pooled_position_is_the_true_end_token(build):
    model = build(
        class_names=["ab", "red circle"], seen_label_ids=None, num_context_tokens=3, num_text_prompts=2
    )
    text_model = model.clip.text_model
    captured = {}
    text_model.encoder.register_forward_hook(lambda m, a, out: captured.update(hidden=out.last_hidden_state))
    text_model.final_layer_norm.register_forward_pre_hook(lambda m, a: captured.update(pooled=a[0]))
    with torch.no_grad():
        embeds = model.encode_prompts(model.class_token_ids, model.class_eos_index)
    # "ab": [SOS] V1 V2 V3 a b . [EOS] -> 7; "red circle": [SOS] V1 V2 V3 r e d c i r c l e . [EOS] -> 14
    end = torch.tensor([7, 7, 14, 14])  # class-major, 2 prompts each
    hidden = captured["hidden"]
    assert hidden.shape[:2] == (4, 15)
    assert torch.equal(captured["pooled"], hidden[torch.arange(4), end])
    # causal: what follows the end token (padding) cannot change the embeddings
    scrambled = model.class_token_ids.clone()
    scrambled[0, 5:] = 70
    with torch.no_grad():
        again = model.encode_prompts(scrambled, model.class_eos_index)
    torch.testing.assert_close(again, embeds, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# MPOT per layer, combination, loss, settings
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 48])
def test_mpot_per_layer_equals_the_spec(build, clip4, size):
    model = build(seen_label_ids=None)
    pixel_values = images(height=size, width=size)
    clip = clip4
    if size != 32:  # the spec's bilinear position resize (align_corners=False, class position kept)
        config = clip4.config.to_dict()
        config["vision_config"]["image_size"] = size
        clip = CLIPModel(type(clip4.config)(**config)).eval()
        state = dict(clip4.state_dict())
        table = state["vision_model.embeddings.position_embedding.weight"]
        grid = table[1:].reshape(4, 4, -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid, size=(size // 8, size // 8), mode="bilinear", align_corners=False)
        state["vision_model.embeddings.position_embedding.weight"] = torch.cat(
            [table[:1], grid[0].permute(1, 2, 0).reshape((size // 8) ** 2, -1)]
        )
        clip.load_state_dict(state)
    expected = layer_maps_spec(clip, model, pixel_values, model.class_text_embeds)
    with torch.no_grad():
        output = model(pixel_values)
    assert len(output.layer_logits) == 3
    for got, want in zip(output.layer_logits, expected):
        assert got.shape == (2, 5, size // 8, size // 8)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.logits, sum(expected) / 3, rtol=0, atol=1e-5)


def test_non_square_input(build):
    with torch.no_grad():
        output = build()(images(height=48, width=32))
    assert output.logits.shape == (2, 5, 6, 4)
    assert all(layer.shape == (2, 5, 6, 4) for layer in output.layer_logits)


@pytest.mark.parametrize(
    "combination, layer_weight, combined_weight", [("mean", 1.0, 1.0), ("last", 0.5, 2.0), ("mean", 0.0, 1.0)]
)
def test_combination_and_loss_equal_the_spec(build, clip4, combination, layer_weight, combined_weight):
    model = build(
        seen_label_ids=None,
        layer_combination=combination,
        layer_loss_weight=layer_weight,
        combined_loss_weight=combined_weight,
    )
    pixel_values, labels = images(), random_labels()
    maps = layer_maps_spec(clip4, model, pixel_values, model.class_text_embeds)
    combined = sum(maps) / 3 if combination == "mean" else maps[-1]
    num_masks = num_masks_spec(labels, 5)
    expected = combined_weight * mask_loss_spec(combined, labels, num_masks)
    expected = expected + layer_weight * sum(mask_loss_spec(m, labels, num_masks) for m in maps)
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
    torch.testing.assert_close(output.logits, combined, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_inductive_loss_uses_seen_classes_only(build, clip4):
    model = build()  # seen 0, 1, 2
    pixel_values, labels = images(), random_labels(seed=3)
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
    # seen ids re-indexed 0..2 in the order of seen_label_ids, everything else ignored
    lookup = {0: 0, 1: 1, 2: 2}
    relabelled = labels.clone().apply_(lambda v: lookup.get(v, 255))
    maps = layer_maps_spec(clip4, model, pixel_values, model.class_text_embeds[[0, 1, 2]])
    num_masks = num_masks_spec(relabelled, 3)
    expected = sum(mask_loss_spec(m, relabelled, num_masks) for m in [*maps, sum(maps) / 3])
    assert output.logits.shape == (2, 3, 4, 4)
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_transductive_pseudo_labels_from_the_mean_map(build, clip4):
    model = build(transductive=True)  # seen 0, 1, 2; unseen 3, 4
    pixel_values, labels = images(), random_labels(seed=4)
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
    maps = layer_maps_spec(clip4, model, pixel_values, model.class_text_embeds)
    mean = sum(maps) / 3
    probs = torch.sigmoid(F.interpolate(mean, size=(32, 32), mode="bilinear", align_corners=False))
    pseudo = torch.tensor([3, 4])[probs[:, [3, 4]].argmax(1)]
    targets = torch.where((labels == 3) | (labels == 4), pseudo, labels)
    num_masks = num_masks_spec(targets, 5)
    expected = sum(mask_loss_spec(m, targets, num_masks) for m in [*maps, mean])
    assert output.logits.shape == (2, 5, 4, 4)
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_training_forward_matches_the_cache(build):
    model = build(seen_label_ids=None)
    with torch.no_grad():  # one image: training's batch-wide Sinkhorn stopping is then inference's per-image one
        cached = model(images(batch=1)).logits
        model.train()
        fresh = model(images(batch=1)).logits
    torch.testing.assert_close(fresh, cached, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# vocabulary, save/load, Auto classes, remote code
# ---------------------------------------------------------------------------------------------------
def train_a_little(model, steps=2):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model(images(seed=step), labels=random_labels(seed=step)).loss.backward()
        optimizer.step()
    return model


def test_new_vocabulary_at_inference(build, tokenizer):
    model = train_a_little(build()).eval()
    with torch.no_grad():
        model(images())  # refreshes the cache
    old = dict(zip(CLASS_NAMES, model.class_text_embeds))
    names = ["blue square", "purple moon", "red circle"]
    model.set_class_names(names, tokenizer)
    assert model.config.id2label == {0: "blue square", 1: "purple moon", 2: "red circle"}
    assert model.config.seen_label_ids == [0, 2]  # seen by name
    torch.testing.assert_close(model.class_text_embeds[0], old["blue square"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.class_text_embeds[2], old["red circle"], rtol=0, atol=1e-6)
    tokens = tokenizer([f"{n}." for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(images()).logits
        from_ids = model(
            images(), input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).logits
    assert logits.shape == (2, 3, 4, 4)
    torch.testing.assert_close(from_ids, logits, rtol=0, atol=1e-5)


def without_paths(config: dict) -> dict:
    """A config dict without the fields loading fills in (`_name_or_path`, `dtype`)."""
    return {
        k: without_paths(v) if isinstance(v, dict) else v
        for k, v in config.items()
        if k not in ("_name_or_path", "dtype")
    }


def test_save_load_roundtrip(build, tmp_path):
    model = train_a_little(build())  # the cache is stale: save_pretrained refreshes it
    model.save_pretrained(tmp_path)
    model.eval()
    loaded = ZegOTForSemanticSegmentation.from_pretrained(tmp_path)
    assert {name for name, p in loaded.named_parameters() if p.requires_grad} == TRAINABLE
    saved, again = model.state_dict(), loaded.state_dict()
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert without_paths(loaded.config.to_dict()) == without_paths(model.config.to_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()).logits, model(images()).logits, rtol=0, atol=1e-5)


def test_auto_classes(build, tmp_path):
    AutoConfig.register("zegot", ZegOTConfig, exist_ok=True)
    AutoModelForSemanticSegmentation.register(ZegOTConfig, ZegOTForSemanticSegmentation, exist_ok=True)
    model = build()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ZegOTConfig)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert type(loaded) is ZegOTForSemanticSegmentation
    assert {name for name, p in loaded.named_parameters() if p.requires_grad} == TRAINABLE
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()).logits, model(images()).logits, rtol=0, atol=1e-5)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockOtsegHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "otseg_hf" or name.startswith("otseg_hf."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockOtsegHf())
    try:
        import otseg_hf  # noqa: F401
        raise SystemExit("otseg_hf should not be importable here")
    except ImportError:
        pass

    import torch
    from transformers import AutoModelForSemanticSegmentation

    folder = sys.argv[1]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == "ZegOTForSemanticSegmentation"
    assert not type(model).__module__.startswith("otseg_hf"), type(model).__module__
    assert not any(name.startswith("otseg_hf") for name in sys.modules)
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    reference = torch.load(f"{folder}/reference.pt")
    with torch.no_grad():
        logits = model(reference["pixel_values"]).logits
    torch.testing.assert_close(logits, reference["logits"], rtol=0, atol=1e-5)
    print("REMOTE OK", type(model).__module__, trainable)
    """
)


def test_trust_remote_code_without_the_package(build, tmp_path):
    ZegOTConfig.register_for_auto_class()
    ZegOTForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    model = build()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    saved = set(os.listdir(folder))
    assert {"configuration_zegot.py", "modeling_zegot.py", "modeling_base.py", "sinkhorn.py"} <= saved
    with torch.no_grad():
        torch.save({"pixel_values": images(), "logits": model(images()).logits}, folder / "reference.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, str(script), str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE OK transformers_modules" in result.stdout
    expected = sorted(TRAINABLE)
    assert str(expected) in result.stdout


@pytest.mark.parametrize("bad", [torch.zeros(3, 16), torch.zeros(3, 2, 7), [[0.0] * 16]])
def test_text_embeds_of_a_wrong_shape_are_a_clear_error_before_the_loss(build, bad):
    model = build()
    pixel_values = torch.randn(1, 3, 32, 32)
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    with pytest.raises(ValueError, match="text_embeds must have shape"):
        model(pixel_values, labels=labels, text_embeds=bad)


def test_sinkhorn_grad_modes_give_the_same_gradients(build):
    """ "checkpoint" gives the default's gradients to the bit, "unrolled" up to rounding (spec: exact gradients)."""
    gradients = {}
    for mode in ("recompute", "checkpoint", "unrolled"):
        model = build(sinkhorn_grad_mode=mode).train()
        model(images(), labels=random_labels()).loss.backward()
        gradients[mode] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert gradients["recompute"].keys() == gradients["checkpoint"].keys() == gradients["unrolled"].keys()
    assert any("descriptors" in name for name in gradients["recompute"])
    for name, grad in gradients["recompute"].items():
        assert torch.equal(gradients["checkpoint"][name], grad), name
        torch.testing.assert_close(
            gradients["unrolled"][name], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item()
        )
    with pytest.raises(ValueError, match="sinkhorn_grad_mode"):
        build(sinkhorn_grad_mode="implicit")
