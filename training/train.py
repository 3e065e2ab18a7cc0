"""Train OTSeg or ZegOT with accelerate: inductive, transductive or fully supervised (spec section 9).

    accelerate launch training/train.py --recipe otseg-voc-inductive --dataset-name data/voc --output-dir out/voc-ind
    accelerate launch training/train.py --recipe otseg-voc-transductive --init-from out/voc-ind ...
    python training/train.py --recipe otseg-synthetic-inductive --output-dir out/tiny   # offline, CPU, minutes

A recipe (`otseg_hf.recipes.recipes.RECIPES`) fixes the optimizer, schedule, iterations, total batch and augmentation;
flags override single fields. The total batch is reached on any number of processes by gradient accumulation,
and the script prints how. Checkpoints (`otseg_hf.runs.checkpoints`: safetensors and JSON, nothing pickled) go to
OUTPUT_DIR/checkpoints/step_N, renamed into place when complete; `--resume latest` continues from the newest
complete one, exactly (data order, augmentation, optimizer, schedule, random states). `train_log.jsonl` is
flushed at every logging step. At the end the model is evaluated and its folder (weights, config, processor,
tokenizer, code, model card with the results) is staged and moved into OUTPUT_DIR with config.json last. A
non-empty OUTPUT_DIR needs `--resume` or `--overwrite-output-dir`; arguments, both splits and the checkpoint
are checked before anything is written (`otseg_hf.runs.folder`, `otseg_hf.data.checks`).

Your own data: `--recipe custom` (crop, sliding window and prompt depth adapted to `--clip` and to the images),
`--dataset-name` (Hub id or a folder from `save_to_disk` / `training/convert_datasets.py`) with image and label
columns (`--image-column`, `--label-column`), `--class-names` in label-id order, `--unseen-label-ids` (ids as the
model sees them: after `--reduce-labels`), and for a background labelled 0 either `--reduce-labels` (it is ignored
in training; see `--threshold` of the pipelines) or `--background-name NAME` (it is a class with its own prompts).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
from pathlib import Path

from otseg_hf.cli.arguments import add_dataset_arguments, parse_overrides
from otseg_hf.cli.choices import HEAD_INITS, RECIPE_NAMES, SETTINGS
from otseg_hf.cli.conventions import HelpFormatter, add_debug_argument, quiet_libraries, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--recipe", required=True, choices=RECIPE_NAMES, help="the training recipe ('custom': your own data)"
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="checkpoints, logs and the final model"
    )
    # data
    add_dataset_arguments(
        parser,
        dataset_name_help="Hub id or save_to_disk folder (default: the recipe's synthetic data)",
        class_names_help="class names in label-id order (default: the recipe's)",
        unseen_help="unseen classes (default: the recipe's)",
    )
    parser.add_argument(
        "--background-name",
        help="label 0 is a background to segment as a class with this name and its own prompts; --class-names "
        "then names labels 1, 2, ... (instead of --reduce-labels, which ignores it)",
    )
    parser.add_argument("--train-split", default="train", help="split to train on")
    parser.add_argument("--eval-split", default="validation", help="split to evaluate on ('none' to skip)")
    parser.add_argument(
        "--streaming", action="store_true", help="stream the training split (large Hub datasets)"
    )
    parser.add_argument("--setting", choices=SETTINGS, help="override the recipe's setting")
    parser.add_argument("--num-train-images", type=int, default=256, help="synthetic data: training images")
    parser.add_argument("--num-eval-images", type=int, default=64, help="synthetic data: evaluation images")
    parser.add_argument("--max-eval-images", type=int, help="evaluate on the first N images only")
    # model
    parser.add_argument("--clip", help="pretrained CLIP, Hub id or local folder (default: the recipe's)")
    parser.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a model config field, VALUE read as JSON (e.g. matching=softmax, ensemble_weight=0); repeatable",
    )
    parser.add_argument(
        "--init-from", help="start from this saved model folder (transductive recipes need it)"
    )
    # optimisation (recipe overrides)
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--total-batch-size", type=int, help="images per optimizer step over all processes (default: the recipe's)")
    parser.add_argument("--per-device-batch-size", type=int, default=4, help="images per process and forward")
    parser.add_argument("--learning-rate", type=float, help="AdamW base learning rate (default: the recipe's)")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: the recipe's)")
    parser.add_argument("--crop-size", type=int, help="training crop size (default: the recipe's)")
    parser.add_argument(
        "--head-init", choices=HEAD_INITS, help="how a new model's head starts (default: the recipe's; see the README)"
    )
    parser.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="default: accelerate's config"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="train on CPU processes (gloo) even where a GPU exists; see the README",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of model init, data order and augmentation")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    # bookkeeping
    parser.add_argument(
        "--checkpointing-steps", type=int, default=1000, help="save_state every N steps (0: never)"
    )
    parser.add_argument(
        "--resume", help="'latest' (the newest complete checkpoint of OUTPUT_DIR) or a checkpoint folder"
    )
    parser.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="delete what a non-empty OUTPUT_DIR holds (an earlier run) before training",
    )
    parser.add_argument(
        "--eval-steps", type=int, default=0, help="evaluate every N steps (0: only at the end)"
    )
    parser.add_argument("--logging-steps", type=int, default=10, help="log the loss every N steps")
    parser.add_argument("--report-to", default=None, help="accelerate trackers: tensorboard, wandb, all, ...")
    parser.add_argument("--no-save-model", action="store_true", help="skip the final model folder")
    add_debug_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":  # `--help` and usage errors answer here, before torch and transformers load below
    run_cli(parse_args, "train.py")

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DataLoaderConfiguration,
    GradientAccumulationPlugin,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from otseg_hf import OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation
from otseg_hf.data.checks import check_training_splits
from otseg_hf.data.loading import load_dataset_split
from otseg_hf.data.splits import resolve_vocabulary
from otseg_hf.data.transforms import training_transforms
from otseg_hf.evaluation.evaluate import EvaluationSet, evaluate_model
from otseg_hf.evaluation.plots import write_training_curves
from otseg_hf.hub.folders import default_image_processor, save_otseg_folder
from otseg_hf.model.processing_otseg import load_tokenizer
from otseg_hf.recipes import (
    CUSTOM,
    RECIPES,
    adapt_to_data,
    build_optimizer,
    gradient_accumulation_steps,
)
from otseg_hf.recipes.initialization import initialize_head
from otseg_hf.runs.atomic import begin_staging, publish_folder, staging_path
from otseg_hf.runs.folder import (
    RUN_FILES,
    TrainLog,
    check_output_dir,
    check_run_arguments,
    locate_checkpoint,
    resume_from,
    save_checkpoint,
    start_output_dir,
)
from otseg_hf.world.splits import GENERATED, GENERATED_SPLIT_SEEDS, generated_dataset

logger = logging.getLogger(__name__)
MODEL_CLASSES = {"otseg": OTSegForSemanticSegmentation, "zegot": ZegOTForSemanticSegmentation}




# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
class TrainingSet(Dataset):
    """Rows of a map-style dataset through the recipe's augmentations. The augmentation of row i in epoch e
    draws from numpy's generator seeded with (seed, e, i): independent of workers, processes and resuming."""

    def __init__(self, dataset, transform, image_column: str, label_column: str, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        row = self.dataset[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(row[self.image_column], row[self.label_column], rng)


class StreamingTrainingSet(torch.utils.data.IterableDataset):
    """An iterable (streamed) dataset through the augmentations, seeded per (seed, epoch, position)."""

    def __init__(self, dataset, transform, image_column: str, label_column: str, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0
        self.image_column, self.label_column = image_column, label_column

    def __iter__(self):
        self.dataset.set_epoch(self.epoch)
        for index, row in enumerate(self.dataset):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            yield self.transform(row[self.image_column], row[self.label_column], rng)


def collate(items):
    images, labels = zip(*items)
    return {"pixel_values": torch.stack(images), "labels": torch.stack(labels)}


def load_split(args, split: str, recipe, streaming: bool = False):
    """A split of the user's dataset, or the synthetic one."""
    if args.dataset_name is None:
        if recipe.dataset not in GENERATED:
            raise ValueError(
                f"recipe {recipe.name} needs --dataset-name (e.g. a folder from convert_datasets.py)"
            )
        train = split == args.train_split
        count = args.num_train_images if train else args.num_eval_images
        seed = 0 if train else GENERATED_SPLIT_SEEDS.get(split, 1)
        return generated_dataset(recipe.dataset, count, seed=seed, image_size=recipe.crop_size)
    data = load_dataset_split(args.dataset_name, split, args.dataset_config, streaming)
    if streaming:  # a shuffle buffer, reseeded per epoch by set_epoch
        data = data.shuffle(seed=args.seed, buffer_size=1000)
    return data


# ----------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------
def build_model(args, recipe, class_names, seen_label_ids):
    """(model, tokenizer): from a saved folder (--init-from), a tiny random CLIP or a pretrained CLIP."""
    model_class = MODEL_CLASSES[recipe.model_type]
    transductive = recipe.setting == "transductive"
    if args.init_from:
        if args.model_override:
            raise ValueError(
                f"--model-override {args.model_override} with --init-from: the saved model's config is used as it "
                "is; change fields in a new model (no --init-from) or edit the folder's config"
            )
        model = model_class.from_pretrained(args.init_from)
        if list(model.config.class_names) != list(class_names):
            raise ValueError(
                f"{args.init_from} segments {model.config.class_names}, the recipe's data {list(class_names)}"
            )
        changed = {**model.config.to_dict(), "seen_label_ids": seen_label_ids, "transductive": transductive}
        type(model.config).from_dict(
            changed
        )  # validates the new setting (e.g. transductive needs unseen classes)
        model.config.seen_label_ids = seen_label_ids
        model.config.transductive = transductive
        return model, load_tokenizer(args.init_from)
    overrides = {**recipe.model_overrides, **parse_overrides(args.model_override, model_class.config_class)}
    if recipe.model_type == "otseg":
        overrides.setdefault("prompt_templates", list(recipe.split.prompt_templates))
    if recipe.clip == "tiny-random":
        from transformers import CLIPModel

        from otseg_hf.testing import char_clip_tokenizer, tiny_clip_config

        clip, tokenizer = CLIPModel(tiny_clip_config(image_size=recipe.crop_size)), char_clip_tokenizer()
    else:
        clip, tokenizer = recipe.clip, load_tokenizer(recipe.clip, "pass a CLIP name or folder that has one")
    model = model_class.from_clip(
        clip, class_names, seen_label_ids, transductive, tokenizer, recipe.crop_size, **overrides
    )
    initialize_head(model, recipe.head_init)
    return model, tokenizer


def check_arguments(args, recipe) -> None:
    """Mistakes that would otherwise surface late (or not at all), before anything is loaded or written."""
    if args.background_name and args.reduce_labels:
        raise ValueError(
            "--background-name makes label 0 a class, --reduce-labels ignores it: give one of them"
        )
    if recipe.dataset == CUSTOM and (args.dataset_name is None or args.class_names is None):
        raise ValueError("--recipe custom trains on your data: give --dataset-name and --class-names")
    trackers = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "comet_ml": ("comet_ml",)}
    for tracker in (args.report_to or "").replace(",", " ").split():
        modules = trackers.get(tracker)
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise ValueError(f"--report-to {tracker}: {modules[0]} is not installed (pip install {modules[0]})")


def clip_vision_config(recipe):
    """The vision config of the recipe's CLIP, without loading its weights."""
    if recipe.clip == "tiny-random":
        from otseg_hf.testing import tiny_clip_config

        return tiny_clip_config(image_size=recipe.crop_size).vision_config
    from transformers import CLIPConfig

    return CLIPConfig.from_pretrained(recipe.clip).vision_config


def image_short_side(data, image_column: str) -> int:
    """The short side of the first training image."""
    row = next(iter(data))
    if image_column not in row:
        raise ValueError(f"--image-column {image_column!r} is not a column of the data; it has {sorted(row)}")
    image = row[image_column]
    size = image.size if hasattr(image, "size") and not hasattr(image, "shape") else np.asarray(image).shape[1::-1]
    return int(min(size))


# ----------------------------------------------------------------------------------------------------
# arguments, output folder, checkpoints, log
# ----------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------
def main(argv=None) -> dict | None:
    args = parse_args(argv)
    check_run_arguments(args)
    recipe = RECIPES[args.recipe]
    changes = {
        "max_steps": args.max_steps,
        "total_batch_size": args.total_batch_size,
        "learning_rate": args.learning_rate,
        "warmup_steps": args.warmup_steps,
        "crop_size": args.crop_size,
        "clip": args.clip,
        "setting": args.setting,
        "head_init": args.head_init,
    }
    recipe = recipe.replace(**{k: v for k, v in changes.items() if v is not None})
    if recipe.init_from and not args.init_from:
        raise ValueError(
            f"recipe {recipe.name} starts from the {recipe.init_from} checkpoint: pass --init-from with the folder "
            "that run wrote (its OUTPUT_DIR)"
        )
    check_arguments(args, recipe)
    class_names = args.class_names
    if args.background_name:  # label 0 is the background class, --class-names are labels 1, 2, ...
        class_names = [args.background_name, *(class_names or recipe.split.class_names)]
    split = None if recipe.dataset == CUSTOM else recipe.split  # the custom split is made below
    vocabulary = resolve_vocabulary(split, class_names, args.unseen_label_ids)
    class_names = list(vocabulary.class_names)
    if vocabulary.seen_label_ids is None and recipe.setting != "fully_supervised":
        raise ValueError("with --class-names, give --unseen-label-ids too (or --setting fully_supervised)")
    seen_label_ids = None if recipe.setting == "fully_supervised" else list(vocabulary.seen_label_ids)
    train_data = None
    if recipe.dataset == CUSTOM:  # crop, window and prompt depth from the CLIP and the images
        train_data = load_split(args, args.train_split, recipe, streaming=args.streaming)
        seen = vocabulary.seen_label_ids
        unseen = [] if seen is None else [i for i in range(len(class_names)) if i not in set(seen)]
        recipe = adapt_to_data(
            recipe, clip_vision_config(recipe), image_short_side(train_data, args.image_column), class_names,
            unseen, crop_size=args.crop_size,
        )  # fmt: skip
        print(
            f"recipe custom: crop {recipe.crop_size}, window {recipe.split.inference_window_size} stride "
            f"{recipe.split.inference_window_stride}, {recipe.model_overrides}"
        )

    # 1. accelerator: the recipe's total batch through gradient accumulation
    # (the state must know about the CPU before anything else: several CPU processes need cpu=True)
    state = PartialState(cpu=args.cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))
    checkpoint = locate_checkpoint(args.resume, args.output_dir, say=state.print)
    check_output_dir(args.output_dir, checkpoint, args.overwrite_output_dir)
    accumulation = gradient_accumulation_steps(
        recipe.total_batch_size, args.per_device_batch_size, state.num_processes
    )
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_dir=str(args.output_dir),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=accumulation, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    quiet_libraries()  # no accelerate INFO per checkpoint, no transformers bar per load
    accelerator.print(
        f"recipe {recipe.name}: total batch {recipe.total_batch_size} = {args.per_device_batch_size} per device x "
        f"{accelerator.num_processes} processes x {accumulation} accumulation steps; {recipe.max_steps} steps"
    )
    set_seed(args.seed)

    # 2. model, optimizer, schedule
    model, tokenizer = build_model(args, recipe, class_names, seen_label_ids)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    accelerator.print(
        f"model {type(model).__name__} ({model.config.setting}): {trainable:,} trainable of {total:,}"
    )
    optimizer, scheduler = build_optimizer(model, recipe)

    # 3. data, checked before anything is written
    transform = training_transforms(
        crop_size=recipe.crop_size,
        scale=recipe.rescale_scale,
        ratio_range=recipe.ratio_range,
        cat_max_ratio=recipe.cat_max_ratio,
        ignore_index=model.config.ignore_index,
        do_reduce_labels=args.reduce_labels,
        num_classes=len(class_names),
        photometric_distortion=recipe.photometric_distortion,
    )
    if train_data is None:
        train_data = load_split(args, args.train_split, recipe, streaming=args.streaming)
    eval_data = load_eval_data(args, recipe)  # once, before training: its errors come early
    set_class = StreamingTrainingSet if args.streaming else TrainingSet
    train_set = set_class(train_data, transform, args.image_column, args.label_column, args.seed)
    check_training_splits(
        train_data, train_set, eval_data, args, len(model.config.id2label), model.config.ignore_index,
        accelerator.num_processes, args.dataset_name or f"the synthetic {recipe.dataset} data",
    )  # fmt: skip
    train_loader = DataLoader(
        train_set,
        batch_size=args.per_device_batch_size,
        shuffle=not args.streaming,
        drop_last=True,
        num_workers=args.num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(
            args.seed
        ),  # keeps the global RNG (dropout) out of data loading
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    batches_per_epoch = None if args.streaming else len(train_loader)
    if batches_per_epoch == 0:
        raise ValueError("the training split gives no full batch per process: lower --per-device-batch-size")
    run = {  # what must be equal for a resumed run to continue exactly
        "recipe": recipe.name, "seed": args.seed, "per_device_batch_size": args.per_device_batch_size,
        "num_processes": accelerator.num_processes, "gradient_accumulation_steps": accumulation,
        "batches_per_epoch": batches_per_epoch,
    }  # fmt: skip

    # 4. resume (json and safetensors only: a checkpoint cannot run code)
    completed_steps, micro_steps = 0, 0
    if checkpoint is not None:
        accelerator.print(f"resuming from {checkpoint}")
        completed_steps = resume_from(checkpoint, accelerator, model, optimizer, scheduler, run)
        micro_steps = completed_steps * accumulation
    start_output_dir(args.output_dir, accelerator, args.overwrite_output_dir, checkpoint is not None)
    if args.report_to:
        accelerator.init_trackers("otseg", config={k: str(v) for k, v in vars(args).items()})
    epoch, skip = (0, micro_steps) if batches_per_epoch is None else divmod(micro_steps, batches_per_epoch)
    log = TrainLog(
        args.output_dir / RUN_FILES[0],
        accelerator.is_main_process,
        completed_steps if checkpoint is not None else None,
    )

    # 5. train
    losses, evaluations = [], []
    progress = tqdm(
        total=recipe.max_steps,
        initial=completed_steps,
        disable=not accelerator.is_local_main_process,
        desc="train",
    )
    model.train()
    while completed_steps < recipe.max_steps:
        train_set.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            completed_steps += 1
            progress.update(1)
            step_loss = accelerator.gather(torch.stack(losses)).float().mean().item()
            losses = []
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"the loss is {step_loss} at step {completed_steps}")
            record = {"step": completed_steps, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
            log.add(record)
            checkpointing = args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0
            if completed_steps % args.logging_steps == 0 or completed_steps == recipe.max_steps or checkpointing:
                log.flush()
                progress.set_postfix(loss=f"{step_loss:.4f}")
                if args.report_to:
                    accelerator.log({"train/loss": step_loss, "train/lr": record["lr"]}, step=completed_steps)
            if checkpointing:
                save_checkpoint(args.output_dir, accelerator, completed_steps, run, model, optimizer, scheduler)
            if (
                args.eval_steps
                and completed_steps % args.eval_steps == 0
                and completed_steps < recipe.max_steps
            ):
                results = run_evaluation(args, recipe, accelerator, model, eval_data)
                if results is not None:
                    evaluations.append({"step": completed_steps, **{k: results[k] for k in SUMMARY}})
                if results is not None and args.report_to:
                    accelerator.log(
                        {f"eval/{k}": v for k, v in results.items() if k in SUMMARY}, step=completed_steps
                    )
            if completed_steps >= recipe.max_steps:
                break
        epoch, skip = epoch + 1, 0
    progress.close()
    log.flush()

    # 6. evaluate and save the model folder: staged, then moved into OUTPUT_DIR with config.json last
    staging = args.output_dir / ".model.partial"
    saving = accelerator.is_main_process and not args.no_save_model
    if saving:
        begin_staging(args.output_dir / "model")
        staging = staging_path(args.output_dir / "model")
    results = run_evaluation(
        args, recipe, accelerator, model, eval_data, folder=staging if saving else args.output_dir
    )
    accelerator.wait_for_everyone()
    if saving:
        unwrapped = accelerator.unwrap_model(model)
        eval_results = None
        if results is not None:
            eval_results = {
                **dataset_fields(args, recipe),
                **{
                    key: 100 * results[name]
                    for key, name in CARD_METRICS.items()
                    if _finite(results.get(name))
                },
            }
            if "miou_unseen" not in eval_results:  # fully supervised: no unseen classes, the card gives mIoU
                for key in ("miou_seen", "hiou"):
                    eval_results.pop(key, None)
            if "miou" not in eval_results:
                eval_results = None
        if results is not None:
            evaluations.append({"step": completed_steps, **{k: results[k] for k in SUMMARY}})
        curves = write_training_curves(args.output_dir, evaluations)
        if curves is not None:  # into the staged folder: it is published with the model
            os.replace(curves, staging / curves.name)
        save_otseg_folder(
            unwrapped, staging, tokenizer=tokenizer, eval_results=eval_results, **card_fields(args, recipe),
            training_curves=curves.name if curves else None,
        )  # fmt: skip
        publish_folder(staging, args.output_dir, keep=("checkpoints", *RUN_FILES))
        accelerator.print(f"model saved to {args.output_dir}")
    accelerator.end_training()
    return results


SUMMARY = ("mean_iou", "seen_mean_iou", "unseen_mean_iou", "harmonic_mean_iou", "overall_accuracy")
CARD_METRICS = {
    "miou": "mean_iou",
    "miou_seen": "seen_mean_iou",
    "miou_unseen": "unseen_mean_iou",
    "hiou": "harmonic_mean_iou",
    "pixel_accuracy": "overall_accuracy",
}


def dataset_fields(args, recipe) -> dict:
    """How the card and eval_results.json name the evaluation data: a Hub id as it is, a local folder by its
    name (the path is not a dataset id), the built-in data by what it is."""
    if args.dataset_name is None:
        name, kind = f"otseg_hf {recipe.dataset} (generated)", recipe.dataset
    elif Path(args.dataset_name).exists():
        name = kind = Path(args.dataset_name).resolve().name
    else:
        name = kind = args.dataset_name
    fields = {"dataset_name": name, "dataset_type": kind, "dataset_split": args.eval_split}
    if args.dataset_config:
        fields["dataset_config"] = args.dataset_config
    return fields


def card_fields(args, recipe) -> dict:
    """`datasets` and `base_model` of the card's metadata: Hub ids only (local folders are no Hub ids)."""
    fields = {}
    if args.dataset_name and not Path(args.dataset_name).exists():
        fields["datasets"] = [args.dataset_name]
    base = recipe.clip
    if args.init_from:
        base = None
    if base and base != "tiny-random" and not Path(base).exists():
        fields["base_model"] = base
    return fields


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def load_eval_data(args, recipe):
    """--eval-split (its first --max-eval-images rows), or None for 'none'."""
    if args.eval_split == "none":
        return None
    data = load_split(args, args.eval_split, recipe)
    if args.max_eval_images is not None:
        data = data.select(range(min(args.max_eval_images, len(data))))
    return data


def run_evaluation(args, recipe, accelerator, model, data, folder: Path | None = None) -> dict | None:
    """Evaluate on `data` from `load_eval_data` (all processes), print the table, write
    eval_results.json (atomically) into `folder` (default OUTPUT_DIR). None without evaluation data."""
    if data is None:
        return None
    unwrapped = accelerator.unwrap_model(model)
    processor = default_image_processor(unwrapped.config)
    processor.size = {"shortest_edge": recipe.split.test_short_side}
    dataset = EvaluationSet(
        data,
        processor,
        args.image_column,
        args.label_column,
        do_reduce_labels=args.reduce_labels,
        num_classes=len(unwrapped.config.id2label),
        ignore_index=unwrapped.config.ignore_index,
    )
    metric = evaluate_model(unwrapped, dataset, accelerator, progress=True)
    results = metric.compute()
    if accelerator.is_main_process:
        print(metric.table(results))
        metric.save_json((folder or args.output_dir) / "eval_results.json", results, **dataset_fields(args, recipe))
    return results


if __name__ == "__main__":
    run_cli(main, "train.py")
