"""Training checkpoints that load without running code: safetensors for tensors, JSON for everything else.

`accelerate`'s `save_state` pickles the optimizer, the scheduler and the random states, and its `load_state`
unpickles them in full: a checkpoint folder from someone else runs their code. A checkpoint here is

    step_N/
      checkpoint.json        format, step, the run it belongs to, scheduler / optimizer hyper-parameters,
                             and the size of every other file (written last: its presence means complete)
      model.safetensors      the model's state dict
      optimizer.safetensors  the optimizer's tensors (AdamW moments and steps), keyed "<param index>.<name>"
      rng_<rank>.json        python, numpy, torch (and CUDA) random states of each process

and is written under a staging name and renamed into place ([`otseg_hf.runs.atomic`]), so a folder named step_N is
complete. Reading uses only `json` and `safetensors`; a folder holding pickles (`*.pkl`, `*.bin`, `*.pt`) is
refused before anything in it is read.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write_json

FORMAT = "otseg_hf training checkpoint"
VERSION = 1
MANIFEST = "checkpoint.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete, damaged, of another format or of another run."""


@dataclass
class TrainingCheckpoint:
    """What [`read_checkpoint`] returns; `rng` is the calling process's random state."""

    path: Path
    step: int
    run: dict
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    scheduler_state: dict
    rng: dict
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------
# optimizer state <-> (tensors, JSON)
# ------------------------------------------------------------------------------------------------------------
def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer `state_dict()` as safetensors-ready tensors and a JSON-ready rest."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of `split_optimizer_state`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdigit() or not name:
            raise CheckpointError(f"optimizer tensor {key!r} is not named '<param index>.<name>'")
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------------------------------------
# random states <-> JSON
# ------------------------------------------------------------------------------------------------------------
def get_rng_state() -> dict:
    """python, numpy, torch (and CUDA) global random states as JSON values."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what [`get_rng_state`] returned; a malformed state raises `CheckpointError`."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((str(kind), np.asarray(keys, dtype=np.uint32), int(position), int(has_gauss), cached))
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"malformed random state in the checkpoint: {error}") from error


# ------------------------------------------------------------------------------------------------------------
# writing (into a staging folder; the caller renames it into place with otseg_hf.runs.atomic.commit_staging)
# ------------------------------------------------------------------------------------------------------------
def write_rng_file(folder: str | os.PathLike, rank: int) -> None:
    """Process `rank` writes its random states into the checkpoint folder being staged."""
    atomic_write_json(Path(folder) / f"rng_{rank}.json", get_rng_state())


def write_checkpoint(
    folder: str | os.PathLike,
    step: int,
    run: dict,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    num_processes: int = 1,
    extra: dict | None = None,
) -> None:
    """Write the main process's part of a checkpoint into the staging `folder`, and the manifest last. Every
    process's `write_rng_file` must have run before (the manifest records their sizes)."""
    folder = Path(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, folder / "model.safetensors")
    tensors, optimizer_meta = split_optimizer_state(optimizer_state)
    save_file(tensors, folder / "optimizer.safetensors")
    files = ["model.safetensors", "optimizer.safetensors", *(f"rng_{r}.json" for r in range(num_processes))]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {folder}: {missing} were not written")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "num_processes": int(num_processes),
        "run": run,
        "optimizer": optimizer_meta,
        "scheduler": scheduler_state,
        "extra": extra or {},
        "files": {name: (folder / name).stat().st_size for name in files},
    }
    atomic_write_json(folder / MANIFEST, manifest, indent=1)


# ------------------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------------------
def checkpoint_step(path: str | os.PathLike) -> int:
    match = re.fullmatch(r"step_(\d+)", Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not a checkpoint folder (named step_N)")
    return int(match.group(1))


def check_checkpoint(path: str | os.PathLike) -> dict:
    """The manifest of the complete checkpoint `path`; `CheckpointError` saying what is wrong otherwise.
    Reads nothing but the folder listing and `checkpoint.json`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{path} holds pickled files {pickles} (accelerate's save_state format, or files put there): "
            "otseg_hf reads checkpoints of safetensors and JSON only and loaded nothing from this folder; "
            "resume from a checkpoint written by this version of training/train.py"
        )
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path} has no {MANIFEST}: it is incomplete or was not written by training/train.py")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{manifest_path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path} is not an otseg_hf training checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{manifest_path}: format version {manifest.get('version')!r}, expected {VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{manifest_path} lists no files")
    for name, size in files.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if file.stat().st_size != size:
            raise CheckpointError(f"{path}: {name} has {file.stat().st_size} bytes, the manifest says {size}")
    if manifest.get("step") != checkpoint_step(path):
        raise CheckpointError(f"{path}: the manifest is of step {manifest.get('step')}")
    return manifest


def find_latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest complete checkpoint among `folder/step_N`, and the newer ones skipped with the reason."""
    folder = Path(folder)
    candidates = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_dir() and re.fullmatch(r"step_\d+", path.name):
                candidates.append(path)
    skipped = []
    for path in sorted(candidates, key=checkpoint_step, reverse=True):
        try:
            check_checkpoint(path)
        except CheckpointError as error:
            skipped.append((path, str(error)))
            continue
        return path, skipped
    reasons = "".join(f"\n  {p.name}: {reason}" for p, reason in skipped)
    raise CheckpointError(f"no complete checkpoint in {folder}{reasons}")


def read_checkpoint(path: str | os.PathLike, rank: int = 0) -> TrainingCheckpoint:
    """Everything of checkpoint `path` that process `rank` needs, read with `json` and `safetensors` only."""
    path = Path(path)
    manifest = check_checkpoint(path)
    if not 0 <= rank < manifest["num_processes"]:
        raise CheckpointError(
            f"{path} was written by {manifest['num_processes']} processes; this is process {rank}"
        )
    try:
        model_state = load_file(path / "model.safetensors")
        optimizer_tensors = load_file(path / "optimizer.safetensors")
        rng = json.loads((path / f"rng_{rank}.json").read_text())
    except (SafetensorError, OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is damaged: {error}") from error
    return TrainingCheckpoint(
        path=path,
        step=manifest["step"],
        run=manifest["run"],
        model_state=model_state,
        optimizer_state=join_optimizer_state(optimizer_tensors, manifest["optimizer"]),
        scheduler_state=manifest["scheduler"],
        rng=rng,
        extra=manifest.get("extra", {}),
    )


__all__ = [
    "CheckpointError",
    "TrainingCheckpoint",
    "check_checkpoint",
    "checkpoint_step",
    "find_latest_checkpoint",
    "get_rng_state",
    "join_optimizer_state",
    "read_checkpoint",
    "set_rng_state",
    "split_optimizer_state",
    "write_checkpoint",
    "write_rng_file",
]
