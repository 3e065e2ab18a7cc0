"""The rules written once and shared: the seen-class channels (evaluation and pipelines), the tokenizer loader
(CLIs, converter, training) and hIoU (metrics and model cards)."""

from __future__ import annotations

import math

import pytest

from otseg_hf import OTSegConfig
from otseg_hf.hub.cards import check_eval_results
from otseg_hf.model.image_processing_otseg import penalised_label_ids
from otseg_hf.model.processing_otseg import load_tokenizer
from otseg_hf.testing import tiny_clip_config

NAMES = {0: "cat", 1: "dog", 2: "sky", 3: "road"}


def config(seen_label_ids, transductive=False):
    return OTSegConfig(
        clip_config=tiny_clip_config(),
        id2label=NAMES,
        seen_label_ids=seen_label_ids,
        transductive=transductive,
        visual_prompt_depth=2,
    )


def test_penalised_channels_are_the_seen_classes_found_by_name():
    inductive = config([2, 0])
    assert sorted(penalised_label_ids(inductive)) == [0, 2]  # own vocabulary: the seen ids
    assert penalised_label_ids(inductive, ["road", "cat", "tree", "sky"]) == [
        1,
        3,
    ]  # another order, a new class
    assert penalised_label_ids(inductive, ["tree"]) == []
    assert penalised_label_ids(config([2, 0], transductive=True)) is None
    assert penalised_label_ids(config(None)) is None


def test_load_tokenizer_says_where_none_was_found(tmp_path):
    assert load_tokenizer(tmp_path) is None
    with pytest.raises(ValueError, match=rf"no tokenizer found at '{tmp_path}': pass one"):
        load_tokenizer(tmp_path, "pass one")


def test_model_card_hiou_is_the_metrics_one():
    (result,) = check_eval_results(
        {"dataset_name": "VOC", "dataset_type": "voc", "miou_seen": 60, "miou_unseen": 40}
    )
    assert result["hiou"] == pytest.approx(48.0)  # 2 * 60 * 40 / 100
    (zero,) = check_eval_results(
        {"dataset_name": "VOC", "dataset_type": "voc", "miou_seen": 0, "miou_unseen": 0}
    )
    assert zero["hiou"] == 0.0 and not math.isnan(zero["hiou"])
