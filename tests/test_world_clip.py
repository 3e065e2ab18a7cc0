"""Tests of the world CLIP (`otseg_hf.world.clip`, `otseg_hf.world.captions`): the tokenizer, the config, the
scene-caption data and its batches, the pretraining losses and `training/pretrain_clip.py`."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

from otseg_hf import OTSegForSemanticSegmentation
from otseg_hf.model.configuration_otseg import CONTEXT_PROMPT_TEMPLATES, VOC_PROMPT_TEMPLATES
from otseg_hf.world.captions import SceneCaptions, scene_descriptions
from otseg_hf.world.clip import (
    WorldCollator,
    describes,
    description_text,
    grouped_contrastive_loss,
    learn_merges,
    patch_phrase_loss,
    pixel_values_from_images,
    world_clip_config,
    world_clip_tokenizer,
)
from otseg_hf.world.scenes import WorldScenes, world_v2_words

# world v2's unseen classes, written out independently of the module
UNSEEN = {"striped red shape", "dotted green shape", "checkered blue shape", "solid yellow shape",
          "checkered purple shape", "water", "tiles"}  # fmt: skip

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "pretrain_clip.py"
_spec = importlib.util.spec_from_file_location("pretrain_clip", SCRIPT)
pretrain_clip = importlib.util.module_from_spec(_spec)
sys.modules["pretrain_clip"] = pretrain_clip  # training/ is scripts, not a package
_spec.loader.exec_module(pretrain_clip)


@pytest.fixture(scope="module")
def world():
    return WorldScenes()


@pytest.fixture(scope="module")
def tokenizer():
    return world_clip_tokenizer(world_v2_words())


# ----------------------------------------------------------------------------------------------------
# tokenizer and config
# ----------------------------------------------------------------------------------------------------
def test_tokenizer_one_token_per_word_and_round_trip(world, tokenizer, tmp_path):
    for name in world.class_names:
        prompt = f"a photo of a {name}."
        assert tokenizer.tokenize(prompt) == ["a</w>", "photo</w>", "of</w>", "a</w>", *[f"{w}</w>" for w in name.split()], ".</w>"]  # fmt: skip
        ids = tokenizer(prompt)["input_ids"]
        assert len(ids) == len(name.split()) + 7 and ids[0] == tokenizer.bos_token_id
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(tokenizer(name)["input_ids"], skip_special_tokens=True).strip() == name
        # CLIP's decoding ends every token with a space, so a full stop comes back detached
        assert tokenizer.decode(ids, skip_special_tokens=True).strip() == prompt[:-1] + " ."
    for word in world_v2_words():
        assert tokenizer.tokenize(word) == [f"{word}</w>"]
    # unknown words fall back to pieces, never to the unknown token
    tokens = tokenizer.tokenize("a turquoise hexagon")
    assert tokenizer.unk_token not in tokens and len(tokens) > 3
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "a photo of a dotted blue shape on gravel."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_learn_merges_rebuilds_words():
    merges = learn_merges(["red", "green", "reed", "ad"])
    assert len(merges) == len(set(merges))
    with pytest.raises(ValueError, match="lowercase"):
        learn_merges(["Red"])
    with pytest.raises(ValueError, match="lowercase"):
        learn_merges([])


def test_world_clip_config(tokenizer):
    config = world_clip_config(tokenizer)
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.text_config.eos_token_id == tokenizer.eos_token_id == config.text_config.pad_token_id
    assert config.vision_config.image_size == 64 and config.vision_config.patch_size == 8
    with pytest.raises(ValueError, match="multiple"):
        world_clip_config(tokenizer, image_size=60)


# ----------------------------------------------------------------------------------------------------
# data, batches and losses
# ----------------------------------------------------------------------------------------------------
def test_scene_captions_take_the_generators_in_turn(world):
    close_ups = WorldScenes(things_per_image=(1, 1), stuff_per_image=(1, 1), radius_range=(0.3, 0.45))
    dataset = SceneCaptions([world, world, close_ups], 9, seed=4)
    for index in range(9):
        expected = (close_ups if index % 3 == 2 else world).generate_scene(index, seed=4)
        assert np.array_equal(dataset[index]["image"], expected.image)
    assert len(dataset) == 9
    with pytest.raises(ValueError, match="at least one"):
        SceneCaptions([], 4, seed=0)
    with pytest.raises(ValueError, match="positive"):
        SceneCaptions(world, 0, seed=0)


def test_seen_only_captions_and_their_phrases_never_name_an_unseen_class(world):
    seen = world.seen_label_ids
    dataset = SceneCaptions(world, 200, seed=0, label_ids=seen)
    for index in range(200):
        item = dataset[index]
        phrases = [description_text(form) for obj in item["objects"] for form in scene_descriptions(obj)]
        for text in [item["caption"], *phrases]:
            assert not any(re.search(rf"\b{name}\b", text) for name in UNSEEN), text
        assert set(np.unique(world.generate_scene(index, 0, seen).label)) <= set(seen)


def phrase_attributes(text: str) -> set[str]:
    """The attribute words of a decoded phrase 'a photo of a dotted red shape .' -> {'dotted', 'red'}."""
    words = text.replace(".", " ").split()
    assert words[:4] == ["a", "photo", "of", "a"], text
    return set(words[4:]) - {"shape"}


def test_collator_phrase_truth(world, tokenizer):
    dataset = SceneCaptions(world, 16, seed=0, label_ids=world.seen_label_ids)
    items = [dataset[i] for i in range(16)]
    batch = WorldCollator(tokenizer, scene_descriptions)(items)
    num_phrases = batch["phrase_ids"].shape[0]
    assert batch["pixel_values"].shape == (16, 3, 64, 64)
    assert batch["phrase_truth"].shape == (16, num_phrases) and batch["phrase_truth"].dtype == torch.bool
    phrases = [
        phrase_attributes(t) for t in tokenizer.batch_decode(batch["phrase_ids"], skip_special_tokens=True)
    ]
    assert len({frozenset(p) for p in phrases}) == num_phrases  # distinct
    for item, truth in zip(items, batch["phrase_truth"].tolist()):
        # a phrase is true of an image when its words are those of a thing or stuff the caption may name
        named = [{word for word in attributes if word} for attributes in item["objects"]]
        assert truth == [any(p <= attributes for attributes in named) for p in phrases]
        for attributes in named:  # every named thing's full description (every stuff's name) is a phrase
            assert attributes in phrases
    captions = [item["caption"] for item in items]
    groups = batch["caption_groups"].tolist()
    for i in range(16):
        for j in range(16):
            assert (groups[i] == groups[j]) == (captions[i] == captions[j])
    # ImageNet normalisation, channels first
    image = items[0]["image"]
    expected = (image[10, 20, 1] / 255.0 - 0.456) / 0.224
    assert math.isclose(batch["pixel_values"][0, 1, 10, 20].item(), expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        pixel_values_from_images(np.zeros((2, 8, 8, 3), np.float32))


def test_description_text_and_describes():
    assert description_text(("striped", "red", "circle")) == "a photo of a striped red circle."
    assert description_text(("striped", "red", None)) == "a photo of a striped red shape."
    assert description_text((None, None, "water")) == "a photo of a water."
    assert describes((None, "red", None), ("striped", "red", "circle"))
    assert describes(("striped", "red", "circle"), ("striped", "red", "circle"))
    assert not describes((None, "red", "square"), ("striped", "red", "circle"))
    assert not describes(("dotted", None, None), ("striped", "red", "circle"))
    assert not describes((None, None, "water"), ("striped", "red", "circle"))


def test_grouped_loss_is_clip_loss_for_distinct_captions(tokenizer):
    torch.manual_seed(0)
    clip = CLIPModel(
        world_clip_config(tokenizer, vision_hidden_size=32, text_hidden_size=32, projection_dim=16)
    )
    texts = ["a photo of a red circle.", "a photo of a blue star.", "a green square.", "a dotted shape."]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    pixels = torch.randn(4, 3, 64, 64)
    outputs = clip(**tokens, pixel_values=pixels, return_loss=True)
    ours = grouped_contrastive_loss(
        F.normalize(outputs.image_embeds, dim=-1),
        F.normalize(outputs.text_embeds, dim=-1),
        clip.logit_scale,
        torch.arange(4),
    )
    torch.testing.assert_close(ours, outputs.loss)


def test_grouped_loss_treats_identical_captions_alike():
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(2.0)
    groups = torch.tensor([0, 1, 0, 2, 1])
    loss = grouped_contrastive_loss(images, texts, scale, groups)
    # swapping the texts of two pairs with the same caption leaves the loss unchanged
    swapped = texts[[2, 1, 0, 3, 4]]
    torch.testing.assert_close(grouped_contrastive_loss(images, swapped, scale, groups), loss)
    # but not when captions differ
    assert not torch.allclose(grouped_contrastive_loss(images, texts[[3, 1, 2, 0, 4]], scale, groups), loss)
    # a perfect match with a sharp temperature has (almost) zero loss with distinct groups
    assert grouped_contrastive_loss(images, images, torch.tensor(6.0), torch.arange(5)) < 0.05


def test_patch_phrase_loss_by_hand_and_its_invariants():
    torch.manual_seed(0)
    patches = F.normalize(torch.randn(2, 5, 8), dim=-1)
    phrases = F.normalize(torch.randn(4, 8), dim=-1)
    truth = torch.tensor([[True, False, True, False], [False, False, False, True]])
    scale, k = torch.tensor(1.5), 3.0
    loss = patch_phrase_loss(patches, phrases, scale, truth, sharpness=k)
    # by hand: soft-max scores, then each true phrase against the image's false ones
    terms = []
    for b in range(2):
        scores = [math.log(sum(math.exp(k * float(patches[b, m] @ phrases[p])) for m in range(5)) / 5) / k for p in range(4)]  # fmt: skip
        logits = [math.exp(1.5) * score for score in scores]
        negatives = [logits[p] for p in range(4) if not truth[b, p]]
        for p in range(4):
            if truth[b, p]:
                terms.append(-logits[p] + math.log(math.exp(logits[p]) + sum(math.exp(n) for n in negatives)))
    assert math.isclose(loss.item(), sum(terms) / len(terms), rel_tol=1e-5)
    # the order of the patches does not matter
    shuffled = patches[:, torch.randperm(5)]
    torch.testing.assert_close(patch_phrase_loss(shuffled, phrases, scale, truth, sharpness=k), loss)
    # one patch equal to each true phrase, the others far: a small loss at a sharp soft maximum
    grounded = -phrases[[1, 1]].unsqueeze(1).repeat(1, 5, 1)
    grounded[0, 0], grounded[0, 3], grounded[1, 2] = phrases[0], phrases[2], phrases[3]
    assert patch_phrase_loss(grounded, phrases, torch.tensor(4.0), truth, sharpness=50.0) < 0.05
    assert patch_phrase_loss(grounded, phrases, scale, torch.zeros_like(truth)) == 0


# ----------------------------------------------------------------------------------------------------
# the pretraining script
# ----------------------------------------------------------------------------------------------------
def test_pretrain_clip_smoke(tmp_path):
    out = tmp_path / "clip"
    results = pretrain_clip.main(
        ["--output-dir", str(out), "--seed", "0", "--max-train-steps", "3", "--batch-size", "8",
         "--vision-hidden-size", "32", "--vision-layers", "2", "--text-hidden-size", "32", "--text-layers", "1",
         "--projection-dim", "16", "--eval-images", "20", "--logging-steps", "1", "--warmup-steps", "1",
         "--checkpointing-steps", "2"]
    )  # fmt: skip
    assert results["steps"] == 3 and 0 <= results["patch_unseen"] <= 1 and 0 <= results["patch_stuff"] <= 1
    clip = CLIPModel.from_pretrained(out)
    assert clip.config.vision_config.hidden_size == 32 and (out / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.tokenize("a photo of a dotted blue shape.")[4:7] == ["dotted</w>", "blue</w>", "shape</w>"]
    assert tokenizer.tokenize("a photo of a bricks.")[4:5] == ["bricks</w>"]
    assert json.loads((out / "zero_shot_results.json").read_text())["seed"] == 0
    assert (out / "step_2").is_dir()
    # the saved CLIP runs on tokenized prompts, and OTSeg builds on it (every prompt word is one token)
    tokens = tokenizer(["a photo of a red star."], return_tensors="pt")
    assert clip.get_text_features(**tokens).pooler_output.shape == (1, 16)
    world = WorldScenes()
    for template in CONTEXT_PROMPT_TEMPLATES:
        for name in world.class_names:
            text = template.format(name)
            assert len(tokenizer.tokenize(text)) == len(text.replace(".", " .").split())  # one token a word
    otseg = OTSegForSemanticSegmentation.from_clip(
        out, world.class_names, seen_label_ids=world.seen_label_ids, image_size=64,
        num_visual_prompts=2, visual_prompt_depth=1, decoder_ffn_dim=32,
    )  # fmt: skip
    assert otseg.class_text_embeds.shape == (26, len(VOC_PROMPT_TEMPLATES), 16)


def test_pretrain_clip_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max-train-steps"):
        pretrain_clip.parse_args(["--output-dir", str(tmp_path), "--max-train-steps", "0"])
    for weight in ("-1", "nan"):
        with pytest.raises(ValueError, match="patch-loss-weight must be 0 or positive, got"):
            pretrain_clip.parse_args(["--output-dir", str(tmp_path), "--patch-loss-weight", weight])
    with pytest.raises(ValueError, match="multiple"):
        pretrain_clip.parse_args(["--output-dir", str(tmp_path), "--image-size", "60"])
