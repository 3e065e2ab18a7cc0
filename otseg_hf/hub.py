"""Hub-ready OTSeg and ZegOT folders: weights, config, image processor, tokenizer, processor, custom code and a model
card, and their upload.

    otseg-export MODEL_DIR OUT_DIR [--eval-results results.json] [--push-to-hub user/repo]
    (or: python -m otseg_hf.hub ...)

The folder loads back with `pipeline("image-segmentation" | "zero-shot-image-segmentation", model=OUT_DIR)` where
`otseg_hf` is imported, and with `trust_remote_code=True` (the folder's own code) where it is not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import AutoModelForSemanticSegmentation, AutoTokenizer

from .image_processing_otseg import OTSegImageProcessor
from .modeling_otseg import OTSegForSemanticSegmentation
from .modeling_zegot import ZegOTForSemanticSegmentation
from .pipeline_otseg import save_pipeline_folder

# model_cards/<model>_template.md, shipped inside the package (links in the source tree, files in wheels)
CARD_TEMPLATES = {
    "otseg": Path(__file__).resolve().parent / "model_card_template.md",
    "zegot": Path(__file__).resolve().parent / "model_card_template_zegot.md",
}
MODEL_CLASSES = (OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation)
SETTING_DESCRIPTIONS = {
    "inductive": "trained on the seen classes only; the unseen classes were never labelled.",
    "transductive": (
        "trained on the seen classes' labels and on the unlabelled pixels of the training images, which "
        "the model pseudo-labelled as unseen classes (self-training)."
    ),
    "fully_supervised": "every class was labelled in training (an upper bound for the zero-shot settings).",
}
RESULT_METRICS = {  # key -> (model-index metric type, display name)
    "miou_seen": ("miou_seen", "mIoU(S)"),
    "miou_unseen": ("miou_unseen", "mIoU(U)"),
    "hiou": ("hiou", "hIoU"),
    "miou": ("miou", "mIoU"),
    "pixel_accuracy": ("pixel_accuracy", "pixel accuracy"),
}
CARD_TAGS = (
    "zero-shot-image-segmentation",
    "semantic-segmentation",
    "clip",
    "optimal-transport",
    "custom_code",
)
RESULT_KEYS = {"dataset_name", "dataset_type", "dataset_split", "dataset_config", *RESULT_METRICS}


def default_image_processor(config) -> OTSegImageProcessor:
    """The reference's test preprocessing for a model: short side to the training size, patch-size padding."""
    vision = config.clip_config.vision_config
    return OTSegImageProcessor(size={"shortest_edge": vision.image_size}, size_divisor=vision.patch_size)


def check_eval_results(eval_results: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> list[dict]:
    """Normalise evaluation results: a dict (or list of dicts) with `dataset_name`, `dataset_type` and
    percentages `miou_seen`, `miou_unseen` (and optionally `hiou`, computed when absent, `miou`,
    `pixel_accuracy`, `dataset_split`, `dataset_config`)."""
    if eval_results is None:
        return []
    if isinstance(eval_results, Mapping):
        eval_results = [eval_results]
    checked = []
    for index, result in enumerate(eval_results):
        if not isinstance(result, Mapping):
            raise ValueError(f"eval result {index} must be a dict, got {type(result).__name__}")
        unknown = sorted(set(result) - RESULT_KEYS)
        if unknown:
            raise ValueError(f"eval result {index} has unknown keys {unknown}; known: {sorted(RESULT_KEYS)}")
        missing = [
            key for key in ("dataset_name", "dataset_type", "miou_seen", "miou_unseen") if key not in result
        ]
        if missing:
            raise ValueError(f"eval result {index} lacks {missing}")
        result = dict(result)
        for key in RESULT_METRICS:
            if result.get(key) is not None:
                value = float(result[key])
                if not (math.isfinite(value) and 0.0 <= value <= 100.0):
                    raise ValueError(
                        f"eval result {index}: {key} must be a percentage in [0, 100], got {value}"
                    )
                result[key] = value
        if result.get("hiou") is None:
            seen, unseen = result["miou_seen"], result["miou_unseen"]
            result["hiou"] = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
        checked.append(result)
    return checked


def model_card(
    config,
    eval_results: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    datasets: Sequence[str] | str | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    tags: Sequence[str] = (),
    shortest_edge: int | None = None,
    longest_edge: int | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """A model card for an OTSeg or ZegOT model (`config.model_type` picks the template): Hub metadata (library,
    pipeline tag, tags, datasets, license, base model, `model-index` with mIoU(S) / mIoU(U) / hIoU) and a body
    filled from the config and the results."""
    if config.model_type not in CARD_TEMPLATES:
        raise ValueError(
            f"no model card for model type {config.model_type!r}; known: {sorted(CARD_TEMPLATES)}"
        )
    results = check_eval_results(eval_results)
    template_path = Path(template_path or CARD_TEMPLATES[config.model_type])
    if not template_path.is_file():
        raise FileNotFoundError(f"model card template not found at {template_path}; pass template_path=")
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else config.model_type)
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    setting = config.setting
    index_results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Zero-shot semantic segmentation",
            dataset_type=result["dataset_type"],
            dataset_name=result["dataset_name"],
            dataset_split=result.get("dataset_split"),
            dataset_config=result.get("dataset_config"),
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(result[key], 2),
        )
        for result in results
        for key, (metric_type, metric_name) in RESULT_METRICS.items()
        if result.get(key) is not None
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=list(dict.fromkeys([config.model_type, *CARD_TAGS, f"{config.model_type}-{setting}", *tags])),
        datasets=datasets or None,
        license=license,
        base_model=base_model,
        model_name=model_name,
        eval_results=index_results or None,
    )
    vision = config.clip_config.vision_config
    names = config.class_names
    seen = set(range(len(names)) if config.seen_label_ids is None else config.seen_label_ids)

    def text(value):
        return "" if value is None else f"{value:.1f}"

    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        repo_id=repo_id or "path/to/this/folder",
        model_name=model_name,
        setting=setting,
        setting_description=SETTING_DESCRIPTIONS[setting],
        backbone=f"ViT, patch {vision.patch_size}, width {vision.hidden_size}, {vision.num_hidden_layers} layers",
        image_size=vision.image_size,
        num_classes=len(names),
        dataset_name=results[0]["dataset_name"] if results else None,
        all_classes=names,
        seen_classes=[name for i, name in enumerate(names) if i in seen],
        unseen_classes=[names[i] for i in config.unseen_label_ids],
        shortest_edge=shortest_edge or vision.image_size,
        longest_edge=longest_edge,
        window_size=config.inference_window_size,
        stride=config.inference_window_stride,
        penalty=f"{config.seen_class_penalty:g}",
        results=[
            {**r, **{f"{key}_text": text(r.get(key)) for key in ("miou_seen", "miou_unseen", "hiou", "miou")}}
            for r in results
        ],
        **_architecture_fields(config),
    )


def _architecture_fields(config) -> dict[str, Any]:
    """The template fields that describe one model type's architecture."""
    if config.model_type == "zegot":
        depth = config.clip_config.vision_config.num_hidden_layers
        blocks = [index + 1 for index in config.feature_layer_indices]
        return {
            "num_prompts": config.num_text_prompts,
            "num_context_tokens": config.num_context_tokens,
            "class_name_format": config.class_name_format,
            "num_feature_layers": len(blocks),
            "feature_layers": f"block{'s' if len(blocks) > 1 else ''} {', '.join(map(str, blocks))} of {depth}",
            "layer_combination": "mean" if config.layer_combination == "mean" else "last block's map",
        }
    weight = config.ensemble_weight
    return {
        "num_prompts": len(config.prompt_templates),
        "decoder_weight": f"{weight:g}",
        "score_weight": f"{1 - weight:g}",
    }


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="folder (or Hub id) of a saved OTSeg or ZegOT model")
    parser.add_argument("out", type=Path, help="folder to write")
    parser.add_argument(
        "--tokenizer", default=None, help="CLIP tokenizer (folder or Hub id); default: the model's"
    )
    parser.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer (own classes only)")
    parser.add_argument(
        "--eval-results", type=Path, default=None, help="JSON file: a dict or a list of dicts"
    )
    parser.add_argument(
        "--shortest-edge", type=int, default=None, help="test-time short side (default: image size)"
    )
    parser.add_argument("--longest-edge", type=int, default=None, help="cap on the long side (default: none)")
    parser.add_argument("--repo-id", default=None, help="Hub id, shown in the card's usage examples")
    parser.add_argument("--model-name", default=None, help="title of the card")
    parser.add_argument("--dataset", action="append", default=[], help="training dataset Hub id (repeatable)")
    parser.add_argument("--license", default="apache-2.0", help="license identifier for the card")
    parser.add_argument("--base-model", default=None, help="Hub id of the CLIP the model was built from")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder to this repo"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = AutoModelForSemanticSegmentation.from_pretrained(args.model)  # classes registered by otseg_hf
    if not isinstance(model, MODEL_CLASSES):
        raise SystemExit(
            f"otseg-export: {args.model} holds a {type(model).__name__}, not an OTSeg or ZegOT model"
        )
    tokenizer = None
    if not args.no_tokenizer:
        source = args.tokenizer or args.model
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise SystemExit(
                f"no tokenizer at {source!r} ({error}); pass --tokenizer or --no-tokenizer"
            ) from error
    image_processor = default_image_processor(model.config)
    if args.shortest_edge or args.longest_edge:
        size = {"shortest_edge": args.shortest_edge or model.config.clip_config.vision_config.image_size}
        if args.longest_edge:
            size["longest_edge"] = args.longest_edge
        image_processor = OTSegImageProcessor(size=size, size_divisor=image_processor.size_divisor)
    eval_results = json.loads(args.eval_results.read_text()) if args.eval_results else None
    folder = save_otseg_folder(
        model,
        args.out,
        tokenizer=tokenizer,
        image_processor=image_processor,
        eval_results=eval_results,
        repo_id=args.repo_id or args.push_to_hub,
        model_name=args.model_name,
        datasets=args.dataset,
        license=args.license,
        base_model=args.base_model,
    )
    print(f"wrote {folder}")
    if args.push_to_hub:
        info = push_otseg_folder(folder, args.push_to_hub, token=args.token, private=args.private or None)
        print(f"pushed to {info.commit_url}")


if __name__ == "__main__":
    main()
