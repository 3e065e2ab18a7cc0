"""Hub-ready OTSeg and ZegOT folders: weights, config, image processor, tokenizer, processor, custom code and a model
card, and their upload (`otseg-export`, in `otseg_hf.cli.export`, does the same from a saved model).

The folder loads back with `pipeline("image-segmentation" | "zero-shot-image-segmentation", model=OUT_DIR)` where
`otseg_hf` is imported, and with `trust_remote_code=True` (the folder's own code) where it is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from ..model.image_processing_otseg import OTSegImageProcessor
from ..model.modeling_otseg import OTSegForSemanticSegmentation
from ..model.modeling_zegot import ZegOTForSemanticSegmentation
from ..model.pipeline_otseg import save_pipeline_folder  # in the closure: remote-code pipelines save with it
from .cards import model_card

MODEL_CLASSES = (OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation)


def default_image_processor(config) -> OTSegImageProcessor:
    """The reference's test preprocessing for a model: short side to the training size, patch-size padding."""
    vision = config.clip_config.vision_config
    return OTSegImageProcessor(size={"shortest_edge": vision.image_size}, size_divisor=vision.patch_size)


def save_otseg_folder(
    model,
    save_directory: str | os.PathLike,
    tokenizer=None,
    image_processor: OTSegImageProcessor | None = None,
    eval_results: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    **card_kwargs,
) -> Path:
    """Write a complete, Hub-ready folder for `model`.

    Contents: `config.json` (with `auto_map` and `custom_pipelines`), `model.safetensors`, the package's code for
    `trust_remote_code`, `preprocessor_config.json`, the tokenizer and `processor_config.json` (when a tokenizer
    is given: without one, the folder segments its own classes only), and `README.md`, the model card.

    Args:
        model: an `OTSegForSemanticSegmentation` or a `ZegOTForSemanticSegmentation`.
        save_directory: the folder (created if needed).
        tokenizer: the CLIP tokenizer of the model's text encoder, for new vocabularies.
        image_processor: defaults to [`default_image_processor`] (short side to the training size).
        eval_results: see [`check_eval_results`].
        **card_kwargs: [`model_card`] arguments (`repo_id`, `model_name`, `datasets`, `license`, `base_model`,
            `tags`, `template_path`).
    """
    if not isinstance(model, MODEL_CLASSES):
        raise ValueError(f"save_otseg_folder needs an OTSeg or ZegOT model, got {type(model).__name__}")
    save_directory = Path(save_directory)
    image_processor = image_processor or default_image_processor(model.config)
    size = image_processor.size
    card = model_card(
        model.config,
        eval_results,
        shortest_edge=size.get("shortest_edge") or size.get("height"),
        longest_edge=size.get("longest_edge"),
        **card_kwargs,
    )
    save_pipeline_folder(save_directory, model, image_processor, tokenizer=tokenizer)
    card.save(save_directory / "README.md")
    return save_directory


def push_otseg_folder(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
):
    """Create `repo_id` on the Hub if needed and upload `folder` (made by [`save_otseg_folder`]) in one commit.

    Args:
        commit_message: defaults to "Upload OTSeg model" or "Upload ZegOT model", after the folder's model type.

    Returns:
        huggingface_hub's `CommitInfo`.
    """
    folder = Path(folder)
    for required in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        if not (folder / required).is_file():
            raise ValueError(
                f"{folder} is not a complete OTSeg folder: {required} is missing (use save_otseg_folder)"
            )
    if commit_message is None:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "otseg")
        commit_message = f"Upload {'ZegOT' if model_type == 'zegot' else 'OTSeg'} model"
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        revision=revision,
    )


__all__ = ["MODEL_CLASSES", "default_image_processor", "push_otseg_folder", "save_otseg_folder"]
