"""Model cards for OTSeg and ZegOT folders: Hub metadata (library, pipeline tag, base model, datasets, a
`model-index` with the evaluation results) and the architecture, filled into the templates in `templates/`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.metrics import harmonic_mean

# the card templates, shipped inside the package (otseg_hf/hub/templates/<model_type>.md)
CARD_TEMPLATES = {
    "otseg": Path(__file__).resolve().parent / "templates" / "otseg.md",
    "zegot": Path(__file__).resolve().parent / "templates" / "zegot.md",
}
SETTING_DESCRIPTIONS = {
    "inductive": "trained on the seen classes only; the unseen classes were never labelled.",
    "transductive": (
        "trained on the seen classes' labels and on the unlabelled pixels of the training images, which "
        "the model pseudo-labelled as unseen classes (self-training)."
    ),
    "fully_supervised": "every class was labelled in training (an upper bound for the zero-shot settings).",
}
# card key -> (key in the metrics JSON that training and evaluate.py write, model-index metric type, display name).
# The model-index types are the Hub's standard ids (`mean_iou` as `evaluate`'s metric, `accuracy`); the names tell
# the three mIoUs apart.
RESULT_METRICS = {
    "miou_seen": ("seen_mean_iou", "mean_iou", "mIoU(S)"),
    "miou_unseen": ("unseen_mean_iou", "mean_iou", "mIoU(U)"),
    "hiou": ("harmonic_mean_iou", "harmonic_mean_iou", "hIoU"),
    "miou": ("mean_iou", "mean_iou", "mIoU"),
    "pixel_accuracy": ("overall_accuracy", "accuracy", "pixel accuracy"),
}
CARD_TAGS = (
    "zero-shot-image-segmentation",
    "semantic-segmentation",
    "clip",
    "optimal-transport",
    "custom_code",
)
DATASET_KEYS = ("dataset_name", "dataset_type", "dataset_split", "dataset_config")
RESULT_KEYS = {*DATASET_KEYS, *RESULT_METRICS}
# the keys of `otseg_hf.evaluation.metrics.metrics_to_json` (fractions) besides the metrics themselves
METRICS_JSON_EXTRA = {"mean_accuracy", "unseen_label_ids", "per_class"}


def results_from_metrics_json(metrics: Mapping[str, Any], index: int = 0) -> dict:
    """The JSON that `training/train.py` (`eval_results.json`) and `training/evaluate.py` write — fractions under
    the metrics' own keys (`mean_iou`, `seen_mean_iou`, ...), with the dataset's `dataset_name`, `dataset_type`,
    `dataset_split` — as a card result: percentages under the card's keys. Metrics that are null are left out."""
    json_keys = {json_key: key for key, (json_key, _, _) in RESULT_METRICS.items()}
    unknown = sorted(set(metrics) - set(json_keys) - METRICS_JSON_EXTRA - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"eval result {index} has unknown keys {unknown}")
    result = {key: metrics[key] for key in DATASET_KEYS if metrics.get(key) is not None}
    for json_key, key in json_keys.items():
        value = metrics.get(json_key)
        if value is not None:
            value = float(value)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"eval result {index}: {json_key} must be a fraction in [0, 1], got {value}")
            result[key] = 100.0 * value
    return result



def check_eval_results(eval_results: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> list[dict]:
    """Normalise evaluation results: a dict (or list of dicts) with `dataset_name`, `dataset_type` and
    percentages `miou_seen`, `miou_unseen` (and optionally `hiou`, computed when absent, `miou`,
    `pixel_accuracy`, `dataset_split`, `dataset_config`); or `miou` alone (fully supervised). A dict in the format
    that training and evaluation write (`mean_iou`, ... as fractions; see `results_from_metrics_json`) is converted."""
    if eval_results is None:
        return []
    if isinstance(eval_results, Mapping):
        eval_results = [eval_results]
    checked = []
    for index, result in enumerate(eval_results):
        if not isinstance(result, Mapping):
            raise ValueError(f"eval result {index} must be a dict, got {type(result).__name__}")
        if any(json_key in result for json_key, _, _ in RESULT_METRICS.values()):
            result = results_from_metrics_json(result, index)
        unknown = sorted(set(result) - RESULT_KEYS)
        if unknown:
            raise ValueError(f"eval result {index} has unknown keys {unknown}; known: {sorted(RESULT_KEYS)}")
        missing = [key for key in ("dataset_name", "dataset_type") if key not in result]
        if "miou" not in result or "miou_seen" in result or "miou_unseen" in result:
            missing += [key for key in ("miou_seen", "miou_unseen") if key not in result]
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
        if result.get("hiou") is None and "miou_seen" in result:
            result["hiou"] = harmonic_mean(result["miou_seen"], result["miou_unseen"])
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
    training_curves: str | None = None,
) -> ModelCard:
    """A model card for an OTSeg or ZegOT model (`config.model_type` picks the template): Hub metadata (library,
    pipeline tag, tags, datasets, license, base model, `model-index` with mIoU(S) / mIoU(U) / hIoU) and a body
    filled from the config and the results; `training_curves` is the file name of the folder's training-curves
    picture, shown in the card."""
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
        for key, (_, metric_type, metric_name) in RESULT_METRICS.items()
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
        training_curves=training_curves,
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


__all__ = ["CARD_TEMPLATES", "check_eval_results", "model_card", "results_from_metrics_json"]
