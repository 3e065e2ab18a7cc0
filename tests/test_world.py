"""Tests of the zero-shot world: textured scenes, the split, captions, the tokenizer, the pretraining
losses and `training/pretrain_clip.py`."""

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
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, CLIPModel

from otseg_hf import OTSegForSemanticSegmentation
from otseg_hf.model.configuration_otseg import CONTEXT_PROMPT_TEMPLATES, VOC_PROMPT_TEMPLATES
from otseg_hf.world.clip import (
    WorldCaptions,
    WorldCollator,
    describes,
    description_text,
    descriptions,
    grouped_contrastive_loss,
    learn_merges,
    object_attributes,
    patch_instances,
    patch_phrase_loss,
    pixel_values_from_images,
    world_clip_config,
    world_clip_tokenizer,
)
from otseg_hf.world.scenes import WorldScenes
from otseg_hf.world.shapes import (
    CAPTION_WORDS,
    PRETRAINING_CLASS_NAMES,
    WORLD_CLASS_NAMES,
    Scene,
    SceneObject,
    SyntheticShapes,
    caption_scene,
    object_phrase,
    shape_mask,
)

# the world's definition, written out independently of the module
RGB = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 200),
}
SHAPE_NAMES = ("circle", "square", "triangle", "star")
UNSEEN = {"red star", "green circle", "blue triangle", "yellow square", "purple triangle"}

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "pretrain_clip.py"
_spec = importlib.util.spec_from_file_location("pretrain_clip", SCRIPT)
pretrain_clip = importlib.util.module_from_spec(_spec)
sys.modules["pretrain_clip"] = pretrain_clip  # training/ is scripts, not a package
_spec.loader.exec_module(pretrain_clip)


@pytest.fixture(scope="module")
def world():
    return SyntheticShapes.world()


@pytest.fixture(scope="module")
def tokenizer():
    return world_clip_tokenizer()


# ----------------------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------------------
def test_world_vocabulary_and_split(world):
    assert len(world.class_names) == 20 and set(world.class_names) == {
        f"{colour} {shape}" for colour in RGB for shape in SHAPE_NAMES
    }
    unseen = {world.class_names[i] for i in world.unseen_label_ids}
    seen = [world.class_names[i] for i in world.seen_label_ids]
    assert unseen == UNSEEN and len(seen) == 15 and not unseen & set(seen)
    # every unseen class is a new combination of a colour and a shape that seen classes show
    seen_colours = {name.split()[0] for name in seen}
    seen_shapes = {name.split()[1] for name in seen}
    for name in unseen:
        colour, shape = name.split()
        assert colour in seen_colours and shape in seen_shapes, name


def test_world_scenes_are_deterministic(world):
    for index in (0, 7):
        first = world.generate_scene(index, seed=3)
        second = SyntheticShapes.world().generate_scene(index, seed=3)
        for name in ("image", "label", "instances"):
            assert np.array_equal(getattr(first, name), getattr(second, name))
        assert first.objects == second.objects and first.background == second.background
        assert caption_scene(first, np.random.default_rng(5)) == caption_scene(
            second, np.random.default_rng(5)
        )
    assert not np.array_equal(world.generate_scene(0, seed=3).image, world.generate_scene(0, seed=4).image)
    assert not np.array_equal(world.generate_scene(0, seed=3).image, world.generate_scene(1, seed=3).image)


def expected_pixel(texture: str, colour: tuple[int, int, int], y: int, x: int) -> tuple[int, ...]:
    """The texture rules: shade = half the colour; stripes are 3-pixel diagonal bands starting with the
    colour at (0, 0); dots are the pixels within sqrt(2.5) of the centre of each 6 x 6 cell."""
    dark = {
        "solid": False,
        "striped": ((y + x) // 3) % 2 == 1,
        "dotted": (y % 6 - 2.5) ** 2 + (x % 6 - 2.5) ** 2 <= 2.5,
    }[texture]
    return tuple(c // 2 for c in colour) if dark else colour


@settings(max_examples=25, deadline=None)
@given(
    index=st.integers(0, 10_000),
    seed=st.integers(0, 2**31),
    size=st.sampled_from([32, 48, 64]),
)
def test_world_label_maps_match_the_drawn_pixels(index, seed, size):
    world = SyntheticShapes.world(image_size=size)
    scene = world.generate_scene(index, seed)
    image, label, instances = scene.image, scene.label, scene.instances
    assert image.shape == (size, size, 3) and label.shape == instances.shape == (size, size)
    background = label == 255
    assert np.array_equal(background, instances == 255)
    assert ((image[background] >= 90) & (image[background] <= 160)).all()
    object_colours = {c for rgb in RGB.values() for c in (rgb, tuple(v // 2 for v in rgb))}
    for number, item in enumerate(scene.objects):
        ys, xs = np.nonzero(instances == number)
        assert (label[ys, xs] == item.label_id).all()
        colour_name, shape = world.class_names[item.label_id].split()
        assert (item.style, item.shape) == (colour_name, shape)
        # the pixels it shows are those of its whole shape that later shapes do not cover
        whole = shape_mask(shape, size, size, item.center, item.radius)
        later = np.isin(instances, np.arange(number + 1, len(scene.objects)))
        assert np.array_equal(instances == number, whole & ~later)
        for y, x in zip(ys, xs):
            assert tuple(image[y, x]) == expected_pixel(item.texture, RGB[colour_name], y, x)
    # background pixels never have an object's colour or shade
    assert not any(tuple(pixel) in object_colours for pixel in image[background])
    assert not background.all() or all(item.visible_fraction == 0 for item in scene.objects)


def test_textures_and_backgrounds_all_occur(world):
    scenes = [world.generate_scene(index, seed=0) for index in range(60)]
    assert {scene.background for scene in scenes} == {"noise", "plain", "checkered", "gradient"}
    assert {item.texture for scene in scenes for item in scene.objects} == {"solid", "striped", "dotted"}
    assert {item.size for scene in scenes for item in scene.objects} == {"small", "medium", "large"}
    counts = [len(scene.objects) for scene in scenes]
    assert min(counts) == 1 and max(counts) == 3
    # a dotted or striped object shows both its colour and its shade
    for scene in scenes:
        for number, item in enumerate(scene.objects):
            pixels = {tuple(p) for p in scene.image[scene.instances == number]}
            if item.texture != "solid" and len(pixels) and item.visible_fraction > 0.5:
                assert len(pixels) == 2


def test_visible_fraction_counts_covered_and_cut_off_pixels():
    world = SyntheticShapes.world(shapes_per_image=(1, 1), center_margin=0)
    fractions = [world.generate_scene(index, seed=0).objects[0].visible_fraction for index in range(40)]
    assert all(0 <= f <= 1 for f in fractions) and max(fractions) > 0.95 and min(fractions) < 0.7
    centred = SyntheticShapes.world(shapes_per_image=(1, 1), image_size=400, radius_range=(0.05, 0.05))
    item = centred.generate_scene(0, seed=0).objects[0]
    cy, cx = item.center
    if 30 < cy < 370 and 30 < cx < 370:  # fully inside: the whole shape shows
        assert item.visible_fraction > 0.97


def named_texts(item: dict) -> list[str]:
    """The caption of a `WorldCaptions` item and the phrases of its named objects."""
    return [
        item["caption"],
        *[description_text(form) for obj in item["objects"] for form in descriptions(obj)],
    ]


def test_seen_only_scenes_and_their_words_never_show_an_unseen_class(world):
    dataset = WorldCaptions(world, 300, seed=0, label_ids=world.seen_label_ids)
    for index in range(300):
        for text in named_texts(dataset[index]):
            assert not any(re.search(rf"\b{name}\b", text) for name in UNSEEN), text
        scene = world.generate_scene(index, seed=0, label_ids=world.seen_label_ids)
        assert set(np.unique(scene.label)) - {255} <= set(world.seen_label_ids)


def test_pretraining_vocabulary():
    pretraining = SyntheticShapes.world(class_names=PRETRAINING_CLASS_NAMES)
    assert PRETRAINING_CLASS_NAMES[:20] == WORLD_CLASS_NAMES and len(PRETRAINING_CLASS_NAMES) == 32
    assert {pretraining.class_names[i] for i in pretraining.unseen_label_ids} == UNSEEN
    extra = PRETRAINING_CLASS_NAMES[20:]
    assert {name.split()[0] for name in extra} == {"orange", "pink", "cyan"}
    assert {name.split()[1] for name in extra} == set(SHAPE_NAMES) and len(extra) == 12


def test_world_captions_take_the_generators_in_turn(world):
    close_ups = SyntheticShapes.world(shapes_per_image=(1, 1), radius_range=(0.3, 0.45))
    dataset = WorldCaptions([world, world, close_ups], 9, seed=4)
    for index in range(9):
        expected = (close_ups if index % 3 == 2 else world).generate_scene(index, seed=4)
        assert np.array_equal(dataset[index]["image"], expected.image)
    assert len(dataset) == 9
    with pytest.raises(ValueError, match="at least one"):
        WorldCaptions([], 4)
    with pytest.raises(ValueError, match="positive"):
        WorldCaptions(world, 0)


def test_captions_describe_the_visible_objects(world):
    rng = np.random.default_rng(0)
    for index in range(200):
        scene = world.generate_scene(index, seed=1)
        caption = caption_scene(scene, rng)
        words = caption.replace(",", " ").replace(".", " ").split()
        assert set(words) <= set(CAPTION_WORDS), caption
        visible = [item for item in scene.objects if item.visible_fraction >= 0.5]
        if not visible:
            assert caption.endswith("background.")
        for item in visible:  # every visible object is named by its colour or its shape, or both
            assert item.style in words or item.shape in words, (caption, item)
        named_colours = {word for word in words if word in RGB}
        assert named_colours <= {item.style for item in visible}, caption


def test_object_phrase_parts():
    item = SceneObject(3, "red", "star", "dotted", "small", (5.0, 5.0), 4.0, 1.0)
    assert object_phrase(item) == "dotted red star"
    assert object_phrase(item, with_size=True, with_texture=False) == "small red star"
    phrases = {object_phrase(item, np.random.default_rng(i)) for i in range(200)}
    assert {"red star", "small dotted red star", "dotted red shape", "small star"} <= phrases


def test_invalid_world_settings(world):
    with pytest.raises(ValueError, match="textures"):
        SyntheticShapes(textures=["glittery"])
    with pytest.raises(ValueError, match="backgrounds"):
        SyntheticShapes(backgrounds=[])
    with pytest.raises(ValueError, match="radius_range"):
        SyntheticShapes(radius_range=(0.0, 0.2))
    with pytest.raises(ValueError, match="label_ids"):
        world.generate_scene(0, label_ids=[20])
    with pytest.raises(ValueError, match="label_ids"):
        world.generate_scene(0, label_ids=[])


def test_patch_instances_against_brute_force(world):
    for index in range(10):
        scene = world.generate_scene(index, seed=2)
        owners = patch_instances(scene, 8).reshape(8, 8)
        for row in range(8):
            for col in range(8):
                patch = scene.instances[8 * row : 8 * row + 8, 8 * col : 8 * col + 8].ravel()
                values, counts = np.unique(patch[patch != 255], return_counts=True)
                expected = int(values[counts.argmax()]) if len(values) and counts.max() >= 32 else -1
                assert owners[row, col] == expected
    with pytest.raises(ValueError, match="multiple"):
        patch_instances(world.generate_scene(0), 7)
    empty = Scene(np.zeros((16, 16, 3), np.uint8), np.full((16, 16), 255, np.uint8), np.full((16, 16), 255, np.uint8), [], "noise")  # fmt: skip
    assert (patch_instances(empty, 8) == -1).all()


# ----------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------
def test_tokenizer_one_token_per_word_and_round_trip(world, tokenizer, tmp_path):
    for name in world.class_names:
        prompt = f"a photo of a {name}."
        assert tokenizer.tokenize(prompt) == ["a</w>", "photo</w>", "of</w>", "a</w>", *[f"{w}</w>" for w in name.split()], ".</w>"]  # fmt: skip
        ids = tokenizer(prompt)["input_ids"]
        assert len(ids) == 9 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(tokenizer(name)["input_ids"], skip_special_tokens=True).strip() == name
        # CLIP's decoding ends every token with a space, so a full stop comes back detached
        assert tokenizer.decode(ids, skip_special_tokens=True).strip() == prompt[:-1] + " ."
    for word in CAPTION_WORDS:
        assert tokenizer.tokenize(word) == [f"{word}</w>"]
    # unknown words fall back to pieces, never to the unknown token
    tokens = tokenizer.tokenize("a turquoise hexagon")
    assert tokenizer.unk_token not in tokens and len(tokens) > 3
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        loaded("a photo of a blue triangle.")["input_ids"]
        == tokenizer("a photo of a blue triangle.")["input_ids"]
    )


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
# batches and losses
# ----------------------------------------------------------------------------------------------------
def phrase_attributes(text: str) -> set[str]:
    """The attribute words of a decoded phrase 'a photo of a dotted red shape .' -> {'dotted', 'red'}."""
    words = text.replace(".", " ").split()
    assert words[:4] == ["a", "photo", "of", "a"], text
    return set(words[4:]) - {"shape"}


def test_collator_phrase_truth(world, tokenizer):
    dataset = WorldCaptions(world, 16, seed=0, label_ids=world.seen_label_ids)
    items = [dataset[i] for i in range(16)]
    batch = WorldCollator(tokenizer)(items)
    num_phrases = batch["phrase_ids"].shape[0]
    assert batch["pixel_values"].shape == (16, 3, 64, 64)
    assert batch["phrase_truth"].shape == (16, num_phrases) and batch["phrase_truth"].dtype == torch.bool
    phrases = [
        phrase_attributes(t) for t in tokenizer.batch_decode(batch["phrase_ids"], skip_special_tokens=True)
    ]
    assert len({frozenset(p) for p in phrases}) == num_phrases  # distinct
    for index, truth in enumerate(batch["phrase_truth"].tolist()):
        scene = world.generate_scene(index, seed=0, label_ids=world.seen_label_ids)
        named = [{obj.texture, obj.style, obj.shape} for obj in scene.objects if obj.visible_fraction >= 0.5]
        assert truth == [any(p <= attributes for attributes in named) for p in phrases]
        for attributes in named:  # every named object's full description is a phrase
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


def test_descriptions_of_an_object_and_of_a_pattern():
    forms = descriptions(("striped", "red", "circle"))
    assert [description_text(form) for form in forms] == [
        "a photo of a striped red circle.",
        "a photo of a red circle.",
        "a photo of a red shape.",
        "a photo of a circle.",
        "a photo of a striped shape.",
    ]
    assert all(describes(form, ("striped", "red", "circle")) for form in forms)
    assert not describes((None, "red", "square"), ("striped", "red", "circle"))
    assert not describes(("dotted", None, None), ("striped", "red", "circle"))
    pattern = SceneObject(0, "striped", "square", "striped", "small", (1.0, 1.0), 1.0, 1.0)
    assert object_attributes(pattern) == ("striped", None, "square")
    assert [description_text(f) for f in descriptions(object_attributes(pattern))] == [
        "a photo of a striped square.",
        "a photo of a square.",
        "a photo of a striped shape.",
    ]


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
    with pytest.raises(ValueError, match="multiple"):
        pretrain_clip.parse_args(["--output-dir", str(tmp_path), "--image-size", "60"])
