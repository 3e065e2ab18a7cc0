"""A killed run never loses or corrupts work; bad data is found before training; a checkpoint never runs code.

The kill test runs tests/kill_resume_driver.py (see its docstring): real training runs of the tiny synthetic
recipe are killed with SIGKILL at 21 random points (random delays and random file-system calls inside
checkpoint and model-folder writes), resumed, and compared bit for bit with one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from otseg_hf.runs.atomic import commit_staging, publish_folder, staged_folder, staging_path
from otseg_hf.runs.checkpoints import (
    CheckpointError,
    check_checkpoint,
    find_latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
    write_rng_file,
)
from otseg_hf.runs.folder import TrainLog

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--recipe", "otseg-synthetic-inductive", "--num-train-images", "8", "--num-eval-images", "2",
    "--per-device-batch-size", "2", "--total-batch-size", "2", "--warmup-steps", "2", "--logging-steps", "1",
    "--max-steps", "2", "--checkpointing-steps", "1", "--cpu",
]  # fmt: skip


def test_killed_runs_resume_to_the_uninterrupted_parameters(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kill_resume_driver.py"), str(tmp_path), "--chains", "3",
         "--kills", "7", "--seed", "11"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["kills"]) >= 20, report
    assert report["problems"] == [], report["problems"]
    # the kills landed in different places: before any checkpoint, mid-checkpoint, mid-model-folder
    left = [k["left"] for k in report["kills"]]
    assert len(set(left)) >= 3, left


# ------------------------------------------------------------------------------------------------
# atomic folders
# ------------------------------------------------------------------------------------------------
def test_a_staged_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "step_1"
    with pytest.raises(RuntimeError):
        with staged_folder(target) as folder:
            (folder / "a").write_text("1")
            raise RuntimeError("killed")
    assert not target.exists() and not staging_path(target).exists()
    with staged_folder(target) as folder:
        (folder / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    # a folder left under its staging name (a kill before the rename) is not the folder
    staging_path(target).mkdir()
    (staging_path(target) / "a").write_text("2")
    commit_staging(target)
    assert (target / "a").read_text() == "2" and not staging_path(target).exists()


def test_publish_folder_removes_the_marker_first_and_moves_it_last(tmp_path, monkeypatch):
    target = tmp_path / "run"
    target.mkdir()
    for name, text in (("config.json", "old"), ("model.safetensors", "old"), ("train_log.jsonl", "log")):
        (target / name).write_text(text)
    staging = tmp_path / ".model.partial"
    staging.mkdir()
    for name in ("config.json", "model.safetensors", "README.md"):
        (staging / name).write_text("new")
    moved = []
    replace = os.replace

    def recording_replace(source, destination):
        # while anything is moved in, the folder must not hold the old or the new config.json
        assert not (target / "config.json").exists() or Path(source).name == "config.json"
        moved.append(Path(destination).name)
        replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    publish_folder(staging, target, keep=("train_log.jsonl",))
    assert moved[-1] == "config.json"
    assert {p.name: p.read_text() for p in target.iterdir()} == {
        "config.json": "new", "model.safetensors": "new", "README.md": "new", "train_log.jsonl": "log"
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------
# checkpoint format: complete, newest, no pickles
# ------------------------------------------------------------------------------------------------
def _checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"step_{step}"
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    scheduler.step()
    staging = staging_path(path)
    staging.mkdir(parents=True)
    write_rng_file(staging, 0)
    write_checkpoint(staging, step, {"seed": 0}, model.state_dict(), optimizer.state_dict(), scheduler.state_dict())
    commit_staging(path)
    return path


def test_checkpoint_round_trip_restores_optimizer_and_schedule(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5**s)
    scheduler.step()
    (tmp_path / "s").mkdir()
    write_rng_file(tmp_path / "s", 0)
    write_checkpoint(tmp_path / "s", 3, {}, model.state_dict(), optimizer.state_dict(), scheduler.state_dict())
    (tmp_path / "s").rename(tmp_path / "step_3")
    state = read_checkpoint(tmp_path / "step_3")
    expected = optimizer.state_dict()
    assert state.optimizer_state["param_groups"][0]["lr"] == expected["param_groups"][0]["lr"] == 0.05
    for index, values in expected["state"].items():
        for name, value in values.items():
            assert torch.equal(state.optimizer_state["state"][index][name], value), (index, name)
    other = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    other.load_state_dict(state.optimizer_state)
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], expected["state"][0]["exp_avg"])
    assert state.scheduler_state["last_epoch"] == 1


def test_resume_latest_takes_the_newest_complete_checkpoint_and_names_the_skipped(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    (tmp_path / "step_6").mkdir()  # a kill of an old-style writer: an empty folder under the final name
    (tmp_path / "step_4" / "optimizer.safetensors").write_bytes(b"cut")  # truncated after the manifest
    path, skipped = find_latest_checkpoint(tmp_path)
    assert path == tmp_path / "step_2"
    assert [p.name for p, _ in skipped] == ["step_6", "step_4"]
    assert "no checkpoint.json" in skipped[0][1] and "bytes, the manifest says" in skipped[1][1]
    (tmp_path / "step_2" / "rng_0.json").unlink()
    with pytest.raises(CheckpointError, match="(?s)no complete checkpoint.*step_2: .*rng_0.json is missing"):
        find_latest_checkpoint(tmp_path)


class _WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _hostile_pickle(path: Path, marker: Path) -> Path:
    import pickle

    path.write_bytes(pickle.dumps({"state": _WritesMarker(marker)}))
    return path


def test_hostile_files_run_nothing_in_any_reader(tmp_path, make_model):
    """A pickle whose unpickling writes a marker file, put where every reader of the package looks: the
    checkpoint to resume (accelerate's names), a model folder's weights, a converter input, a dataset on disk.
    Each refuses with an error; the marker is never written. (The control shows the pickle does run code.)"""
    import pickle

    control = tmp_path / "control"
    pickle.loads(_hostile_pickle(tmp_path / "control.pkl", control).read_bytes())
    assert control.exists()
    marker = tmp_path / "ran"
    from training.train import main

    # 1. resume: an accelerate-style checkpoint folder (plus one of ours with a pickle added)
    accelerate_style = tmp_path / "out" / "checkpoints" / "step_1"
    accelerate_style.mkdir(parents=True)
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        _hostile_pickle(accelerate_style / name, marker)
    with pytest.raises(CheckpointError, match="holds pickled files .* loaded nothing"):
        main([*TINY, "--output-dir", str(tmp_path / "out"), "--resume", "latest"])
    with pytest.raises(CheckpointError, match="holds pickled files"):
        main([*TINY, "--output-dir", str(tmp_path / "fresh"), "--resume", str(accelerate_style)])
    ours = _checkpoint(tmp_path / "ours", 1)
    _hostile_pickle(ours / "random_states_0.pkl", marker)
    with pytest.raises(CheckpointError, match="holds pickled files"):
        read_checkpoint(ours)
    assert not (tmp_path / "fresh").exists()

    # 2. a model folder whose weights are a hostile pytorch_model.bin
    from transformers import AutoModelForSemanticSegmentation

    import otseg_hf  # noqa: F401
    folder = tmp_path / "model"
    make_model().config.save_pretrained(folder)
    import torch as _torch

    _torch.save({"state": _WritesMarker(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported global"):
        AutoModelForSemanticSegmentation.from_pretrained(folder)

    # 3. a converter input
    from otseg_hf.convert.checkpoint import read_reference_checkpoint

    _torch.save({"state_dict": {"x": _WritesMarker(marker)}}, tmp_path / "reference.pth")
    with pytest.raises(ValueError):
        read_reference_checkpoint(tmp_path / "reference.pth")

    # 4. datasets on disk: a saved folder whose arrow file is a pickle, and a folder of pickles
    from otseg_hf.data.loading import load_dataset_split
    from otseg_hf.world.splits import generated_dataset

    saved = tmp_path / "dataset"
    generated_dataset("synthetic", 2, seed=0, image_size=32).save_to_disk(str(saved))
    for arrow in saved.glob("*.arrow"):
        _hostile_pickle(arrow, marker)
    with pytest.raises(Exception):  # noqa: B017  (pyarrow's error: the file is not an arrow stream)
        load_dataset_split(str(saved), "train")[0]
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    _hostile_pickle(pickles / "train.pkl", marker)
    with pytest.raises(Exception):  # noqa: B017  (datasets: no loader reads .pkl files)
        load_dataset_split(str(pickles), "train")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# the run folder: refused when it holds another run, checks before training, the log
# ------------------------------------------------------------------------------------------------
def test_a_non_empty_output_dir_is_refused_before_anything_is_written(tmp_path):
    from training.train import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("keep")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="is not empty .*--resume latest.*--overwrite-output-dir"):
        main([*TINY, "--output-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(ValueError, match="give one"):
        main([*TINY, "--output-dir", str(out), "--overwrite-output-dir", "--resume", "latest"])
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        main([*TINY, "--output-dir", str(file)])
    # --overwrite-output-dir replaces the old run
    main([*TINY, "--output-dir", str(out), "--overwrite-output-dir", "--eval-split", "none"])
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").exists()
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def _saved_dataset(path: Path, edit_validation) -> Path:
    from datasets import DatasetDict

    from otseg_hf.world.splits import generated_dataset

    train = generated_dataset("synthetic", 4, seed=0, image_size=64)
    validation = edit_validation(generated_dataset("synthetic", 3, seed=1, image_size=64))
    DatasetDict({"train": train, "validation": validation}).save_to_disk(str(path))
    return path


def _shift_labels(data):
    import numpy as np
    from PIL import Image

    def shift(row):
        label = np.asarray(row["label"]).astype(np.uint8)
        label[0, 0] = 9  # not one of the 5 classes, not 255
        return {"label": Image.fromarray(label)}

    return data.map(shift)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_shift_labels, r"label ids \[9\] in the evaluation split 'validation' .*, row 0 are outside"),
        (lambda d: d.rename_column("label", "mask"), r"evaluation split 'validation' .* has no column \['label'\]"),
        (lambda d: d.select(range(0)), r"the split 'validation' of .* is empty \(0 rows\)"),
    ],
)
def test_the_evaluation_split_is_checked_before_the_first_step(tmp_path, edit, message):
    from training.train import main

    data = _saved_dataset(tmp_path / "data", edit)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        main([*TINY, "--output-dir", str(out), "--dataset-name", str(data)])
    assert not out.exists()  # nothing trained, nothing written


def test_empty_or_too_small_training_splits_and_bad_numbers_are_named(tmp_path):
    from training.train import main

    data = _saved_dataset(tmp_path / "data", lambda d: d)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="the training split 'train' .* has 4 rows, fewer than one batch of 8"):
        main([*TINY, "--output-dir", str(out), "--dataset-name", str(data), "--per-device-batch-size", "8",
                   "--total-batch-size", "8"])  # fmt: skip
    with pytest.raises(ValueError, match="--num-train-images must be at least 1"):
        main([*TINY, "--output-dir", str(out), "--num-train-images", "0"])
    for flag, value, message in [
        ("--max-steps", "0", "--max-steps must be at least 1"),
        ("--logging-steps", "0", "--logging-steps must be at least 1"),
        ("--checkpointing-steps", "-1", "--checkpointing-steps must be 0 or more"),
        ("--max-eval-images", "0", "--max-eval-images must be at least 1"),
        ("--learning-rate", "nan", "--learning-rate must be a positive finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            main([*TINY, "--output-dir", str(out), flag, value])
    assert not out.exists()


def test_the_log_of_a_resumed_run_drops_the_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    log = TrainLog(path, resume_step=3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    log.add({"step": 4, "loss": 0.5})
    assert len(path.read_text().splitlines()) == 3  # not yet flushed
    log.flush()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    from training.train import main

    out = tmp_path / "out"
    main([*TINY, "--output-dir", str(out), "--eval-split", "none"])
    check_checkpoint(out / "checkpoints" / "step_2")
    with pytest.raises(CheckpointError, match="other settings .*seed: checkpoint 0, this run 5"):
        main([*TINY, "--output-dir", str(tmp_path / "b"), "--seed", "5", "--resume", str(out / "checkpoints" / "step_1")])
