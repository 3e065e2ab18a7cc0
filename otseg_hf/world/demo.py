"""The demo's work: OTSeg beside its own frozen CLIP in the generated world, scored and drawn (`run`).
`python -m otseg_hf.demo` (otseg_hf/demo.py, which says what it does) parses the arguments and calls `run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..evaluation.baseline import FrozenCLIPSegmenter
from ..evaluation.evaluate import EvaluationSet, evaluate_model, penalised_label_ids
from ..evaluation.metrics import SegmentationMetric
from ..hub.folders import default_image_processor
from ..model.sliding_window import sliding_window_inference
from .contact_sheet import contact_sheet, overview
from .shapes import OBJECT_TEMPLATES
from .splits import GENERATED_SPLIT_SEEDS, WORLD, generated_dataset

SUMMARY = (("seen_mean_iou", "mIoU(S)"), ("unseen_mean_iou", "mIoU(U)"), ("harmonic_mean_iou", "hIoU"),
           ("mean_iou", "mIoU"))  # fmt: skip


class DemoError(Exception):
    """A problem with the user's model, CLIP or data, reported in one line (exit status 2)."""


def load_model(path: Path):
    from transformers import AutoModelForSemanticSegmentation

    if not (path / "config.json").exists():
        raise DemoError(f"no model at {path}: the shipped checkpoints are missing; rebuild them with "
                        "`python training/reproduce_world.py --output-dir outputs/world --install`")  # fmt: skip
    try:
        return AutoModelForSemanticSegmentation.from_pretrained(path).eval()
    except (OSError, ValueError, KeyError) as error:
        raise DemoError(f"{path} is not an OTSeg / ZegOT model folder: {error}") from None


def load_baseline(path: Path, config) -> FrozenCLIPSegmenter:
    if not (path / "config.json").exists():
        raise DemoError(f"no CLIP folder at {path} for the frozen baseline (pass --clip)")
    templates = list(getattr(config, "prompt_templates", None) or OBJECT_TEMPLATES)
    unseen = config.unseen_label_ids if config.seen_label_ids is not None else ()
    try:
        return FrozenCLIPSegmenter.from_pretrained(path, config.class_names, templates, unseen).eval()
    except (OSError, ValueError) as error:
        raise DemoError(f"{path} is not a CLIP folder with a tokenizer: {error}") from None


def load_rows(args, config):
    """(table rows, sheet rows, where they come from)."""
    if args.dataset_name is None:
        if list(config.class_names) != list(WORLD.class_names):
            raise DemoError(f"{args.model} segments {len(config.class_names)} classes that are not the world's "
                            f"{len(WORLD.class_names)}; pass --dataset-name with data of its vocabulary")  # fmt: skip
        table = generated_dataset(WORLD.name, args.num_eval_images, seed=GENERATED_SPLIT_SEEDS["test"])
        sheets = demo_rows(args.num_images, set(config.unseen_label_ids))
        return table, sheets, f"world test images (seed {GENERATED_SPLIT_SEEDS['test']})"
    from ..data.loading import load_dataset_split

    try:
        data = load_dataset_split(args.dataset_name, args.split)
    except (OSError, ValueError, FileNotFoundError) as error:
        raise DemoError(f"cannot load --dataset-name {args.dataset_name} split {args.split}: {error}") from None
    names_file = Path(args.dataset_name) / "id2label.json"
    if names_file.exists():
        names = [v for _, v in sorted(json.loads(names_file.read_text()).items(), key=lambda kv: int(kv[0]))]
        if names != list(config.class_names):
            raise DemoError(f"the vocabulary of {args.dataset_name} ({len(names)} classes: {names[:3]}...) does "
                            f"not fit {args.model} ({len(config.class_names)}: {list(config.class_names)[:3]}...)")  # fmt: skip
    table = data.select(range(min(args.num_eval_images, len(data))))
    sheets = [(np.asarray(row["image"].convert("RGB")), np.asarray(row["label"]))
              for row in data.select(range(min(args.num_images, len(data))))]  # fmt: skip
    return table, sheets, f"{args.dataset_name} [{args.split}]"


def demo_rows(count: int, unseen: set[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` world images of the demo seed in which an unseen class shows."""
    from .scenes import WorldScenes

    world, found, index = WorldScenes(image_size=WORLD.image_size), [], 0
    while len(found) < count:
        image, label = world.generate(index, GENERATED_SPLIT_SEEDS["demo"])
        if unseen & set(np.unique(label).tolist()):
            found.append((image, label))
        index += 1
    return found


def images_with_unseen_classes(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` demo images (image, label map) in which one of the world's unseen classes shows."""
    return demo_rows(count, set(WORLD.unseen_label_ids))


@torch.no_grad()
def predict(model, processor, image: np.ndarray) -> np.ndarray:
    """The evaluation's label map of one image (sliding windows, seen-class penalty of inductive models)."""
    pixels = processor(images=image, do_pad=False, return_tensors="pt")["pixel_values"]
    outputs = sliding_window_inference(model, pixels)
    config = model.config
    return processor.post_process_semantic_segmentation(
        outputs, target_sizes=[image.shape[:2]], seen_label_ids=penalised_label_ids(config),
        seen_class_penalty=config.seen_class_penalty,
    )[0].numpy()  # fmt: skip


def evaluate(segmenter, rows) -> SegmentationMetric:
    config = segmenter.config
    try:
        dataset = EvaluationSet(rows, default_image_processor(config), num_classes=len(config.class_names),
                                ignore_index=config.ignore_index)  # fmt: skip
        return evaluate_model(segmenter, dataset)
    except ValueError as error:
        raise DemoError(f"the data does not fit the model's {len(config.class_names)} classes: {error}") from None


def side_by_side(results: dict[str, dict], class_names, unseen) -> str:
    """The summary rows, then per-class IoU, one column per segmenter."""
    names = list(results)
    lines = ["| segmenter | " + " | ".join(label for _, label in SUMMARY) + " |", "|---|" + "---|" * len(SUMMARY)]
    for name in names:
        values = [results[name][key] for key, _ in SUMMARY]
        lines.append(f"| {name} | " + " | ".join("-" if v != v else f"{100 * v:.1f}" for v in values) + " |")
    lines += ["", f"{'class':24}{'split':8}" + "".join(f"{n[:14]:>16}" for n in names)]
    for index, class_name in enumerate(class_names):
        split = "unseen" if index in unseen else "seen"
        ious = [results[n]["per_category_iou"][index] for n in names]
        lines.append(f"{class_name:24}{split:8}" + "".join(f"{'-' if v != v else f'{100 * v:.1f}':>16}" for v in ious))
    return "\n".join(lines)


def run(args) -> dict:
    torch.manual_seed(0)
    model = load_model(args.model)
    config = model.config
    baseline = load_baseline(args.clip, config)
    table_rows, sheet_rows, source = load_rows(args, config)
    unseen = set(config.unseen_label_ids) if config.seen_label_ids is not None else set()
    label = f"{type(model).__name__.removesuffix('ForSemanticSegmentation')} ({config.setting})"
    print(f"model: {args.model} ({config.setting}; unseen: {', '.join(config.class_names[i] for i in sorted(unseen))})")
    print(f"frozen baseline: {args.clip}, patch embeddings vs the class prompts, no training\n")

    # 1. the metric table, both segmenters on the same images with the same metric code
    results = {label: evaluate(model, table_rows).compute(), "frozen CLIP (baseline)": evaluate(baseline, table_rows).compute()}
    print(f"{source}, {len(table_rows)} images, all {len(config.class_names)} classes (IoU, percent):\n")
    print(side_by_side(results, config.class_names, unseen))
    recorded = {f"{label}, recorded": args.model / "eval_results.json",
                "frozen CLIP (baseline), recorded": args.clip / "dense_baseline_results.json"}  # fmt: skip
    if args.dataset_name is None and all(path.exists() for path in recorded.values()):
        print("\nrecorded with the checkpoints (200 world test images, `training/reproduce_world.py`):\n")
        for name, path in recorded.items():
            values = json.loads(path.read_text())
            print(f"| {name} | " + " | ".join(f"{100 * (values[key] or 0.0):.1f}" for key, _ in SUMMARY) + " |")

    # 2. contact sheets: input | ground truth | the model | the frozen CLIP
    args.out.mkdir(parents=True, exist_ok=True)
    processor = default_image_processor(config)
    sheets = []
    for number, (image, truth) in enumerate(sheet_rows):
        predictions = {label: predict(model, processor, image), "frozen CLIP": predict(baseline, processor, image)}
        sheet, _ = contact_sheet(image, truth, predictions, config.class_names, sorted(unseen),
                                 ignore_index=config.ignore_index)  # fmt: skip
        path = args.out / f"sheet_{number}.png"
        sheet.save(path)
        sheets.append(sheet)
        accuracy = {k: float((v == truth).mean()) for k, v in predictions.items()}
        print(f"{path}: pixel accuracy " + ", ".join(f"{k} {a:.0%}" for k, a in accuracy.items()))
    if sheets:
        overview(sheets).save(args.out / "overview.png")
        print(f"{args.out / 'overview.png'}: all {len(sheets)} sheets")
    return results

