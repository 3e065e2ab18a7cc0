"""The shipped world checkpoints (otseg_hf/pretrained): they load, reproduce their recorded metric table, and
the README's main job runs on them offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSemanticSegmentation, CLIPModel, pipeline

from otseg_hf.evaluation.evaluate import EvaluationSet, evaluate_model
from otseg_hf.hub.folders import default_image_processor
from otseg_hf.world.clip import world_clip_tokenizer
from otseg_hf.world.shapes import WORLD_CLASS_NAMES
from otseg_hf.world.splits import WORLD, WORLD_CLIP_DIR, WORLD_OTSEG_DIR, generated_dataset

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.5  # points; the same weights and images, only the thread count may change the rounding


@pytest.fixture(scope="module")
def shipped_model():
    return AutoModelForSemanticSegmentation.from_pretrained(WORLD_OTSEG_DIR).eval()


def test_shipped_model_is_the_inductive_world_model(shipped_model):
    config = shipped_model.config
    assert config.model_type == "otseg" and config.setting == "inductive"
    assert config.class_names == list(WORLD_CLASS_NAMES)
    assert sorted(config.unseen_label_ids) == sorted(WORLD.unseen_label_ids)
    assert {p.name for p in WORLD_OTSEG_DIR.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "eval_results.json",
    }
    assert sum(p.stat().st_size for p in WORLD_OTSEG_DIR.iterdir()) < 8 * 2**20  # a few MB


def test_shipped_model_reproduces_its_metric_table(shipped_model):
    recorded = json.loads((WORLD_OTSEG_DIR / "eval_results.json").read_text())
    data = generated_dataset(WORLD.name, 200, seed=1)
    dataset = EvaluationSet(data, default_image_processor(shipped_model.config), num_classes=20)
    with torch.no_grad():
        results = evaluate_model(shipped_model, dataset).compute()
    for key in ("mean_iou", "seen_mean_iou", "unseen_mean_iou", "harmonic_mean_iou"):
        assert 100 * results[key] == pytest.approx(100 * recorded[key], abs=TOLERANCE), key
    # zero-shot transfer: unseen classes are segmented far above what a constant guess gives
    assert results["unseen_mean_iou"] > 0.10


def test_shipped_clip_and_its_tokenizer():
    clip = CLIPModel.from_pretrained(WORLD_CLIP_DIR)
    assert clip.config.vision_config.image_size == 64
    tokenizer = world_clip_tokenizer()
    for name in WORLD_CLASS_NAMES:
        assert tokenizer.tokenize(f"a photo of a {name}.")[:4] == ["a</w>", "photo</w>", "of</w>", "a</w>"]
    results = json.loads((WORLD_CLIP_DIR / "zero_shot_results.json").read_text())
    assert results["image_unseen"] > 0.05  # chance among 20 classes


def test_pipeline_on_the_shipped_folder(shipped_model):
    from otseg_hf.world.demo import images_with_unseen_classes

    segmenter = pipeline("image-segmentation", model=str(WORLD_OTSEG_DIR))
    (image, label), *_ = images_with_unseen_classes(1)
    import PIL.Image

    segments = segmenter(PIL.Image.fromarray(image))
    assert segments and {s["label"] for s in segments} <= set(WORLD_CLASS_NAMES)
    assert all(s["mask"].size == (64, 64) for s in segments)


def test_main_job_runs_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "otseg_hf.world.demo", "--out", str(tmp_path), "--num-eval-images", "20"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "(unseen)" in result.stdout and "hIoU" in result.stdout
    assert len(list(tmp_path.glob("world_*_overlay.png"))) == 4
