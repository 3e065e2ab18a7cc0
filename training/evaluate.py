"""Evaluate a saved OTSeg / ZegOT model: mIoU, mIoU(S), mIoU(U), hIoU, pixel accuracy, per-class IoU.

    accelerate launch training/evaluate.py --model out/voc-ind --dataset voc --dataset-name data/voc
    python training/evaluate.py --model out/coco-ind --dataset ade20k --dataset-name data/ade20k  # cross-dataset
    python training/evaluate.py --model out/tiny --dataset synthetic                               # offline

`--dataset` names the vocabulary and zero-shot split (`otseg_hf.data.splits.DATASETS` or "synthetic");
when it differs from the model's classes the model is given the dataset's class names (it needs its
tokenizer for that), and classes it was trained on as seen, matched by name, keep the seen-class penalty.
Your own data: `--class-names` (label-id order) and `--unseen-label-ids` instead of `--dataset`.

The numbers do not depend on the number of processes. The table is printed and written as JSON (with the
dataset's name, so that `otseg-export --eval-results` can put it in a model card); `--plots` also writes
`<output>_iou.png` (per-class IoU, seen and unseen coloured apart) and `<output>_confusion.png`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from otseg_hf.cli.arguments import add_dataset_arguments
from otseg_hf.cli.choices import DATASET_NAMES, GENERATED_NAMES
from otseg_hf.cli.conventions import HelpFormatter, add_debug_argument, model_source, quiet_libraries, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="saved model folder (or Hub id)")
    parser.add_argument("--dataset", choices=[*DATASET_NAMES, *GENERATED_NAMES], help="vocabulary and zero-shot split")
    add_dataset_arguments(
        parser,
        dataset_name_help="Hub id or save_to_disk folder (not needed for generated data)",
        class_names_help="class names in label-id order (instead of --dataset)",
        unseen_help="classes reported as unseen",
    )
    parser.add_argument("--split", default="validation", help="split to evaluate")
    parser.add_argument("--num-images", type=int, default=64, help="synthetic data: images")
    parser.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    parser.add_argument(
        "--test-short-side", type=int, help="resize the short side to this (default: the dataset's)"
    )
    parser.add_argument("--window-size", type=int, help="sliding window (default: the model's)")
    parser.add_argument("--stride", type=int, help="sliding-window stride (default: the model's)")
    parser.add_argument("--window-batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument(
        "--output", type=Path, help="JSON file for the results (default: MODEL/eval_<dataset>.json)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="evaluate on CPU processes even where a GPU exists"
    )
    parser.add_argument(
        "--plots", action="store_true", help="also write a per-class IoU chart and a confusion-matrix image (PNG)"
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":  # `--help` and usage errors answer here, before torch and transformers load below
    run_cli(parse_args, "evaluate.py")

from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env
from transformers import AutoModelForSemanticSegmentation

import otseg_hf  # noqa: F401  (registers the Auto classes)
from otseg_hf.data.checks import check_columns, check_label_column, check_not_empty
from otseg_hf.data.loading import load_dataset_split
from otseg_hf.data.splits import DATASETS, resolve_vocabulary
from otseg_hf.evaluation.evaluate import EvaluationSet, evaluate_model
from otseg_hf.evaluation.plots import confusion_matrix_image, per_class_iou_chart, save_png
from otseg_hf.hub.checks import check_model_folder
from otseg_hf.hub.folders import default_image_processor
from otseg_hf.model.processing_otseg import load_tokenizer
from otseg_hf.model.sliding_window import check_window
from otseg_hf.world.splits import GENERATED, generated_dataset

POSITIVE = ("num_images", "max_images", "test_short_side", "window_size", "stride", "window_batch_size")


def check_args(args) -> None:
    """Numbers in range, the model folder and the output path, before anything loads."""
    for name in POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.output is not None and args.output.is_dir():
        raise ValueError(f"--output {args.output} is a folder; give a JSON file path")
    check_model_folder(args.model)


def load_data(args):
    if args.dataset in GENERATED and args.dataset_name is None:
        return generated_dataset(args.dataset, args.num_images, seed=1)
    if args.dataset_name is None:
        raise ValueError("--dataset-name is needed (a Hub id or a folder from training/convert_datasets.py)")
    return load_dataset_split(args.dataset_name, args.split, args.dataset_config)


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_libraries()
    check_args(args)
    source = model_source(args.model, "--model")
    PartialState(cpu=args.cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))
    accelerator = Accelerator(cpu=args.cpu)
    model = AutoModelForSemanticSegmentation.from_pretrained(source).to(accelerator.device).eval()
    check_window(  # before any work: a stride larger than the window leaves pixels without a prediction
        args.window_size or model.config.inference_window_size,
        args.stride or model.config.inference_window_stride,
        args.window_batch_size,
    )

    # 1. vocabulary and split
    split = GENERATED.get(args.dataset) or DATASETS.get(args.dataset)
    vocabulary = resolve_vocabulary(
        split, args.class_names, args.unseen_label_ids, default_class_names=model.config.class_names
    )
    class_names = list(vocabulary.class_names)
    unseen = None if vocabulary.unseen_label_ids is None else list(vocabulary.unseen_label_ids)
    if list(class_names) != list(model.config.class_names):
        tokenizer = load_tokenizer(
            args.model, f"the model can only segment its own classes {model.config.class_names}"
        )
        model.set_class_names(class_names, tokenizer)
        accelerator.print(
            f"vocabulary set to the {len(class_names)} classes of {args.dataset or 'the given names'}"
        )

    # 2. data and preprocessing: the short side to the test size, no padding
    data = load_data(args)
    what = f"the split {args.split!r} of {args.dataset_name or args.dataset}"
    check_columns(data, (args.image_column, args.label_column), what)
    check_not_empty(data, what)
    if args.max_images:
        data = data.select(range(min(args.max_images, len(data))))
    check_label_column(
        data, args.label_column, len(class_names), model.config.ignore_index, args.reduce_labels, what=what
    )
    processor = default_image_processor(model.config)
    short_side = args.test_short_side or (split.test_short_side if split else None)
    if short_side:
        processor.size = {"shortest_edge": short_side}
    dataset = EvaluationSet(
        data,
        processor,
        args.image_column,
        args.label_column,
        do_reduce_labels=args.reduce_labels,
        num_classes=len(class_names),
        ignore_index=model.config.ignore_index,
    )

    # 3. evaluate on all processes
    metric = evaluate_model(
        model,
        dataset,
        accelerator,
        unseen_label_ids=unseen,
        window_size=args.window_size,
        stride=args.stride,
        window_batch_size=args.window_batch_size,
        progress=True,
    )
    results = metric.compute()
    if accelerator.is_main_process:
        print(metric.table(results))
        folder = Path(args.model) if Path(args.model).is_dir() else Path(".")
        output = args.output or folder / f"eval_{args.dataset or 'custom'}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        name = args.dataset_name or args.dataset or "custom"
        name = Path(name).resolve().name if Path(name).exists() else name
        metric.save_json(output, results, dataset_name=name, dataset_type=name, dataset_split=args.split)
        print(f"results written to {output}")
        if args.plots:
            chart = save_png(per_class_iou_chart(metric.to_json(results)), output.with_name(output.stem + "_iou.png"))
            matrix = confusion_matrix_image(metric.confusion_matrix.cpu().numpy(), metric.class_names)
            matrix_path = save_png(matrix, output.with_name(output.stem + "_confusion.png"))
            print(f"plots written to {chart} and {matrix_path}")
    # every process waits for the main one's writes, then the process group closes: a process that exits with
    # it open can abort at exit (gloo's threads: "terminate called without an active exception", exit code -6)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return json.loads(json.dumps(metric.to_json(results)))


if __name__ == "__main__":
    run_cli(main, "evaluate.py")
