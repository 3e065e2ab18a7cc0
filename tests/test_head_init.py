"""`Recipe.head_init`: the reference's random start, or a head that starts as the frozen CLIP's dense matcher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from otseg_hf.model.modeling_base import SinkhornOptions, multi_prompt_sinkhorn_score
from otseg_hf.recipes import RECIPES
from otseg_hf.recipes.initialization import initialize_head


def _inputs(model, batch=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    dim = model.config.projection_dim
    num_classes, num_prompts = model.class_text_embeds.shape[:2]
    text = F.normalize(torch.randn(num_classes, num_prompts, dim, generator=generator), dim=-1)
    global_embeds = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    pixels = F.normalize(torch.randn(batch, 16, dim, generator=generator), dim=-1)
    return global_embeds, pixels, text


def test_reference_init_changes_nothing(make_model):
    model, untouched = make_model(), make_model()
    initialize_head(model, "reference")
    for (name, tensor), reference in zip(model.state_dict().items(), untouched.state_dict().values()):
        assert torch.equal(tensor, reference), name


def test_clip_init_passes_the_text_through_and_compares_pixels_as_they_are(make_model):
    model = make_model()
    initialize_head(model, "clip")
    global_embeds, pixels, text = _inputs(model)
    queries = model.head.descriptor(global_embeds, text)
    # the descriptor is the identity on the text half: every image gets the prompt embeddings themselves
    torch.testing.assert_close(queries, text.expand(2, -1, -1, -1), rtol=0, atol=1e-6)
    # so the first decoder layer's map is the MPS score map of the same pixels and text
    first = model.head.decoder.layers[0]
    updated, layer_map = first(queries, pixels)
    torch.testing.assert_close(layer_map, multi_prompt_sinkhorn_score(pixels, queries, SinkhornOptions.from_config(model.config)))
    # the layer adds nothing to its queries: they only pass its two layer norms
    expected = F.layer_norm(F.layer_norm(queries, queries.shape[-1:], eps=1e-5), queries.shape[-1:], eps=1e-5)
    torch.testing.assert_close(updated, expected, rtol=0, atol=1e-5)
    # the visual prompt tokens start as zero vectors, before every prompted layer
    for index in range(model.config.visual_prompt_depth + 1):
        assert torch.count_nonzero(model.visual_prompts(index, 2)) == 0


def test_clip_init_still_trains_the_visual_prompts(make_model):
    """Zero prompt tokens with random prompt embeddings: `prompt_proj` gets a gradient at the first step."""
    model = make_model().train()
    initialize_head(model, "clip")
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    assert model.visual_prompts.prompt_proj.weight.grad.abs().sum() > 0
    assert model.head.descriptor.proj.weight.grad.abs().sum() > 0


def test_unknown_head_init_is_refused_by_name(make_model):
    with pytest.raises(ValueError, match="'random'"):
        initialize_head(make_model(), "random")
    with pytest.raises(ValueError, match="head_init must be one of"):
        RECIPES["otseg-world-inductive"].replace(head_init="identity")


def test_reference_recipes_keep_the_reference_init():
    reference = [name for name in RECIPES if "-world-" not in name and name != "custom"]
    assert reference and all(RECIPES[name].head_init == "reference" for name in reference)


def test_clip_init_of_zegot_passes_the_text_through(tiny_clip_dir, tokenizer):
    from conftest import CLASS_NAMES, SEEN_LABEL_IDS

    from otseg_hf.model.modeling_zegot import ZegOTForSemanticSegmentation

    model = ZegOTForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, tokenizer=tokenizer, image_size=32,
        inference_window_size=32, inference_window_stride=24,
    )  # fmt: skip
    contexts = model.prompt_learner.contexts.clone()
    initialize_head(model, "clip")
    global_embeds, _, text = _inputs(model)
    for descriptor in model.descriptors:
        torch.testing.assert_close(descriptor(global_embeds, text), text.expand(2, -1, -1, -1), rtol=0, atol=1e-6)
    assert torch.equal(model.prompt_learner.contexts, contexts)
