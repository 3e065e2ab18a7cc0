"""Tests of `OTSegConfig`: the VOC inductive defaults, validation and serialisation.

Expected values are written from the spec (spec/otseg.md sections 1, 2, 5, 6, 7, 8, 9, 10), not
read back from the code under test.
"""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from otseg_hf import OTSegConfig
from otseg_hf.testing import tiny_clip_config

# spec section 10: the 20 PASCAL VOC classes, background dropped, 0-based; unseen 15..19
VOC_NAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip
# spec section 1: VOC's six templates
VOC_TEMPLATES = [
    "a photo of a {}.",
    "a portrait of a {}.",
    "a part of a {}.",
    "a segment of a {}.",
    "a photo of small {}.",
    "a photo of medium {}.",
]
SMALL_VOCABULARY = {0: "cat", 1: "dog", 2: "sky", 3: "road"}


# ---------------------------------------------------------------------------------------------------
# defaults: the VOC inductive recipe
# ---------------------------------------------------------------------------------------------------
def test_defaults_are_the_voc_inductive_recipe():
    config = OTSegConfig()
    vision = config.clip_config.vision_config
    # backbone: CLIP ViT-B/16 at 512 px, 12 layers of width 768, joint space 512 (spec section 2)
    assert (vision.patch_size, vision.image_size) == (16, 512)
    assert (vision.hidden_size, vision.num_hidden_layers) == (768, 12)
    assert vision.layer_norm_eps == 1e-5
    assert config.clip_config.projection_dim == 512
    assert config.projection_dim == 512
    assert config.clip_config.text_config.hidden_size == 512
    # vocabulary: the 20 VOC classes, seen 0..14, unseen 15..19 (spec section 10)
    assert config.id2label == dict(enumerate(VOC_NAMES))
    assert config.label2id == {name: i for i, name in enumerate(VOC_NAMES)}
    assert config.class_names == VOC_NAMES
    assert config.seen_label_ids == list(range(15))
    assert config.unseen_label_ids == [15, 16, 17, 18, 19]
    assert config.transductive is False
    assert config.setting == "inductive"
    assert config.prompt_templates == VOC_TEMPLATES
    # deep visual prompts (spec section 2.5-2.6)
    assert config.num_visual_prompts == 10
    assert config.visual_prompt_depth == 11
    assert config.visual_prompt_dropout == 0.1
    assert config.prompt_norm_eps == 1e-6
    # decoder (spec section 5)
    assert config.num_decoder_layers == 3
    assert config.decoder_ffn_dim == 4 * 512
    assert config.decoder_dropout == 0.1
    assert config.attention_dropout == 0.1
    assert config.decoder_layer_norm_eps == 1e-5
    # Sinkhorn (spec section 6)
    assert config.sinkhorn_epsilon == 0.05
    assert config.sinkhorn_max_iter == 100
    assert config.sinkhorn_tol == 1e-6
    # inference (spec section 7) and loss (spec section 8)
    assert config.ensemble_weight == 0.5
    assert config.seen_class_penalty == 0.1
    assert (config.focal_loss_weight, config.dice_loss_weight) == (100.0, 1.0)
    assert (config.focal_alpha, config.focal_gamma) == (0.25, 2.0)
    assert config.ignore_index == 255
    assert (config.inference_window_size, config.inference_window_stride) == (512, 426)
    assert config.model_type == "otseg"


def test_custom_vocabulary_without_seen_ids_is_fully_supervised():
    config = OTSegConfig(id2label=SMALL_VOCABULARY)
    assert config.seen_label_ids is None
    assert config.setting == "fully_supervised"
    assert config.unseen_label_ids == []
    assert config.class_names == ["cat", "dog", "sky", "road"]
    assert config.label2id == {"cat": 0, "dog": 1, "sky": 2, "road": 3}


def test_voc_vocabulary_can_be_made_fully_supervised():
    config = OTSegConfig(seen_label_ids=None)
    assert config.setting == "fully_supervised"
    assert len(config.id2label) == 20


def test_settings_and_unseen_ids_follow_seen_ids():
    inductive = OTSegConfig(id2label=SMALL_VOCABULARY, seen_label_ids=[3, 1])
    assert inductive.setting == "inductive"
    assert inductive.seen_label_ids == [3, 1]  # order kept: it is the order of the training logits
    assert inductive.unseen_label_ids == [0, 2]
    transductive = OTSegConfig(id2label=SMALL_VOCABULARY, seen_label_ids=[3, 1], transductive=True)
    assert transductive.setting == "transductive"
    assert transductive.unseen_label_ids == [0, 2]


def test_string_keys_of_id2label_are_accepted():
    # config.json stores the keys as strings
    config = OTSegConfig(id2label={"0": "cat", "1": "dog"}, label2id={"cat": 0, "dog": 1})
    assert config.id2label == {0: "cat", 1: "dog"}


def test_context_templates_are_accepted():
    templates = VOC_TEMPLATES + ["a photo of large {}.", "a background of a {}."]
    assert OTSegConfig(prompt_templates=templates).prompt_templates == templates


# ---------------------------------------------------------------------------------------------------
# validation: every invalid value raises ValueError naming the field
# ---------------------------------------------------------------------------------------------------
INVALID = [
    # (overrides, regex the message must match)
    (dict(seen_label_ids=[20]), "seen_label_ids"),
    (dict(seen_label_ids=[-1]), "seen_label_ids"),
    (dict(seen_label_ids=[0, 3, 0]), "seen_label_ids"),
    (dict(seen_label_ids="everything"), "seen_label_ids"),
    (dict(id2label=SMALL_VOCABULARY, seen_label_ids=[4]), "seen_label_ids"),
    (dict(id2label={}), "id2label"),
    (dict(id2label={0: "cat", 1: ""}), "class names"),
    (dict(id2label={0: "cat", 1: "   "}), "class names"),
    (dict(id2label={0: "cat", 1: 7}), "class names"),
    (dict(id2label={0: "cat", 1: "dog", 2: "cat"}), "duplicated class names"),
    (dict(id2label={0: "cat", 2: "dog"}), "id2label"),
    (dict(id2label={1: "cat", 2: "dog"}), "id2label"),
    (dict(id2label={0: "cat", 1: "dog"}, label2id={"cat": 1, "dog": 0}), "label2id"),
    (dict(id2label={0: "cat", 1: "dog"}, label2id={"cat": 0}), "label2id"),
    (dict(label2id={"cat": 0}), "label2id"),
    (dict(sinkhorn_epsilon=0.0), "sinkhorn_epsilon"),
    (dict(sinkhorn_epsilon=-0.05), "sinkhorn_epsilon"),
    (dict(sinkhorn_tol=-1e-6), "sinkhorn_tol"),
    (dict(sinkhorn_max_iter=0), "sinkhorn_max_iter"),
    (dict(prompt_norm_eps=0.0), "prompt_norm_eps"),
    (dict(decoder_layer_norm_eps=-1e-5), "decoder_layer_norm_eps"),
    (dict(visual_prompt_depth=12), "visual_prompt_depth"),  # ViT-B has 12 layers: at most 11
    (dict(visual_prompt_depth=-1), "visual_prompt_depth"),
    (dict(clip_config=tiny_clip_config(num_hidden_layers=3), visual_prompt_depth=3), "visual_prompt_depth"),
    (dict(transductive=True, seen_label_ids=None), "transductive"),
    (dict(transductive=True, seen_label_ids=list(range(20))), "transductive"),
    (dict(id2label=SMALL_VOCABULARY, transductive=True), "transductive"),
    (dict(prompt_templates=["a photo of a cat."]), "template"),
    (dict(prompt_templates=["a {} and a {}."]), "template"),
    (dict(prompt_templates=["a photo of a {}.", 3]), "template"),
    (dict(prompt_templates=[]), "template"),
    (dict(visual_prompt_dropout=1.0), "visual_prompt_dropout"),
    (dict(visual_prompt_dropout=-0.1), "visual_prompt_dropout"),
    (dict(decoder_dropout=1.5), "decoder_dropout"),
    (dict(attention_dropout=-0.01), "attention_dropout"),
    (dict(ignore_index=0), "ignore_index"),
    (dict(ignore_index=19), "ignore_index"),
    (dict(id2label=SMALL_VOCABULARY, ignore_index=3), "ignore_index"),
    (dict(num_visual_prompts=0), "num_visual_prompts"),
    (dict(num_visual_prompts=2.5), "num_visual_prompts"),
    (dict(num_visual_prompts=True), "num_visual_prompts"),
    (dict(num_decoder_layers=0), "num_decoder_layers"),
    (dict(decoder_ffn_dim=0), "decoder_ffn_dim"),
    (dict(ensemble_weight=1.5), "ensemble_weight"),
    (dict(ensemble_weight=-0.5), "ensemble_weight"),
    (dict(focal_loss_weight=-1.0), "focal_loss_weight"),
    (dict(dice_loss_weight=-1.0), "dice_loss_weight"),
    (dict(focal_gamma=-2.0), "focal_gamma"),
    (dict(seen_class_penalty=-1.5), "seen_class_penalty"),
    (dict(seen_class_penalty=1.5), "seen_class_penalty"),
    (dict(focal_alpha=1.25), "focal_alpha"),
    (dict(inference_window_size=500), "inference_window_size"),  # not a multiple of 16
    (dict(inference_window_size=8), "inference_window_size"),  # smaller than a patch
    (dict(inference_window_stride=0), "inference_window_stride"),
    (dict(clip_config="ViT-B/16"), "clip_config"),
    (
        dict(
            clip_config=tiny_clip_config(image_size=36, patch_size=8),
            visual_prompt_depth=2,
            inference_window_size=32,
            inference_window_stride=24,
        ),
        "image_size",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "field"), INVALID, ids=[f"{i}-{f}" for i, (_, f) in enumerate(INVALID)]
)
def test_invalid_values_raise_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        OTSegConfig(**overrides)


def test_valid_edge_values_are_accepted():
    # the largest depth (layers - 1), no dropout, a negative ignore index and a one-layer decoder are fine
    config = OTSegConfig(
        visual_prompt_depth=11,
        visual_prompt_dropout=0.0,
        decoder_dropout=0.0,
        attention_dropout=0.0,
        ignore_index=-1,
        num_decoder_layers=1,
        ensemble_weight=1.0,
        sinkhorn_tol=0.0,  # the opt-in fixed iteration count
    )
    assert config.visual_prompt_depth == 11
    assert config.ignore_index == -1
    assert config.sinkhorn_tol == 0.0


# ---------------------------------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------------------------------
NON_DEFAULT_FIELDS = dict(
    seen_label_ids=[3, 0],
    transductive=True,
    prompt_templates=["a {}", "the {}."],
    num_visual_prompts=4,
    visual_prompt_depth=3,
    visual_prompt_dropout=0.2,
    prompt_norm_eps=1e-5,
    num_decoder_layers=4,
    decoder_ffn_dim=64,
    decoder_dropout=0.3,
    attention_dropout=0.0,
    decoder_layer_norm_eps=1e-6,
    sinkhorn_epsilon=0.1,
    sinkhorn_max_iter=50,
    sinkhorn_tol=1e-5,
    ensemble_weight=0.7,
    seen_class_penalty=0.2,
    focal_loss_weight=20.0,
    dice_loss_weight=2.0,
    focal_alpha=0.5,
    focal_gamma=1.5,
    ignore_index=-1,
    inference_window_size=64,
    inference_window_stride=40,
    initializer_range=0.05,
)


def _non_default_config() -> OTSegConfig:
    return OTSegConfig(
        clip_config=tiny_clip_config(image_size=32, patch_size=8, num_hidden_layers=4, projection_dim=16),
        id2label=SMALL_VOCABULARY,
        **NON_DEFAULT_FIELDS,
    )


def test_non_default_config_holds_its_values():
    # guards the round-trip test: every field really differs from its default
    config, default = _non_default_config(), OTSegConfig()
    for name, value in NON_DEFAULT_FIELDS.items():
        assert getattr(config, name) == value, name
        assert getattr(default, name) != value, name


@pytest.mark.parametrize("load", ["config", "auto"])
def test_save_pretrained_round_trip_keeps_every_field(tmp_path, load):
    config = _non_default_config()
    config.save_pretrained(tmp_path)
    loaded = (OTSegConfig if load == "config" else AutoConfig).from_pretrained(tmp_path)
    assert type(loaded) is OTSegConfig
    for name, value in NON_DEFAULT_FIELDS.items():
        assert getattr(loaded, name) == value, name
    assert loaded.id2label == SMALL_VOCABULARY
    assert loaded.label2id == {"cat": 0, "dog": 1, "sky": 2, "road": 3}
    assert loaded.setting == "transductive"
    assert loaded.unseen_label_ids == [1, 2]
    vision = loaded.clip_config.vision_config
    assert (vision.image_size, vision.patch_size, vision.num_hidden_layers, vision.hidden_size) == (
        32,
        8,
        4,
        32,
    )
    assert loaded.clip_config.text_config.vocab_size == 514
    assert loaded.projection_dim == 16
    # everything else serialised is equal too (`_name_or_path` records where it was loaded from)
    saved, reloaded = config.to_dict(), loaded.to_dict()
    saved.pop("_name_or_path"), reloaded.pop("_name_or_path")
    assert reloaded == saved


@pytest.mark.parametrize("seen_label_ids", [None, [0, 2]])
def test_round_trip_keeps_the_setting(tmp_path, seen_label_ids):
    # a saved fully supervised model must not come back inductive, nor the reverse
    config = OTSegConfig(id2label=SMALL_VOCABULARY, seen_label_ids=seen_label_ids)
    config.save_pretrained(tmp_path)
    loaded = OTSegConfig.from_pretrained(tmp_path)
    assert loaded.seen_label_ids == seen_label_ids
    assert loaded.setting == config.setting


def test_default_config_round_trip(tmp_path):
    OTSegConfig().save_pretrained(tmp_path)
    loaded = OTSegConfig.from_pretrained(tmp_path)
    assert loaded.seen_label_ids == list(range(15))
    assert loaded.id2label == dict(enumerate(VOC_NAMES))
    assert loaded.clip_config.vision_config.image_size == 512
