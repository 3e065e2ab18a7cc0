"""The output folder of a training run, safe against kills: which checkpoint to resume, refusing a folder that
holds another run, checkpoints saved by all processes, and the step log.

    OUTPUT_DIR/
      checkpoints/step_N/   [`otseg_hf.runs.checkpoints`] format, renamed into place when complete
      train_log.jsonl       one record per step, appended and flushed at every logging step
      config.json, ...      the final model folder, moved in with config.json last ([`otseg_hf.runs.atomic`])

`training/train.py` drives these with an `accelerate.Accelerator`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from .atomic import atomic_write_text, begin_staging, commit_staging, staging_path
from .checkpoints import (
    CheckpointError,
    check_checkpoint,
    find_latest_checkpoint,
    read_checkpoint,
    set_rng_state,
    write_checkpoint,
    write_rng_file,
)

RUN_FILES = ("train_log.jsonl",)  # top-level files of OUTPUT_DIR that are the run's, not the model folder's
LOG_NAME = "train_log.jsonl"


POSITIVE_FLAGS = ("per_device_batch_size", "logging_steps", "num_train_images", "num_eval_images", "max_eval_images",
                  "max_steps", "total_batch_size", "crop_size")  # fmt: skip
NON_NEGATIVE_FLAGS = ("checkpointing_steps", "eval_steps", "num_workers", "warmup_steps")


def check_run_arguments(args) -> None:
    """training/train.py's numbers in range and flags that go together, before anything runs (`args` from its
    parser; flags it lacks are skipped)."""
    from ..hub.checks import check_model_folder

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for names, low, words in ((POSITIVE_FLAGS, 1, "at least 1"), (NON_NEGATIVE_FLAGS, 0, "0 or more")):
        for name in names:
            value = getattr(args, name, None)
            if value is not None and value < low:
                raise ValueError(f"{flag(name)} must be {words}, got {value}")
    rate = getattr(args, "learning_rate", None)
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"--learning-rate must be a positive finite number, got {rate}")
    if getattr(args, "init_from", None):
        check_model_folder(args.init_from, "--init-from")
    if args.resume and args.overwrite_output_dir:
        raise ValueError("--resume continues the run in OUTPUT_DIR, --overwrite-output-dir deletes it: give one")


def locate_checkpoint(resume: str | None, output_dir: Path, say=print) -> Path | None:
    """The complete checkpoint `--resume` names (`latest`: the newest complete one of OUTPUT_DIR/checkpoints),
    checked (manifest, file sizes, no pickles) but not read; None without `resume`."""
    if not resume:
        return None
    if resume == "latest":
        path, skipped = find_latest_checkpoint(Path(output_dir) / "checkpoints")
        notes = "".join(f"; skipped {p.name} ({reason})" for p, reason in skipped)
        say(f"--resume latest: {path} is the newest complete checkpoint{notes}")
        return path
    path = Path(resume)
    check_checkpoint(path)
    return path


def check_output_dir(output_dir: Path, checkpoint: Path | None, overwrite: bool) -> None:
    """A non-empty OUTPUT_DIR only to resume one of its checkpoints or with `overwrite`."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries or overwrite:
        return
    if checkpoint is None:
        raise ValueError(
            f"--output-dir {out} is not empty (it holds {entries[:5]}): pass --resume latest to continue the run "
            "in it, --overwrite-output-dir to replace it, or another folder"
        )
    if checkpoint.resolve().parent != (out / "checkpoints").resolve():
        raise ValueError(
            f"--output-dir {out} is not empty and --resume {checkpoint} is not one of its checkpoints: resume "
            "into an empty folder, or pass a checkpoint of OUTPUT_DIR/checkpoints"
        )


def start_output_dir(output_dir: Path, accelerator, overwrite: bool, resuming: bool) -> None:
    """After every check: empty OUTPUT_DIR (`overwrite`), or remove the model folder an earlier attempt of this
    run saved (`resuming`; its config.json first: from here on the folder does not load until this run's model
    is in place)."""
    out = Path(output_dir)
    if accelerator.is_main_process and out.is_dir():
        if overwrite:
            accelerator.print(f"--overwrite-output-dir: deleting the contents of {out}")
            for entry in out.iterdir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        elif resuming:
            if (out / "config.json").exists():
                (out / "config.json").unlink()
            for entry in out.iterdir():
                if entry.is_file() and entry.name not in RUN_FILES:
                    entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()


def resume_from(checkpoint: Path, accelerator, model, optimizer, scheduler, run: dict) -> int:
    """Load the model, optimizer, schedule and this process's random states (json + safetensors only) of
    `checkpoint`, after checking that it belongs to a run like `run`; returns its step."""
    state = read_checkpoint(checkpoint, accelerator.process_index)
    different = {k: (state.run.get(k), v) for k, v in run.items() if state.run.get(k) != v}
    if different:
        described = ", ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in different.items())
        raise CheckpointError(
            f"{checkpoint} belongs to a run with other settings ({described}): resume with the same recipe, "
            "seed, batch sizes and number of processes"
        )
    try:
        accelerator.unwrap_model(model).load_state_dict(state.model_state, strict=True)
        optimizer.load_state_dict(state.optimizer_state)
        scheduler.load_state_dict(state.scheduler_state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise CheckpointError(f"{checkpoint} does not fit this model and optimizer: {error}") from error
    set_rng_state(state.rng)
    return state.step


def save_checkpoint(
    output_dir: Path, accelerator, step: int, run: dict, model, optimizer, scheduler
) -> Path:
    """OUTPUT_DIR/checkpoints/step_N, written by all processes into a staging folder, renamed into place."""
    path = Path(output_dir) / "checkpoints" / f"step_{step}"
    if accelerator.is_main_process:
        begin_staging(path)
    accelerator.wait_for_everyone()
    write_rng_file(staging_path(path), accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_checkpoint(
            staging_path(path),
            step,
            run,
            accelerator.unwrap_model(model).state_dict(),
            optimizer.state_dict(),
            scheduler.state_dict(),
            num_processes=accelerator.num_processes,
        )
        commit_staging(path)
    accelerator.wait_for_everyone()
    return path


class TrainLog:
    """OUTPUT_DIR/train_log.jsonl: one JSON record per optimizer step, appended and flushed to disk by `flush`.
    On resume the records after the checkpoint's step (and a line cut by a kill) are dropped first, so no step
    appears twice."""

    def __init__(self, path: Path, enabled: bool = True, resume_step: int | None = None):
        self.path, self.enabled, self.pending = Path(path), enabled, []
        if enabled and resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by a kill: nothing after it was written
                if record["step"] <= resume_step:
                    kept.append(line + "\n")
            atomic_write_text(self.path, "".join(kept))

    def add(self, record: dict) -> None:
        self.pending.append(record)

    def flush(self) -> None:
        if self.enabled and self.pending:
            with open(self.path, "a") as file:
                file.write("".join(json.dumps(r) + "\n" for r in self.pending))
                file.flush()
                os.fsync(file.fileno())
        self.pending = []


__all__ = [
    "LOG_NAME",
    "RUN_FILES",
    "TrainLog",
    "check_output_dir",
    "check_run_arguments",
    "locate_checkpoint",
    "resume_from",
    "save_checkpoint",
    "start_output_dir",
]
