"""Pretrain a tiny CLIP on the zero-shot world's captioned scenes.

    accelerate launch training/pretrain_clip.py --output-dir runs/world-clip --seed 0

World v2 (`otseg_hf.world.scenes.WorldScenes`) has 20 thing classes "<texture> <colour> shape" and 6
stuff classes, 7 of them unseen by OTSeg's training. With `--unseen captioned` (the default) pretraining scenes
show and name the unseen classes like any other, as a web-trained CLIP knows classes that a segmentation set
leaves out; with `--unseen never` no unseen class is ever drawn or named. No mask or label map is used: the
model learns from CLIP's scene-caption InfoNCE loss alone (a patch-phrase grounding loss is opt-in,
`--patch-loss-weight`; see `otseg_hf.world.clip`) on fresh captioned scenes every step
(`otseg_hf.world.captions`, seeds 1000 + seed). At the end it is evaluated zero-shot among all 26 class names ("a photo of a {}.") on held-out scenes (seed 1500 + seed): the
patches one class covers at least half of, by their patch embeddings, seen / unseen / things / stuff apart.
`DIR` gets the `CLIPModel` (safetensors), the tokenizer and `zero_shot_results.json`; OTSeg then
builds on it with `OTSegForSemanticSegmentation.from_clip(DIR, ...)`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from otseg_hf.cli.conventions import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder for the model, tokenizer and results"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and training scenes (eval: seed + 1)"
    )
    parser.add_argument("--max-train-steps", type=int, default=1600, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="scenes per step and process")
    parser.add_argument(
        "--gradient-accumulation-steps", type=int, default=1, help="batches per optimizer step"
    )
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay of matrices")
    parser.add_argument(
        "--warmup-steps", type=int, default=100, help="linear warm-up before the cosine decay"
    )
    parser.add_argument(
        "--patch-loss-weight",
        type=float,
        default=0.0,
        help="weight of the patch-phrase grounding loss (default 0: image-caption InfoNCE only, as a web CLIP; "
        "a positive weight trains the dense tokens directly and makes the frozen dense baseline unrealistically "
        "strong)",
    )
    parser.add_argument(
        "--unseen",
        choices=["captioned", "never"],
        default="captioned",
        help="unseen classes in pretraining: 'captioned' like any class (CLIP knows them, as a web-trained "
        "CLIP would; OTSeg's training will not), or 'never' shown nor named",
    )
    parser.add_argument(
        "--close-up-every",
        type=int,
        default=4,
        help="every N-th training image is a close-up of one shape (0: none)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="side of the square scenes")
    parser.add_argument("--patch-size", type=int, default=8, help="ViT patch side")
    parser.add_argument("--vision-hidden-size", type=int, default=64, help="ViT width")
    parser.add_argument("--vision-layers", type=int, default=4, help="ViT depth")
    parser.add_argument("--text-hidden-size", type=int, default=64, help="text transformer width")
    parser.add_argument("--text-layers", type=int, default=2, help="text transformer depth")
    parser.add_argument("--projection-dim", type=int, default=64, help="joint embedding dimension")
    parser.add_argument(
        "--eval-images", type=int, default=200, help="held-out images per zero-shot evaluation"
    )
    parser.add_argument(
        "--eval-steps", type=int, default=0, help="evaluate every N steps as well (0: only at the end)"
    )
    parser.add_argument("--logging-steps", type=int, default=50, help="print the losses every N steps")
    parser.add_argument(
        "--checkpointing-steps", type=int, default=0, help="save the training state every N steps (0: never)"
    )
    parser.add_argument(
        "--resume-from-checkpoint", type=Path, default=None, help="a step_N folder to resume from"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    positive = (
        "max_train_steps",
        "batch_size",
        "gradient_accumulation_steps",
        "eval_images",
        "logging_steps",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.patch_loss_weight >= 0:  # also refuses nan
        raise ValueError(f"--patch-loss-weight must be 0 or positive, got {args.patch_loss_weight}")
    if args.image_size % args.patch_size:
        raise ValueError(
            f"--image-size {args.image_size} must be a multiple of --patch-size {args.patch_size}"
        )
    return args


if __name__ == "__main__":  # `--help` and usage errors answer here, before torch and transformers load below
    run_cli(parse_args, "pretrain_clip.py")

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import CLIPModel, get_cosine_schedule_with_warmup

from otseg_hf.world.captions import SceneCaptions, patch_zero_shot_accuracy, scene_descriptions
from otseg_hf.world.clip import WorldCLIPPretrainer, WorldCollator, world_clip_config, world_clip_tokenizer
from otseg_hf.world.scenes import CLIP_PRETRAINING_SEED, WorldScenes, world_v2_words


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)

    # data: fresh captioned scenes of world v2, scene i of seed CLIP_PRETRAINING_SEED + seed for item i
    world = WorldScenes(image_size=args.image_size)
    # close-ups: one large thing on one stuff, so that textures are seen in detail too
    close_ups = WorldScenes(
        image_size=args.image_size, things_per_image=(1, 1), stuff_per_image=(1, 1), radius_range=(0.3, 0.45)
    )
    train_worlds = [world] * (args.close_up_every - 1) + [close_ups] if args.close_up_every else [world]
    train_ids = world.seen_label_ids if args.unseen == "never" else None
    tokenizer = world_clip_tokenizer(world_v2_words())
    num_items = (
        args.max_train_steps * args.gradient_accumulation_steps * args.batch_size * accelerator.num_processes
    )
    train_dataset = SceneCaptions(train_worlds, num_items, CLIP_PRETRAINING_SEED + args.seed, train_ids)
    train_loader = DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        collate_fn=WorldCollator(tokenizer, scene_descriptions),
        num_workers=args.num_workers,
    )

    # model: a tiny CLIP inside the module that computes the pretraining losses
    config = world_clip_config(
        tokenizer,
        image_size=args.image_size,
        patch_size=args.patch_size,
        vision_hidden_size=args.vision_hidden_size,
        vision_layers=args.vision_layers,
        text_hidden_size=args.text_hidden_size,
        text_layers=args.text_layers,
        projection_dim=args.projection_dim,
    )
    model = WorldCLIPPretrainer(CLIPModel(config), patch_loss_weight=args.patch_loss_weight)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        args.warmup_steps * accelerator.num_processes,
        args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    # resume: the state of a step_N folder, then the batches after step N
    completed_steps = 0
    batches = train_loader
    if args.resume_from_checkpoint is not None:
        accelerator.load_state(str(args.resume_from_checkpoint))
        completed_steps = int(args.resume_from_checkpoint.name.removeprefix("step_"))
        batches = accelerator.skip_first_batches(
            train_loader, completed_steps * args.gradient_accumulation_steps
        )

    def evaluate() -> dict[str, float]:
        clip = accelerator.unwrap_model(model).clip
        seed = CLIP_PRETRAINING_SEED + 500 + args.seed  # held-out scenes
        return patch_zero_shot_accuracy(clip, tokenizer, world, num_images=args.eval_images, seed=seed)

    accelerator.print(
        f"world: {len(world.class_names)} classes, unseen {[world.class_names[i] for i in world.unseen_label_ids]}; "
        f"CLIP {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; {args.max_train_steps} steps"
    )
    model.train()
    start = time.perf_counter()
    for batch in batches:
        with accelerator.accumulate(model):
            outputs = model(**batch)
            accelerator.backward(outputs["loss"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        completed_steps += 1
        if completed_steps % args.logging_steps == 0:
            scale = accelerator.unwrap_model(model).clip.logit_scale.exp().item()
            accelerator.print(
                f"step {completed_steps}: loss {outputs['loss'].item():.3f} "
                f"(caption {outputs['caption_loss'].item():.3f}, patch {outputs['patch_loss'].item():.3f}), "
                f"scale {scale:.1f}, {time.perf_counter() - start:.0f} s"
            )
        if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
            accelerator.save_state(str(args.output_dir / f"step_{completed_steps}"))
        if (
            args.eval_steps
            and completed_steps % args.eval_steps == 0
            and completed_steps < args.max_train_steps
        ):
            accelerator.print(f"step {completed_steps}: zero-shot {evaluate()}")
        if completed_steps >= args.max_train_steps:
            break
    train_seconds = time.perf_counter() - start

    # zero-shot evaluation on held-out scenes, among all classes
    results = evaluate()
    results = {
        **results,
        "train_seconds": round(train_seconds, 1),
        "steps": completed_steps,
        "seed": args.seed,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        clip = accelerator.unwrap_model(model).clip
        clip.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        (args.output_dir / "zero_shot_results.json").write_text(json.dumps(results, indent=2) + "\n")
    chance = 1 / len(world.class_names)
    accelerator.print(
        f"zero-shot patch accuracy among all {len(world.class_names)} classes (chance {chance:.0%}): "
        + ", ".join(f"{key} {value:.1%}" for key, value in results.items() if key.startswith("patch_"))
        + f"\ntrained {completed_steps} steps in {train_seconds:.0f} s; saved to {args.output_dir}"
    )
    accelerator.wait_for_everyone()
    accelerator.end_training()  # the process group closes before exit (see training/evaluate.py)
    return results


if __name__ == "__main__":
    run_cli(main, "pretrain_clip.py")
