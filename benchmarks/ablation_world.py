"""Ablations of OTSeg on the offline zero-shot world, printed as a markdown table.

    python benchmarks/ablation_world.py                       # 3 seeds, the recipe's steps (CPU, ~1 h)
    python benchmarks/ablation_world.py --seeds 0 --max-steps 20 --num-train-images 64   # smoke run

Every variant trains `otseg-world-inductive` (the shipped tiny world CLIP, seen classes only) with
`training/train.py` under the same seeds and is evaluated on all 20 classes of the world's validation
images: mIoU(S), mIoU(U), hIoU in percent, mean ± standard deviation over the seeds that finished (a run
whose loss becomes NaN/inf stops and is counted as diverged).

Variants (config overrides, see `OTSegConfig`):
- OTSeg: the default, multi-prompt Sinkhorn attention in the decoder and in the MPS path;
- softmax attention: `matching="softmax"` (cross-attention without transport, both paths);
- 1 prompt: one prompt template instead of the recipe's N;
- MPS path only: `ensemble_weight=0` (both paths train, inference uses the score map only);
- decoder path only: `ensemble_weight=1`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "OTSeg (Sinkhorn, N prompts, ensemble)": [],
    "softmax attention instead of Sinkhorn": ["matching=softmax"],
    "1 prompt instead of N": ['prompt_templates=["a photo of a {}."]'],
    "MPS path only": ["ensemble_weight=0"],
    "decoder path only": ["ensemble_weight=1"],
}
METRICS = (("seen_mean_iou", "mIoU(S)"), ("unseen_mean_iou", "mIoU(U)"), ("harmonic_mean_iou", "hIoU"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--recipe", default="otseg-world-inductive", help="the recipe every variant trains")
    parser.add_argument("--max-steps", type=int, help="override the recipe's steps")
    parser.add_argument("--num-train-images", type=int, default=1024, help="generated training images")
    parser.add_argument("--num-eval-images", type=int, default=200, help="generated evaluation images")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), help="a subset of the variants")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    return parser.parse_args(argv)


def train_and_evaluate(args, overrides: list[str], seed: int, out: Path) -> dict:
    command = [
        sys.executable, str(ROOT / "training" / "train.py"), "--recipe", args.recipe, "--seed", str(seed),
        "--output-dir", str(out), "--checkpointing-steps", "0", "--no-save-model",
        "--num-train-images", str(args.num_train_images), "--num-eval-images", str(args.num_eval_images),
    ]  # fmt: skip
    if args.max_steps:
        command += ["--max-steps", str(args.max_steps)]
    for override in overrides:
        command += ["--model-override", override]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if result.returncode != 0 and "FloatingPointError" in result.stderr:
        return None  # the loss went to NaN / inf: the run diverged
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return json.loads((out / "eval_results.json").read_text())


def _number(value) -> float:
    return float("nan") if value is None else float(value)  # the JSON writes NaN as null


def cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:5.1f} ± {spread:4.1f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    names = args.variants or list(VARIANTS)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            runs[name] = []
            for seed in args.seeds:
                out = Path(tmp) / f"{len(runs)}-{seed}"
                results = train_and_evaluate(args, VARIANTS[name], seed, out)
                if results is None:
                    print(f"{name}, seed {seed}: diverged (non-finite loss)", file=sys.stderr)
                    runs[name].append(None)
                    continue
                runs[name].append({key: _number(results[key]) for key, _ in METRICS})
                print(f"{name}, seed {seed}: " + ", ".join(f"{label} {100 * results[key]:.1f}" for key, label in METRICS),
                      file=sys.stderr)  # fmt: skip
    print(f"\n{args.recipe}, seeds {args.seeds}, mean ± std (percent)\n")
    print("| variant | " + " | ".join(label for _, label in METRICS) + " | diverged |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    for name in names:
        finished = [run for run in runs[name] if run is not None]
        values = [cell([run[key] for run in finished]) if finished else "-" for key, _ in METRICS]
        diverged = f"{len(runs[name]) - len(finished)} of {len(runs[name])}"
        print(f"| {name} | " + " | ".join(values) + f" | {diverged} |")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "seeds": args.seeds, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
