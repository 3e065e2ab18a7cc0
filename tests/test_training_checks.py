"""training/evaluate.py and training/train.py refuse bad arguments with a clear error before any work: window
and stride, sizes, the model folder, the output path, unknown config overrides, empty or bad splits."""

from __future__ import annotations

import pytest
from transformers import CLIPModel

from otseg_hf.hub.folders import save_otseg_folder
from otseg_hf.testing import tiny_clip_config

TINY = [
    "--recipe", "otseg-synthetic-inductive", "--num-train-images", "8", "--num-eval-images", "2",
    "--per-device-batch-size", "2", "--total-batch-size", "2", "--max-steps", "1", "--cpu",
]  # fmt: skip


@pytest.fixture
def model_folder(make_model, tokenizer, tmp_path):
    folder = tmp_path / "model"
    save_otseg_folder(make_model(), folder, tokenizer=tokenizer)
    return folder


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window-size", "8", "--stride", "1000"], "stride 1000 is larger than window_size 8"),
        (["--stride", "1000"], "stride 1000 is larger than window_size 32"),
        (["--window-size", "0"], "--window-size must be at least 1, got 0"),
        (["--stride", "0"], "--stride must be at least 1, got 0"),
        (["--max-images", "0"], "--max-images must be at least 1"),
        (["--window-batch-size", "0"], "--window-batch-size must be at least 1"),
    ],
)
def test_evaluate_refuses_bad_numbers_before_evaluating(model_folder, tmp_path, extra, message):
    from training.evaluate import main

    output = tmp_path / "out.json"
    with pytest.raises(ValueError, match=message):
        main(["--model", str(model_folder), "--dataset", "synthetic", "--num-images", "2", "--cpu",
              "--output", str(output), *extra])  # fmt: skip
    assert not output.exists()


def test_evaluate_refuses_a_missing_or_clip_model_and_a_folder_as_output(model_folder, tmp_path):
    from training.evaluate import main

    common = ["--dataset", "synthetic", "--num-images", "2", "--cpu"]
    with pytest.raises(ValueError, match="no such folder"):
        main(["--model", str(tmp_path / "nothing"), *common])
    clip = tmp_path / "clip"
    CLIPModel(tiny_clip_config()).save_pretrained(clip)
    with pytest.raises(ValueError, match="is a 'clip' model .*not an OTSeg or ZegOT model folder"):
        main(["--model", str(clip), *common])
    with pytest.raises(ValueError, match="--output .* is a folder"):
        main(["--model", str(model_folder), *common, "--output", str(tmp_path)])


def test_evaluate_checks_the_split_before_evaluating(model_folder, tmp_path):
    import numpy as np
    from datasets import DatasetDict
    from PIL import Image

    from otseg_hf.world.splits import generated_dataset
    from training.evaluate import main

    data = generated_dataset("synthetic", 3, seed=1, image_size=32)

    def shift(row):
        label = np.asarray(row["label"]).astype(np.uint8).copy()
        label[-1, -1] = 7
        return {"label": Image.fromarray(label)}

    folder = tmp_path / "data"
    DatasetDict({"validation": data.map(shift), "empty": data.select(range(0))}).save_to_disk(str(folder))
    common = ["--model", str(model_folder), "--dataset", "synthetic", "--dataset-name", str(folder), "--cpu"]
    with pytest.raises(ValueError, match=r"label ids \[7\] in the split 'validation' .*, row 0 are outside"):
        main([*common, "--output", str(tmp_path / "r.json")])
    with pytest.raises(ValueError, match="is empty"):
        main([*common, "--split", "empty"])
    with pytest.raises(ValueError, match=r"has no column \['mask'\]"):
        main([*common, "--label-column", "mask"])
    assert not (tmp_path / "r.json").exists()


def test_train_refuses_unknown_overrides_and_overrides_of_a_saved_model(tmp_path, model_folder):
    from otseg_hf import OTSegConfig
    from training.train import main, parse_overrides

    with pytest.raises(ValueError, match="OTSegConfig has no field 'nosuchfield'"):
        parse_overrides(["nosuchfield=1"], OTSegConfig)
    with pytest.raises(ValueError, match="no field 'ensemble_weigth' \\(did you mean ensemble_weight"):
        main([*TINY, "--output-dir", str(tmp_path / "a"), "--model-override", "ensemble_weigth=0"])
    assert parse_overrides(["ensemble_weight=0"], OTSegConfig) == {"ensemble_weight": 0}
    with pytest.raises(ValueError, match="--model-override .* with --init-from"):
        main([*TINY, "--output-dir", str(tmp_path / "b"), "--init-from", str(model_folder),
              "--model-override", "ensemble_weight=0"])  # fmt: skip
    with pytest.raises(ValueError, match="--init-from .*: no such folder"):
        main([*TINY, "--output-dir", str(tmp_path / "c"), "--init-from", str(tmp_path / "missing")])
    assert not any((tmp_path / n).exists() for n in "abc")
