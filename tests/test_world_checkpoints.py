"""The shipped world checkpoints (world v2): they load, reproduce their recorded metric tables on the reported
(test) images, beat their own frozen CLIP, and the README's main job runs on them offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import PIL.Image
import pytest
import torch
from transformers import AutoModelForSemanticSegmentation, AutoTokenizer, CLIPModel

from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter, evaluate_frozen_clip
from otseg_hf.evaluation.evaluate import EvaluationSet, evaluate_model
from otseg_hf.hub.folders import default_image_processor
from otseg_hf.world.scenes import WORLD_V2_CLASS_NAMES
from otseg_hf.world.splits import (
    GENERATED_SPLIT_SEEDS,
    WORLD,
    WORLD_CLIP_DIR,
    WORLD_OTSEG_DIR,
    WORLD_OTSEG_TRANSDUCTIVE_DIR,
    generated_dataset,
)

TOLERANCE = 0.5  # points; the same weights and images, only the thread count may change the rounding
KEYS = ("mean_iou", "seen_mean_iou", "unseen_mean_iou", "harmonic_mean_iou")


@pytest.fixture(scope="module")
def test_rows():
    return generated_dataset(WORLD.name, 200, seed=GENERATED_SPLIT_SEEDS["test"])


@pytest.fixture(scope="module")
def shipped_results(test_rows):
    results = {}
    for folder in (WORLD_OTSEG_DIR, WORLD_OTSEG_TRANSDUCTIVE_DIR):
        model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
        dataset = EvaluationSet(test_rows, default_image_processor(model.config), num_classes=26)
        with torch.no_grad():
            results[folder.name] = (model, evaluate_model(model, dataset).compute())
    return results


def test_shipped_models_are_the_world_models(shipped_results):
    for folder, setting in ((WORLD_OTSEG_DIR, "inductive"), (WORLD_OTSEG_TRANSDUCTIVE_DIR, "transductive")):
        config = shipped_results[folder.name][0].config
        assert config.model_type == "otseg" and config.setting == setting
        assert config.class_names == list(WORLD_V2_CLASS_NAMES)
        assert sorted(config.unseen_label_ids) == sorted(WORLD.unseen_label_ids)
        recorded = json.loads((folder / "eval_results.json").read_text())
        assert len(recorded["per_class"]) == 26
    total = sum(p.stat().st_size for d in (WORLD_CLIP_DIR, WORLD_OTSEG_DIR, WORLD_OTSEG_TRANSDUCTIVE_DIR)
                for p in d.iterdir())  # fmt: skip
    assert total < 8 * 2**20  # a few MB


@pytest.mark.parametrize("folder", [WORLD_OTSEG_DIR, WORLD_OTSEG_TRANSDUCTIVE_DIR], ids=lambda p: p.name)
def test_shipped_models_reproduce_their_tables(shipped_results, folder):
    recorded = json.loads((folder / "eval_results.json").read_text())
    results = shipped_results[folder.name][1]
    for key in KEYS:
        assert 100 * results[key] == pytest.approx(100 * recorded[key], abs=TOLERANCE), key


@pytest.fixture(scope="module")
def baseline_results(test_rows):
    segmenter = FrozenCLIPSegmenter.from_pretrained(WORLD_CLIP_DIR, WORLD.class_names, WORLD.prompt_templates,
                                                    WORLD.unseen_label_ids)  # fmt: skip
    return evaluate_frozen_clip(segmenter, test_rows).compute()


def test_frozen_baseline_reproduces_its_table(baseline_results):
    recorded = json.loads((WORLD_CLIP_DIR / "dense_baseline_results.json").read_text())
    for key in KEYS:
        assert 100 * baseline_results[key] == pytest.approx(100 * recorded[key], abs=TOLERANCE), key


def test_transductive_training_lifts_the_unseen_classes(shipped_results):
    inductive = shipped_results[WORLD_OTSEG_DIR.name][1]
    transductive = shipped_results[WORLD_OTSEG_TRANSDUCTIVE_DIR.name][1]
    assert transductive["unseen_mean_iou"] > inductive["unseen_mean_iou"]  # issue 13's goal, as it is stated


def test_trained_otseg_beats_its_frozen_clip(shipped_results, baseline_results):
    inductive = shipped_results[WORLD_OTSEG_DIR.name][1]
    assert inductive["harmonic_mean_iou"] >= baseline_results["harmonic_mean_iou"] + 0.10
    assert inductive["unseen_mean_iou"] > baseline_results["unseen_mean_iou"]


def test_shipped_clip_tokenizes_every_class_prompt():
    clip = CLIPModel.from_pretrained(WORLD_CLIP_DIR)
    assert clip.config.vision_config.image_size == 64
    tokenizer = AutoTokenizer.from_pretrained(WORLD_CLIP_DIR)
    for name in WORLD_V2_CLASS_NAMES:
        tokens = tokenizer.tokenize(f"a photo of a {name}.")
        assert tokens[4:-1] == [word + "</w>" for word in name.split()]
    results = json.loads((WORLD_CLIP_DIR / "zero_shot_results.json").read_text())
    assert results["patch_unseen"] > 1 / 26  # chance among 26 classes


def test_pipeline_on_the_shipped_folder():
    from transformers import pipeline

    from otseg_hf.world.demo import demo_rows

    segmenter = pipeline("image-segmentation", model=str(WORLD_OTSEG_DIR))
    (image, _), *_ = demo_rows(1, set(WORLD.unseen_label_ids))
    segments = segmenter(PIL.Image.fromarray(image))
    assert segments and {s["label"] for s in segments} <= set(WORLD_V2_CLASS_NAMES)
    assert all(s["mask"].size == (64, 64) for s in segments)


def test_main_job_runs_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "otseg_hf.demo", "--out", str(tmp_path), "--num-eval-images", "10"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "frozen CLIP (baseline)" in result.stdout and "hIoU" in result.stdout and "unseen" in result.stdout
    sheets = sorted(tmp_path.glob("sheet_*.png"))
    assert len(sheets) == 4 and (tmp_path / "overview.png").exists()
    assert PIL.Image.open(sheets[0]).width >= 4 * 256


def test_main_job_refuses_a_vocabulary_that_does_not_fit(tmp_path):
    from otseg_hf.world.shapes import SyntheticShapes

    data = tmp_path / "shapes"
    shapes = SyntheticShapes()  # 5 classes, not the model's 26
    shapes.to_dataset_dict(4, 4).save_to_disk(str(data))
    (data / "id2label.json").write_text(json.dumps(shapes.id2label))
    command = [sys.executable, "-m", "otseg_hf.demo", "--out", str(tmp_path / "out"), "--dataset-name",
               str(data), "--split", "validation"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "does not fit" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written
