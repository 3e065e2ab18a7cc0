"""What `OTSegConfig` and `ZegOTConfig` share (otseg_hf/model/configuration_base.py): the vocabulary, the label
setting and the checks of the common fields. Every test runs on both configurations."""

from __future__ import annotations

import pytest

from otseg_hf import OTSegConfig, ZegOTConfig
from otseg_hf.testing import tiny_clip_config

CONFIGS = [OTSegConfig, ZegOTConfig]
VOCABULARY = {0: "cat", 1: "dog", 2: "sky", 3: "road", 4: "tree"}


def tiny(config_class, **kwargs):
    """Tiny backbone (4 vision blocks, so ZegOT's last three are a proper subset); the OTSeg prompt depth fits."""
    extra = {"visual_prompt_depth": 2} if config_class is OTSegConfig else {}
    return config_class(clip_config=tiny_clip_config(num_hidden_layers=4), **extra, **kwargs)


@pytest.mark.parametrize("config_class", CONFIGS)
def test_num_labels_without_names_gives_placeholders_and_a_warning(config_class):
    # issue 15: as every transformers config (was an error); the warning says the names must be set
    with pytest.warns(UserWarning, match=r"num_labels=20 without id2label.*set_class_names"):
        config = config_class(num_labels=20)  # even VOC's size: not VOC's names
    assert config.class_names == [f"LABEL_{i}" for i in range(20)] and config.seen_label_ids is None
    with pytest.raises(ValueError, match="num_labels must be an integer >= 1, got 0"):
        config_class(num_labels=0)
    with pytest.raises(ValueError, match="label2id without id2label"):
        config_class(label2id={"cat": 0})


@pytest.mark.parametrize("config_class", CONFIGS)
def test_num_labels_must_agree_with_id2label(config_class):
    config = tiny(config_class, id2label=VOCABULARY, num_labels=5)
    assert config.num_labels == 5 and config.class_names == ["cat", "dog", "sky", "road", "tree"]
    with pytest.raises(ValueError, match="num_labels=3 does not match the 5 classes"):
        tiny(config_class, id2label=VOCABULARY, num_labels=3)


@pytest.mark.parametrize("config_class", CONFIGS)
def test_loading_with_another_num_labels_is_an_error(config_class, tmp_path):
    tiny(config_class, id2label=VOCABULARY, seen_label_ids=[0, 1]).save_pretrained(tmp_path)
    assert config_class.from_pretrained(tmp_path, num_labels=5).num_labels == 5
    with pytest.raises(ValueError, match="num_labels=7 does not match"):
        config_class.from_pretrained(tmp_path, num_labels=7)


@pytest.mark.parametrize("config_class", CONFIGS)
def test_default_vocabulary_is_voc_with_its_split(config_class):
    config = config_class()
    assert len(config.class_names) == 20 and config.class_names[0] == "aeroplane"
    assert config.class_names[-1] == "tvmonitor"
    assert config.seen_label_ids == list(range(15)) and config.unseen_label_ids == [15, 16, 17, 18, 19]
    assert config.setting == "inductive" and config.projection_dim == 512


@pytest.mark.parametrize("config_class", CONFIGS)
@pytest.mark.parametrize(
    "seen, transductive, setting, unseen",
    [
        (None, False, "fully_supervised", []),
        ([0, 3], False, "inductive", [1, 2, 4]),
        ([4], True, "transductive", [0, 1, 2, 3]),
    ],
)
def test_settings(config_class, seen, transductive, setting, unseen):
    config = tiny(config_class, id2label=VOCABULARY, seen_label_ids=seen, transductive=transductive)
    assert config.setting == setting and config.unseen_label_ids == unseen
    assert config.label2id == {"cat": 0, "dog": 1, "sky": 2, "road": 3, "tree": 4}


@pytest.mark.parametrize("config_class", CONFIGS)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(id2label={0: "cat", 1: "cat"}), "duplicated class names"),
        (dict(id2label={0: "cat", 2: "dog"}), "keys must be 0..1"),
        (dict(id2label={0: "cat", 1: " "}), "non-empty strings"),
        (dict(id2label=VOCABULARY, label2id={"cat": 1}), "label2id does not match"),
        (dict(id2label=VOCABULARY, seen_label_ids=[0, 5]), r"seen_label_ids \[5\] are out of range"),
        (dict(id2label=VOCABULARY, seen_label_ids=[1, 1]), "duplicates"),
        (dict(id2label=VOCABULARY, seen_label_ids=None, transductive=True), "transductive=True needs unseen"),
        (dict(seen_label_ids="all"), "seen_label_ids must be a list"),
        (dict(clip_config=3), "clip_config must be a CLIPConfig"),
        (dict(sinkhorn_epsilon=0.0), "sinkhorn_epsilon"),
        (dict(sinkhorn_max_iter=0), "sinkhorn_max_iter"),
        (dict(focal_alpha=1.5), "focal_alpha"),
        (dict(dice_loss_weight=-1.0), "dice_loss_weight"),
        (dict(ignore_index=3), "ignore_index"),
        (dict(inference_window_size=36), "multiple of the patch size"),
    ],
)
def test_shared_checks(config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        if "clip_config" in kwargs:
            config_class(**kwargs)
        else:
            tiny(config_class, **kwargs)


def test_tokenizer_templates_are_what_each_model_tokenizes():
    assert tiny(OTSegConfig, prompt_templates=["a {}.", "the {}!"]).tokenizer_templates == [
        "a {}.",
        "the {}!",
    ]
    assert tiny(ZegOTConfig, class_name_format="{} here.").tokenizer_templates == ["{} here."]
