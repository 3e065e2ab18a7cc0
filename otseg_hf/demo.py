"""The README's main job, offline: OTSeg beside its own frozen CLIP in the generated world.

    python -m otseg_hf.demo [--out outputs/demo] [--num-images 4] [--num-eval-images 200]
    python -m otseg_hf.demo --model MODEL_DIR --clip CLIP_DIR --dataset-name DATA_DIR [--split validation]

Loads the OTSeg model shipped with the package (a tiny CLIP pretrained on the world's image-caption pairs,
never a mask, then OTSeg trained inductively on the seen classes with `training/train.py`) and the frozen
CLIP it was built on, used densely (`otseg_hf.baseline`). Prints both metric tables on the world's test
images (a seed nothing trained or tuned on), and writes one contact sheet per demo image (input | ground
truth | OTSeg | frozen CLIP) and an overview of all of them. `python training/reproduce_world.py` rebuilds
the checkpoints from the seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# only what `--help` and usage errors need: torch and transformers are imported after the arguments are parsed
from .cli.choices import WORLD_CLIP_DIR, WORLD_OTSEG_DIR


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=WORLD_OTSEG_DIR, help="model folder (default: shipped)")
    parser.add_argument("--clip", type=Path, default=WORLD_CLIP_DIR,
                        help="CLIP folder of the frozen baseline (default: the shipped world CLIP)")  # fmt: skip
    parser.add_argument("--dataset-name", help="save_to_disk folder or Hub id (default: the generated world)")
    parser.add_argument("--split", default="test", help="split of --dataset-name for the table and sheets")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="folder for the PNGs")
    parser.add_argument("--num-images", type=int, default=4, help="contact sheets to write")
    parser.add_argument("--num-eval-images", type=int, default=200,
                        help="test images scored live (the recorded tables of the shipped models use 200)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.num_images < 0 or args.num_eval_images < 1:
        parser.error("--num-images must be >= 0 and --num-eval-images >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from .world.demo import DemoError, run

    try:
        return run(args)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
