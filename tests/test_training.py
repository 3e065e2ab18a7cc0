"""training/train.py and training/evaluate.py end to end on the synthetic data, with 1 and 2 processes.

The 2-process runs use `accelerate launch --multi_gpu --num_processes 2 ... --cpu`: torchrun starts the
processes and `--cpu` makes them a gloo (MULTI_CPU) group. (`accelerate launch --cpu --num_processes 2`
starts a single process unless MPI is set up.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from otseg_hf.evaluation.evaluate import EvaluationSet, evaluate_model
from otseg_hf.hub.folders import default_image_processor
from otseg_hf.world.shapes import SyntheticShapes

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "training" / "train.py")
EVALUATE = str(ROOT / "training" / "evaluate.py")
# tiny run: 24 images, 2 per device, total batch 8 -> 4 accumulation steps on 1 process, 2 on 2
TINY_RUN = [
    "--recipe", "otseg-synthetic-inductive", "--num-train-images", "24", "--num-eval-images", "5",
    "--per-device-batch-size", "2", "--warmup-steps", "2", "--logging-steps", "1",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args: list[str], processes: int = 1, port: int = 29611) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), *args, "--cpu",
        ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-2proc")
    result = run(
        [TRAIN, *TINY_RUN, "--output-dir", str(out), "--max-steps", "12", "--checkpointing-steps", "6"], 2
    )
    return out, result


def test_two_processes_train_with_accumulation_and_write_checkpoints(two_process_run):
    out, result = two_process_run
    assert "total batch 8 = 2 per device x 2 processes x 2 accumulation steps" in result.stdout
    assert (out / "checkpoints" / "step_6").is_dir() and (out / "checkpoints" / "step_12").is_dir()
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    # the final folder is a complete model folder with its evaluation
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["mean_iou"] <= 1.0


def test_resume_continues_exactly(two_process_run, tmp_path):
    """Resuming from step 6 gives the parameters of the uninterrupted 12-step run, bit for bit."""
    out, _ = two_process_run
    resumed = tmp_path / "resumed"
    run(
        [TRAIN, *TINY_RUN, "--output-dir", str(resumed), "--max-steps", "12", "--checkpointing-steps", "6",
         "--resume", str(out / "checkpoints" / "step_6"), "--eval-split", "none"],
        2,
        port=29612,
    )  # fmt: skip
    expected, actual = load_file(out / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    changed = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not changed, changed
    # and the resumed run did not start over: its log starts after the checkpoint
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(7, 13))
    # the checkpoint's parameters differ from the final ones (the test could fail)
    step6 = load_file(out / "checkpoints" / "step_6" / "model.safetensors")
    assert any(not torch.equal(step6[k], expected[k]) for k in step6 if k in expected)


def test_two_processes_give_the_parameters_of_one_with_the_same_total_batch(tmp_path):
    """The README's multi-process launch, 2 gloo processes x 2 images x 2 accumulation steps, ends with the
    parameters of 1 process x 4 images x 2 accumulation steps (the same total batch of 8, the same images per
    step), up to the order of the float additions of the all-reduce. (The mask loss divides by the number of masks
    averaged over the processes of a forward pass, as the reference does, so the per-forward batch over all
    processes is what must match: 1 process x 2 images x 4 accumulation steps normalises each pair alone.)
    Dropout is off: each process draws its masks from the same seeded generator."""
    no_dropout = [f"--model-override={name}=0" for name in ("visual_prompt_dropout", "decoder_dropout", "attention_dropout")]
    args = [TRAIN, *TINY_RUN, "--max-steps", "6", "--checkpointing-steps", "0", "--eval-split", "none", *no_dropout]
    one = run([*args, "--output-dir", str(tmp_path / "one"), "--per-device-batch-size", "4"])
    two = run([*args, "--output-dir", str(tmp_path / "two")], 2, port=29614)
    assert "total batch 8 = 4 per device x 1 processes x 2 accumulation steps" in one.stdout
    assert "total batch 8 = 2 per device x 2 processes x 2 accumulation steps" in two.stdout
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert two.keys() == one.keys()
    for key in two:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    # the parameters moved (the comparison could fail): a 3-step run ends elsewhere
    run([*args, "--output-dir", str(tmp_path / "short"), "--per-device-batch-size", "4", "--max-steps", "3"])
    short = load_file(tmp_path / "short" / "model.safetensors")
    assert any(not torch.allclose(short[k], one[k], rtol=1e-5, atol=1e-6) for k in one)


def test_resume_latest_on_one_process(tmp_path):
    out = tmp_path / "run"
    args = [TRAIN, *TINY_RUN, "--output-dir", str(out), "--max-steps", "4", "--checkpointing-steps", "2"]
    run([*args, "--eval-split", "none"])
    full = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    # continue from the latest checkpoint (step_4 of a 4-step run: nothing left to do) -> same weights
    run([*args, "--resume", "latest", "--eval-split", "none"])
    again = load_file(out / "model.safetensors")
    assert all(torch.equal(full[k], again[k]) for k in full)


# evaluate.py's main, then whether the process group is still open: a process that exits with it open can abort
# at exit (gloo's threads: "terminate called without an active exception"), at random
# (each rank writes its answer to its own file: the two ranks' stdout reach the pipe interleaved)
CLOSES_GROUP = '''import os, sys
from pathlib import Path
import torch.distributed as dist
sys.path.insert(0, sys.argv.pop(1))
answers = Path(sys.argv.pop(1))
from training.evaluate import main
main(sys.argv[1:])
(answers / f"rank{os.environ['RANK']}.txt").write_text(str(dist.is_initialized()))
'''


def test_metrics_identical_with_one_and_two_processes(two_process_run, tmp_path):
    out, _ = two_process_run
    options = ["--model", str(out), "--dataset", "synthetic", "--num-images", "7"]  # 7: uneven split
    run([EVALUATE, *options, "--output", str(tmp_path / "one.json")])
    wrapper = tmp_path / "closes_group.py"
    wrapper.write_text(CLOSES_GROUP)
    run([str(wrapper), str(ROOT), str(tmp_path), *options, "--output", str(tmp_path / "two.json")], 2, port=29613)
    open_after_main = {rank: (tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)}
    assert open_after_main == {0: "False", 1: "False"}
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one == two
    assert sum(c["pixels"] for c in one["per_class"]) > 0


def test_transductive_recipe_needs_an_inductive_checkpoint(tmp_path):
    from training.train import main

    with pytest.raises(ValueError, match="--init-from"):
        main(["--recipe", "otseg-voc-transductive", "--output-dir", str(tmp_path)])


def test_own_class_names_need_an_unseen_split(tmp_path):
    from training.train import main

    with pytest.raises(ValueError, match="--unseen-label-ids"):
        main([*TINY_RUN, "--output-dir", str(tmp_path), "--class-names", "red circle", "blue square"])
    with pytest.raises(ValueError, match="out of range"):
        main([*TINY_RUN, "--output-dir", str(tmp_path), "--class-names", "a", "b", "--unseen-label-ids", "2"])


# ------------------------------------------------------------------------------------------------
# evaluation in process, against a direct computation
# ------------------------------------------------------------------------------------------------
def test_evaluate_model_equals_a_direct_computation(make_model):
    """One window covers each 32x32 image: the metric's counts are those of upsample -> sigmoid -> seen
    penalty -> argmax on the model's own logits, counted with numpy."""
    model = make_model()
    world = SyntheticShapes(image_size=32)
    data = world.to_dataset(4, seed=3)
    processor = default_image_processor(model.config)
    metric = evaluate_model(model, EvaluationSet(data, processor, num_classes=5))

    expected = np.zeros((5, 5), dtype=np.int64)
    for row in data:
        label = np.asarray(row["label"]).astype(np.int64)
        pixel_values = processor(images=row["image"], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = model(pixel_values).logits
        probs = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False).sigmoid()[0]
        probs[[0, 1, 2]] -= model.config.seen_class_penalty
        prediction = probs.argmax(0).numpy()
        valid = label != 255
        np.add.at(expected, (label[valid], prediction[valid]), 1)
    np.testing.assert_array_equal(metric.confusion_matrix.numpy(), expected)
    assert expected.sum() > 0


def test_label_ids_outside_the_classes_name_the_row(make_model):
    world = SyntheticShapes(image_size=32)
    data = world.to_dataset(2, seed=0)
    model = make_model()
    dataset = EvaluationSet(data, default_image_processor(model.config), num_classes=3)  # ids 3, 4 exist
    with pytest.raises(ValueError, match=r"label ids \[.*\] in row \d are outside the 3 classes"):
        evaluate_model(model, dataset)


def test_missing_columns_are_named(make_model):
    data = SyntheticShapes(image_size=32).to_dataset(1)
    with pytest.raises(ValueError, match="no column"):
        EvaluationSet(data, default_image_processor(make_model().config), label_column="mask")


def test_eval_steps_evaluate_during_training_on_data_loaded_once(tmp_path, monkeypatch):
    import training.train as train

    loaded, evaluations = [], []
    load_split, evaluate_model_ = train.load_split, train.evaluate_model

    def counting_load_split(args, split, recipe, streaming=False):
        loaded.append(split)
        return load_split(args, split, recipe, streaming)

    def counting_evaluate_model(*args, **kwargs):
        evaluations.append(len(loaded))
        return evaluate_model_(*args, **kwargs)

    monkeypatch.setattr(train, "load_split", counting_load_split)
    monkeypatch.setattr(train, "evaluate_model", counting_evaluate_model)
    results = train.main(
        [*TINY_RUN, "--output-dir", str(tmp_path), "--max-steps", "4", "--eval-steps", "2",
         "--checkpointing-steps", "0", "--no-save-model", "--cpu"]
    )  # fmt: skip
    assert loaded == ["train", "validation"]
    # after step 2 and at the end (step 4), not twice at the end; no split loaded again in between
    assert evaluations == [2, 2]
    assert 0.0 <= results["mean_iou"] <= 1.0


def test_zegot_recipe_trains_only_its_prompts(tmp_path):
    """The ZegOT recipe through the same script: the saved CLIP is bit-identical to the tiny random CLIP it
    started from (same seed)."""
    from transformers import AutoModelForSemanticSegmentation, CLIPModel

    from otseg_hf.testing import tiny_clip_config

    out = tmp_path / "zegot"
    args = ["--recipe", "zegot-synthetic-inductive", "--num-train-images", "8", "--num-eval-images", "2"]
    result = run([TRAIN, *args, "--output-dir", str(out), "--max-steps", "3", "--checkpointing-steps", "0"])
    assert "ZegOTForSemanticSegmentation (inductive)" in result.stdout and "trainable of" in result.stdout
    model = AutoModelForSemanticSegmentation.from_pretrained(out)
    torch.manual_seed(0)  # train.py: set_seed(0), then the tiny CLIP is the first thing drawn
    clip = CLIPModel(tiny_clip_config(image_size=64))
    reference = clip.state_dict()
    for name, tensor in model.clip.state_dict().items():
        if "position" not in name:
            assert torch.equal(tensor, reference[name]), name


def test_model_overrides_are_json_values():
    from training.train import parse_overrides

    assert parse_overrides(["matching=softmax", "ensemble_weight=0", 'prompt_templates=["a {}."]']) == {
        "matching": "softmax",
        "ensemble_weight": 0,
        "prompt_templates": ["a {}."],
    }
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["matching"])


def test_fully_supervised_run_with_evaluation_writes_a_card_with_the_mean_iou(tmp_path):
    """All classes are seen: there is no mIoU(U) or hIoU to report, and the run must still save its folder,
    whose card and eval_results.json give the mIoU that the evaluation printed."""
    out = tmp_path / "fully-supervised"
    args = [*TINY_RUN, "--setting", "fully_supervised", "--output-dir", str(out), "--max-steps", "2",
            "--checkpointing-steps", "0"]  # fmt: skip
    result = run([TRAIN, *args])
    results = json.loads((out / "eval_results.json").read_text())
    card = (out / "README.md").read_text()
    assert f"{100 * results['mean_iou']:.1f}" in card, result.stdout[-2000:]
    assert "type: mean_iou" in card and "mIoU(U)" not in card.split("---")[1]
