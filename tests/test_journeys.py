"""Issue 14, user journeys: the command-line error convention and --help defaults, export reading what training
writes, the recipe for your own data, the background (a class of its own, or a score threshold), cards,
pictures, and the libraries' noise."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import CLIPVisionConfig

from otseg_hf.cli.conventions import run_cli
from otseg_hf.cli.export import main as export_main
from otseg_hf.cli.segment import main as segment_main
from otseg_hf.evaluation.plots import SEEN_COLOR, UNSEEN_COLOR, confusion_matrix_image, per_class_iou_chart
from otseg_hf.model.image_processing_otseg import UNLABELLED, OTSegImageProcessor
from otseg_hf.recipes import RECIPES, adapt_to_data
from otseg_hf.world.splits import WORLD_OTSEG_DIR

ROOT = Path(__file__).resolve().parents[1]
# training/train.py as a module (not through sys.path: training/evaluate.py would shadow the `evaluate` package)
_spec = importlib.util.spec_from_file_location("otseg_training_train", ROOT / "training" / "train.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
ENV.pop("OTSEG_DEBUG", None)


# ---- errors: exit code 2, one line naming the flag, the traceback only on request ---------------------------
def test_a_missing_model_folder_is_one_line_naming_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OTSEG_DEBUG", raising=False)
    image = tmp_path / "a.png"
    PIL.Image.new("RGB", (8, 8)).save(image)
    argv = [str(image), "--model", "my-otseg", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(segment_main, "otseg-segment", argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("otseg-segment: error: --model my-otseg: no such folder") and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(ValueError, match="--model my-otseg"):  # --debug: the exception itself
        run_cli(segment_main, "otseg-segment", [*argv, "--debug"])
    monkeypatch.setenv("OTSEG_DEBUG", "1")
    with pytest.raises(ValueError):
        run_cli(segment_main, "otseg-segment", argv)


def test_training_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OTSEG_DEBUG", raising=False)
    common = ["--recipe", "otseg-synthetic-inductive", "--output-dir", str(tmp_path / "run")]
    cases = {
        "--unseen-label-ids": ["--class-names", "a", "b"],
        "--background-name": ["--background-name", "bg", "--reduce-labels"],
        "--dataset-name and --class-names": ["--recipe", "custom"],
    }
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        cases["--report-to tensorboard"] = ["--report-to", "tensorboard"]
    for flag, extra in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            run_cli(train.main, "train.py", [*common, *extra])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("train.py: error:") and flag in err, err
        assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_console_script_exit_code_and_help_defaults(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "otseg_hf.cli.export", str(tmp_path / "nothing-here"), str(tmp_path / "out")],
        capture_output=True, text=True, env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "MODEL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    helped = subprocess.run(
        [sys.executable, "training/train.py", "--help"], capture_output=True, text=True, env=ENV, cwd=ROOT
    )
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "images per process and forward (default: 4)" in text and "(default: 1000)" in text


# ---- export reads what training writes --------------------------------------------------------------------
def test_export_reads_the_training_folders_results(tmp_path):
    recorded = json.loads((WORLD_OTSEG_DIR / "eval_results.json").read_text())  # fractions, as training writes
    export_main([str(WORLD_OTSEG_DIR), str(tmp_path / "a")])  # no flag: the folder's eval_results.json
    export_main([str(WORLD_OTSEG_DIR), str(tmp_path / "b"), "--eval-results", str(WORLD_OTSEG_DIR / "eval_results.json")])
    for name in ("a", "b"):
        data = ModelCard.load(tmp_path / name / "README.md").data
        metrics = {r.metric_name: (r.metric_type, r.metric_value) for r in data.eval_results}
        assert metrics["mIoU(S)"] == ("mean_iou", round(100 * recorded["seen_mean_iou"], 2))
        assert metrics["mIoU(U)"] == ("mean_iou", round(100 * recorded["unseen_mean_iou"], 2))
        assert metrics["mIoU"] == ("mean_iou", round(100 * recorded["mean_iou"], 2))
        assert metrics["pixel accuracy"] == ("accuracy", round(100 * recorded["overall_accuracy"], 2))
        assert "No evaluation results" not in (tmp_path / name / "README.md").read_text()


def test_export_rejects_fractions_out_of_range(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset_name": "x", "dataset_type": "x", "mean_iou": 33.6, "seen_mean_iou": 0.3}))
    with pytest.raises(ValueError, match="mean_iou must be a fraction"):
        export_main([str(WORLD_OTSEG_DIR), str(tmp_path / "out"), "--eval-results", str(bad)])
    assert not (tmp_path / "out").exists()


# ---- cards made by training -------------------------------------------------------------------------------
def test_training_card_fields_name_hub_ids_only(tmp_path):
    local = tmp_path / "my-data"
    local.mkdir()
    recipe = RECIPES["otseg-voc-inductive"]
    args = Namespace(dataset_name=str(local), dataset_config=None, eval_split="validation", init_from=None)
    assert train.dataset_fields(args, recipe)["dataset_name"] == "my-data"
    assert train.card_fields(args, recipe) == {"base_model": "openai/clip-vit-base-patch16"}
    args.dataset_name = "me/street-scenes"
    assert train.card_fields(args, recipe)["datasets"] == ["me/street-scenes"]
    assert train.card_fields(args, recipe.replace(clip=str(local))) == {"datasets": ["me/street-scenes"]}


# ---- your own data ----------------------------------------------------------------------------------------
def test_custom_recipe_adapts_to_the_clip_and_the_images():
    base16 = CLIPVisionConfig(image_size=224, patch_size=16, num_hidden_layers=12)
    recipe = adapt_to_data(RECIPES["custom"], base16, 96, ["a", "b", "c"], [2])
    assert recipe.crop_size == 96 and recipe.rescale_scale == (384, 96)  # the images are smaller than CLIP's
    assert recipe.model_overrides == {
        "inference_window_size": 96, "inference_window_stride": 64, "visual_prompt_depth": 11,
    }  # fmt: skip
    assert recipe.split.test_short_side == 96 and recipe.split.unseen_label_ids == (2,)
    tiny = CLIPVisionConfig(image_size=64, patch_size=8, num_hidden_layers=4)
    recipe = adapt_to_data(RECIPES["custom"], tiny, 500, ["a", "b"], [1])
    assert recipe.crop_size == 64 and recipe.model_overrides["inference_window_stride"] == 40  # 42 -> 5 patches
    assert recipe.model_overrides["visual_prompt_depth"] == 3
    assert adapt_to_data(RECIPES["custom"], tiny, 500, ["a", "b"], [1], crop_size=50).crop_size == 48
    with pytest.raises(ValueError, match="smaller than one CLIP patch"):
        adapt_to_data(RECIPES["custom"], tiny, 5, ["a", "b"], [1])


def test_background_name_is_class_zero(tmp_path):
    out = tmp_path / "run"
    train.main([
        "--recipe", "otseg-synthetic-inductive", "--output-dir", str(out), "--max-steps", "1",
        "--num-train-images", "4", "--per-device-batch-size", "4", "--total-batch-size", "4",
        "--eval-split", "none", "--background-name", "background",
        "--class-names", "blue square", "green triangle", "yellow star", "striped square",
        "--unseen-label-ids", "3", "--checkpointing-steps", "0",
    ])  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == "background" and config["id2label"]["1"] == "blue square"
    assert config["seen_label_ids"] == [0, 1, 2, 4]


# ---- the score threshold ----------------------------------------------------------------------------------
def test_threshold_leaves_low_scores_unlabelled():
    # probabilities of 2 classes at 3 pixels; best scores 0.9, 0.4, 0.55
    probabilities = torch.tensor([[[[0.9, 0.4, 0.2]], [[0.1, 0.3, 0.55]]]])
    processor = OTSegImageProcessor()
    (off,) = processor.post_process_semantic_segmentation({"probabilities": probabilities})
    (on,) = processor.post_process_semantic_segmentation({"probabilities": probabilities}, threshold=0.5)
    assert off.tolist() == [[0, 0, 1]] and on.tolist() == [[0, UNLABELLED, 1]]
    with pytest.raises(ValueError, match="threshold"):
        processor.post_process_semantic_segmentation({"probabilities": probabilities}, threshold=1.5)


def test_pipelines_and_segment_take_the_threshold(tmp_path):
    from transformers import pipeline

    import otseg_hf  # noqa: F401

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    segmenter = pipeline("image-segmentation", model=str(WORLD_OTSEG_DIR))
    everything = segmenter(image)
    covered = sum(np.asarray(s["mask"]) > 0 for s in everything)
    assert covered.min() == 1 and covered.max() == 1  # off: every pixel in exactly one mask
    assert segmenter(image, threshold=1.0) == []  # no probability reaches 1: every pixel unlabelled
    zero_shot = pipeline("zero-shot-image-segmentation", model=str(WORLD_OTSEG_DIR))
    assert zero_shot(image, candidate_labels=["red circle", "blue square"], threshold=1.0) == []
    path = tmp_path / "x.png"
    PIL.Image.fromarray(image).save(path)
    segment_main([str(path), "--model", str(WORLD_OTSEG_DIR), "--out", str(tmp_path / "o"), "--threshold", "1"])
    labels = np.asarray(PIL.Image.open(tmp_path / "o" / "x_labels.png"))
    assert (labels == 255).all()  # unlabelled in the label PNG
    overlay = np.asarray(PIL.Image.open(tmp_path / "o" / "x_overlay.png").convert("RGB"))
    assert (overlay[:40, :52] == image).all()  # nothing coloured in


# ---- pictures ---------------------------------------------------------------------------------------------
def test_per_class_chart_bars_are_proportional_and_coloured_by_split():
    results = {"per_class": [
        {"name": "cat", "split": "seen", "iou": 0.25}, {"name": "dog", "split": "unseen", "iou": 0.75},
        {"name": "cow", "split": "seen", "iou": None},
    ]}  # fmt: skip
    pixels = np.asarray(per_class_iou_chart(results))
    seen = (pixels == SEEN_COLOR).all(-1).sum(axis=1)
    unseen = (pixels == UNSEEN_COLOR).all(-1).sum(axis=1)
    seen_bar, unseen_bar = seen[24:40].max(), unseen[40:56].max()  # rows of cat and dog (16 px each)
    assert seen_bar == 90 and unseen_bar == 270  # 360 px x IoU
    assert unseen[24:40].max() == 0 and seen[56:].max() == 0  # no bar for a class without pixels


def test_confusion_matrix_image_is_row_normalised():
    image = np.asarray(confusion_matrix_image(np.array([[2, 0], [1, 1]]), ["a", "b"], cell=10).convert("L"))
    name_width, top = 8 + 6 + 24, 30
    cell = lambda i, j: image[top + 10 * i + 5, name_width + 10 * j + 5]  # noqa: E731
    assert cell(0, 0) == 0 and cell(0, 1) == 255 and cell(1, 0) == 128 and cell(1, 1) == 128


def test_evaluation_without_reduce_labels_says_so():
    from otseg_hf.evaluation.evaluate import EvaluationSet

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    label = np.zeros((8, 8), dtype=np.uint8)
    label[:4] = 2  # background 0, classes 1..2 -> ids up to K
    rows = [{"image": PIL.Image.fromarray(image), "label": PIL.Image.fromarray(label)}]
    processor = OTSegImageProcessor(size={"shortest_edge": 8}, size_divisor=8)
    with pytest.raises(ValueError, match="pass --reduce-labels"):
        EvaluationSet(rows, processor, num_classes=2)[0]
    EvaluationSet(rows, processor, num_classes=2, do_reduce_labels=True)[0]  # and with it, no error


def test_the_converter_follows_the_convention(tmp_path, capsys, monkeypatch):
    from otseg_hf.cli.convert import cli

    monkeypatch.delenv("OTSEG_DEBUG", raising=False)
    checkpoint = tmp_path / "bad.pth"
    checkpoint.write_text("not a checkpoint")
    argv = ["--checkpoint", str(checkpoint), "--dataset", "voc", "--setting", "inductive", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("otseg-convert-reference: error:") and "\n" not in err
    with pytest.raises(ValueError):
        cli([*argv, "--debug"])


def test_training_is_quiet_about_checkpoints_and_loads(tmp_path):
    """No accelerate INFO lines per checkpoint, no transformers bar per load or save (the run's own progress bar,
    its prints and warnings stay)."""
    done = subprocess.run(
        [sys.executable, "training/train.py", "--recipe", "otseg-synthetic-inductive", "--output-dir",
         str(tmp_path / "run"), "--max-steps", "2", "--num-train-images", "4", "--per-device-batch-size", "2",
         "--total-batch-size", "2", "--checkpointing-steps", "1", "--eval-split", "none"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints").is_dir()  # checkpoints were written ...
    output = done.stdout + done.stderr
    for noise in ("Saving current state", "Model weights saved", "Writing model shards", "Loading weights"):
        assert noise not in output, noise  # ... silently
    assert "total batch 2" in done.stdout
