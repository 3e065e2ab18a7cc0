"""The rules written once and shared: the seen-class channels (evaluation and pipelines), the tokenizer loader
(CLIs, converter, training), hIoU (metrics and model cards) and the vocabulary of a command (train.py,
evaluate.py, the converter)."""

from __future__ import annotations

import math

import pytest

from otseg_hf import OTSegConfig
from otseg_hf.cli.convert import parse_args
from otseg_hf.data.splits import DATASETS, resolve_vocabulary
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


def test_one_vocabulary_rule_for_train_evaluate_and_the_converter():
    voc = DATASETS["voc"]
    default = resolve_vocabulary(voc)
    assert default.class_names == voc.class_names and default.unseen_label_ids == (15, 16, 17, 18, 19)
    assert resolve_vocabulary(voc, unseen_label_ids=[1]).seen_label_ids == tuple(
        i for i in range(20) if i != 1
    )
    assert resolve_vocabulary(voc, ["a", "b", "c"], seen_label_ids=[2, 0]).seen_label_ids == (
        2,
        0,
    )  # order kept
    assert (
        resolve_vocabulary(voc, ["a", "b"]).seen_label_ids is None
    )  # other names: the split's ids do not apply
    assert resolve_vocabulary(None, default_class_names=["x", "y"]).class_names == ("x", "y")
    with pytest.raises(ValueError, match=r"--unseen-label-ids \[5\] are out of range for 2 classes"):
        resolve_vocabulary(None, ["a", "b"], unseen_label_ids=[5])
    with pytest.raises(ValueError, match="--class-names"):
        resolve_vocabulary()


@pytest.mark.parametrize("spelling", ["fully_supervised", "fully-supervised"])
def test_converter_accepts_both_spellings_of_fully_supervised(spelling):
    args = parse_args(["--checkpoint", "c.pth", "--out", "o", "--setting", spelling])
    assert (
        args.setting == spelling
    )  # convert_checkpoint maps the alias (tests/test_convert_reference_checkpoint.py)
