"""A Hugging Face Space folder (Gradio SDK) that serves one OTSeg or ZegOT model folder:

    SPACE_DIR/app.py            the demo app (`otseg_hf/app/interface.py`, as it is)
    SPACE_DIR/drawing.py        its overlays (`otseg_hf/app/drawing.py`)
    SPACE_DIR/model/            a copy of the model folder (weights, config, processor, tokenizer, code)
    SPACE_DIR/requirements.txt  what the Space installs: the model's code runs as `trust_remote_code`
    SPACE_DIR/README.md         the Space's front matter (sdk: gradio, app_file: app.py) and a short text

`otseg-export MODEL OUT --space SPACE_DIR` writes it; `huggingface-cli upload --repo-type space me/name SPACE_DIR`
publishes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1] / "app"
REQUIREMENTS = ("torch", "transformers>=5", "gradio>=4", "numpy", "pillow", "safetensors")
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def space_readme(title: str, model_type: str) -> str:
    import gradio  # the installed version is the one the app was tested with

    name = "ZegOT" if model_type == "zegot" else "OTSeg"
    return (
        "---\n"
        f"title: {title}\n"
        "emoji: 🎨\n"
        "colorFrom: blue\n"
        "colorTo: green\n"
        "sdk: gradio\n"
        f"sdk_version: {gradio.__version__}\n"
        "app_file: app.py\n"
        "pinned: false\n"
        "license: apache-2.0\n"
        "tags:\n"
        "  - zero-shot-image-segmentation\n"
        f"  - {model_type}\n"
        "---\n\n"
        f"# {title}\n\n"
        f"Zero-shot semantic segmentation with an {name} model (`model/`, its code runs with "
        "`trust_remote_code=True`): upload an image, type any labels, see the overlay and each label's area.\n"
    )


def write_space_folder(space_dir: str | os.PathLike, model_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write the Space folder for the model folder `model_dir` (as `save_otseg_folder` writes it). The folder
    appears complete or not at all (written beside it, then renamed); an existing SPACE_DIR is an error."""
    space_dir, model_dir = Path(space_dir), Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir} is not a complete model folder: {missing} missing (use otseg-export)")
    if space_dir.exists():
        raise ValueError(f"--space {space_dir} exists already; give a new folder")
    import json

    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "otseg")
    space_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{space_dir.name}-", dir=space_dir.parent))
    try:
        shutil.copyfile(APP_DIR / "interface.py", staging / "app.py")
        shutil.copyfile(APP_DIR / "drawing.py", staging / "drawing.py")
        shutil.copytree(model_dir, staging / "model", ignore=shutil.ignore_patterns("checkpoints", "*.jsonl"))
        (staging / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
        (staging / "README.md").write_text(space_readme(title or f"{model_dir.name} demo", model_type))
        os.replace(staging, space_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return space_dir


__all__ = ["write_space_folder"]
