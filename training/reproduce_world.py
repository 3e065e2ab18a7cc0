"""Rebuild the shipped world checkpoints from the seed: tiny CLIP -> OTSeg inductive -> transductive -> tables.

    python training/reproduce_world.py --output-dir outputs/world            # see the README for times
    python training/reproduce_world.py --output-dir outputs/world --install  # and replace the shipped ones

1. `training/pretrain_clip.py` pretrains the tiny CLIP contrastively on world v2's scene-caption pairs
   -> OUTPUT_DIR/world-clip. Like a web-trained CLIP, it meets every class, unseen ones included, in
   images and captions, never with a mask or a label map;
2. `training/train.py --recipe otseg-world-inductive` trains OTSeg on the seen classes from it
   -> OUTPUT_DIR/world-otseg, evaluated on the world's test images (seed 2, all 26 classes);
3. `training/train.py --recipe otseg-world-transductive` continues it transductively
   -> OUTPUT_DIR/world-otseg-transductive, evaluated the same way;
4. both tables are compared with the shipped `eval_results.json`: mIoU(S), mIoU(U) and hIoU must agree
   within `--tolerance` points (CPU runs with the same thread count repeat bit for bit; other machines
   and torch versions round differently).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otseg_hf.cli.choices import (  # noqa: E402  (light: --help imports neither torch nor transformers)
    PRETRAINED_DIR,
    WORLD_CLIP_DIR,
    WORLD_OTSEG_DIR,
    WORLD_OTSEG_TRANSDUCTIVE_DIR,
)

SEED = 0
PRETRAIN_ARGS = ["--seed", str(SEED), "--threads", "1"]  # pretrain_clip.py's defaults: the shipped CLIP's
TRAIN_ARGS = [
    "--seed", str(SEED), "--checkpointing-steps", "0", "--num-train-images", "2048",
    "--eval-split", "test", "--num-eval-images", "200", "--per-device-batch-size", "16",
]  # fmt: skip
TABLE = (("seen_mean_iou", "mIoU(S)"), ("unseen_mean_iou", "mIoU(U)"), ("harmonic_mean_iou", "hIoU"))
THREADS = "1"  # the shipped checkpoints were trained with one thread per run (the table ran two runs at once)


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": THREADS}
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="where the three checkpoints are written"
    )
    parser.add_argument("--tolerance", type=float, default=2.0, help="allowed difference in points (percent)")
    parser.add_argument("--install", action="store_true", help="copy the results into otseg_hf/world/pretrained")
    parser.add_argument("--skip-clip", action="store_true", help="reuse OUTPUT_DIR/world-clip")
    args = parser.parse_args(argv)
    clip_dir, otseg_dir = args.output_dir / "world-clip", args.output_dir / "world-otseg"
    transductive_dir = args.output_dir / "world-otseg-transductive"

    if not args.skip_clip:
        run([sys.executable, "training/pretrain_clip.py", "--output-dir", str(clip_dir), *PRETRAIN_ARGS])
    write_baseline_results(clip_dir)
    run([sys.executable, "training/train.py", "--recipe", "otseg-world-inductive", *TRAIN_ARGS,
         "--clip", str(clip_dir), "--output-dir", str(otseg_dir)])  # fmt: skip
    run([sys.executable, "training/train.py", "--recipe", "otseg-world-transductive", *TRAIN_ARGS,
         "--init-from", str(otseg_dir), "--output-dir", str(transductive_dir)])  # fmt: skip

    worst = 0.0
    pairs = [(clip_dir / BASELINE_FILE, WORLD_CLIP_DIR / BASELINE_FILE)] + [
        (rebuilt / "eval_results.json", shipped / "eval_results.json")
        for rebuilt, shipped in ((otseg_dir, WORLD_OTSEG_DIR), (transductive_dir, WORLD_OTSEG_TRANSDUCTIVE_DIR))
    ]
    for rebuilt_path, shipped_path in pairs:
        results = json.loads(rebuilt_path.read_text())
        shipped_dir = shipped_path.parent
        if not shipped_path.exists():
            print(f"\n{shipped_dir.name}: nothing shipped to compare with")
            continue
        shipped = json.loads(shipped_path.read_text())
        print(f"\n{shipped_dir.name:28}{'shipped':>10}{'rebuilt':>10}")
        for key, label in TABLE:
            a, b = 100 * (shipped[key] or 0.0), 100 * (results[key] or 0.0)
            worst = max(worst, abs(a - b))
            print(f"{label:28}{a:10.2f}{b:10.2f}")
    verdict = "within" if worst <= args.tolerance else "OUTSIDE"
    print(f"largest difference {worst:.2f} points: {verdict} the tolerance of {args.tolerance}")
    if worst > args.tolerance and not args.install:
        raise SystemExit(1)
    if args.install:
        install(clip_dir, WORLD_CLIP_DIR)
        install(otseg_dir, WORLD_OTSEG_DIR)
        install(transductive_dir, WORLD_OTSEG_TRANSDUCTIVE_DIR)
        print(f"installed into {PRETRAINED_DIR}")


BASELINE_FILE = "dense_baseline_results.json"


def write_baseline_results(clip_dir: Path) -> None:
    """The frozen CLIP's dense baseline on the test images that OTSeg is scored on -> CLIP_DIR/BASELINE_FILE."""
    import torch

    from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter, evaluate_frozen_clip
    from otseg_hf.world.splits import GENERATED_SPLIT_SEEDS, WORLD, generated_dataset

    torch.set_num_threads(1)
    segmenter = FrozenCLIPSegmenter.from_pretrained(clip_dir, WORLD.class_names, WORLD.prompt_templates,
                                                    WORLD.unseen_label_ids)  # fmt: skip
    rows = generated_dataset(WORLD.name, 200, seed=GENERATED_SPLIT_SEEDS["test"])
    metric = evaluate_frozen_clip(segmenter, rows)
    metric.save_json(clip_dir / BASELINE_FILE)
    print(metric.table())


def install(source: Path, target: Path) -> None:
    """Copy a checkpoint folder without training leftovers and without the code copies (the package is
    installed wherever these are used)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix not in (".py", ".jsonl") and path.name != "training_args.json":
            shutil.copy2(path, target / path.name)


if __name__ == "__main__":
    main()
