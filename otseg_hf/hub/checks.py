"""Checks of a model argument (`--model`, `--init-from`) before anything loads: a local folder must exist and
hold an OTSeg or ZegOT config, not a CLIP or another model."""

from __future__ import annotations

import json
import os
from pathlib import Path

MODEL_TYPES = ("otseg", "zegot")


def looks_local(name: str | os.PathLike) -> bool:
    """True for an existing path or a string that cannot be a Hub id (`./x`, `/x`, `a/b/c`, `~`)."""
    text = str(name)
    return Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def check_model_folder(name: str | os.PathLike, what: str = "--model") -> None:
    """`ValueError` naming the problem when `name` is a local path that is not an OTSeg / ZegOT model folder.
    Hub ids are left to `from_pretrained`."""
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise ValueError(f"{what} {name}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{what} {name} is a file; give the model folder (with config.json)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{what} {name} has no config.json: it is not a saved model folder")
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} {name}: config.json is not valid JSON ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        hint = " (a CLIP: build a model around it with training/train.py --clip)" if model_type == "clip" else ""
        raise ValueError(
            f"{what} {name} is a {model_type!r} model{hint}, not an OTSeg or ZegOT model folder"
        )


__all__ = ["check_model_folder", "looks_local"]
