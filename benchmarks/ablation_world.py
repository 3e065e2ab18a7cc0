"""The world's table: OTSeg against its frozen CLIP, softmax attention, ZegOT, transductive and full supervision.

    python benchmarks/ablation_world.py --json outputs/world_table.json      # 3 seeds (CPU, see the README)
    python benchmarks/ablation_world.py --seeds 0 --max-steps 20 --num-train-images 32 --num-eval-images 8

Every trained row runs `training/train.py` with a world recipe (the shipped world CLIP, `otseg_hf/world/`)
under each seed, then is scored on the world's **test** images (seed 2: nothing trains or tunes on them)
over all 26 classes: mIoU(S), mIoU(U), hIoU, mIoU in percent, mean ± standard deviation over the seeds.
The seen-class penalty of inductive rows is reported twice: the reference's 0.1 and the world recipe's
own (`RECIPES["otseg-world-inductive"]`), which was chosen on the **validation** images (seed 1, see
`--penalties`: this script prints the validation hIoU of each candidate so the choice can be checked).

Rows:
- patch-grid oracle: each 8x8 patch's true class fractions, upsampled bilinearly (the grid's ceiling);
- frozen CLIP: `otseg_hf.baseline.FrozenCLIPSegmenter` (no training; one row, no seeds);
- softmax cross-attention: OTSeg with `matching="softmax"` (ZegCLIP-like), inductive;
- ZegOT inductive (`zegot-world-inductive`);
- OTSeg inductive: the ensemble, the MPS (score map) path alone, the decoder path alone (one training,
  `ensemble_weight` 0 / 1 at evaluation);
- OTSeg transductive (`otseg-world-transductive`, from the inductive run of the same seed);
- OTSeg fully supervised (`otseg-world-fully-supervised`, all classes; no penalty).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter  # noqa: E402
from otseg_hf.evaluation.evaluate import EvaluationSet  # noqa: E402
from otseg_hf.evaluation.metrics import compute_metrics, confusion_matrix  # noqa: E402
from otseg_hf.hub.folders import default_image_processor  # noqa: E402
from otseg_hf.model.sliding_window import sliding_window_inference  # noqa: E402
from otseg_hf.recipes import RECIPES  # noqa: E402
from otseg_hf.world.splits import GENERATED_SPLIT_SEEDS, WORLD, WORLD_CLIP_DIR, generated_dataset  # noqa: E402

METRICS = (("seen_mean_iou", "mIoU(S)"), ("unseen_mean_iou", "mIoU(U)"), ("harmonic_mean_iou", "hIoU"),
           ("mean_iou", "mIoU"))  # fmt: skip
REFERENCE_PENALTY = 0.1
# training runs: name -> (recipe, model overrides, starts from, other train.py flags)
RUNS = {
    "otseg": ("otseg-world-inductive", [], None, []),
    # the previous world recipe: a head that starts as the frozen CLIP's dense matcher, 3e-5, 100 steps
    "otseg_clip_init": (
        "otseg-world-inductive", [], None, ["--head-init", "clip", "--learning-rate", "3e-5", "--max-steps", "100"]
    ),
    "softmax": ("otseg-world-inductive", ["matching=softmax"], None, []),
    "zegot": ("zegot-world-inductive", [], None, []),
    "transductive": ("otseg-world-transductive", [], "otseg", []),
    "fully_supervised": ("otseg-world-fully-supervised", [], None, []),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--clip", type=Path, default=WORLD_CLIP_DIR, help="the world CLIP every row starts from")
    parser.add_argument("--max-steps", type=int, help="override the recipes' steps (transductive: half)")
    parser.add_argument("--num-train-images", type=int, default=2048, help="generated training images")
    parser.add_argument("--num-eval-images", type=int, default=200, help="validation and test images")
    parser.add_argument("--penalties", type=float, nargs="+", default=[-0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2],
                        help="seen-class penalties scored on the validation images")  # fmt: skip
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="a subset of the runs")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once (1 thread each)")
    parser.add_argument("--work-dir", type=Path, help="keep the trained models here (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="score the models already in --work-dir (a missing one counts as diverged)")  # fmt: skip
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------
def train(args, name: str, seed: int, work: Path) -> Path | None:
    recipe, overrides, parent, flags = RUNS[name]
    out = work / f"{name}-{seed}"
    command = [
        sys.executable, str(ROOT / "training" / "train.py"), "--recipe", recipe, "--seed", str(seed),
        "--output-dir", str(out), "--checkpointing-steps", "0", "--eval-split", "none",
        "--num-train-images", str(args.num_train_images), "--per-device-batch-size", "16",
    ]  # fmt: skip
    if parent is None:
        command += ["--clip", str(args.clip)]
    elif not (work / f"{parent}-{seed}" / "config.json").exists():
        print(f"{name} seed {seed}: skipped, its {parent} run diverged", file=sys.stderr, flush=True)
        return None
    else:
        command += ["--init-from", str(work / f"{parent}-{seed}")]
    command += flags  # before --max-steps: a smoke run's steps win
    if args.max_steps:
        steps = args.max_steps // 2 if name == "transductive" else args.max_steps
        command += ["--max-steps", str(max(steps, 1))]
    for override in overrides:
        command += ["--model-override", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    # train.py stops at a non-finite loss with one line ("the loss is nan at step N"; the traceback with --debug)
    if result.returncode != 0 and re.search(r"FloatingPointError|the loss is (nan|inf|-inf) at step", result.stderr):
        print(f"{name} seed {seed}: diverged (non-finite loss)", file=sys.stderr, flush=True)
        return None
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    print(f"trained {name} seed {seed} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------
def split_rows(split: str, count: int):
    return generated_dataset(WORLD.name, count, seed=GENERATED_SPLIT_SEEDS[split])


@torch.no_grad()
def score(segmenter, rows, penalties=(0.0,), seen_label_ids=None) -> dict[float, dict]:
    """Metrics of `segmenter` on `rows` for each seen-class penalty (one forward pass per image)."""
    config = segmenter.config
    processor = default_image_processor(config)
    data = EvaluationSet(rows, processor, num_classes=len(config.class_names))
    num_classes = len(config.class_names)
    matrices = {p: torch.zeros(num_classes, num_classes, dtype=torch.long) for p in penalties}
    segmenter.eval()
    for pixel_values, label in data:
        outputs = sliding_window_inference(segmenter, pixel_values[None])
        for penalty in penalties:
            prediction = processor.post_process_semantic_segmentation(
                outputs, target_sizes=[tuple(label.shape)], seen_label_ids=seen_label_ids,
                seen_class_penalty=penalty,
            )[0]  # fmt: skip
            matrices[penalty] += confusion_matrix(prediction, label, num_classes, config.ignore_index)
    return {p: compute_metrics(m, WORLD.unseen_label_ids) for p, m in matrices.items()}


def oracle(rows, patch: int = 8) -> dict:
    """Each patch's true class fractions, upsampled bilinearly to the image, argmax."""
    num_classes = len(WORLD.class_names)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for row in rows:
        label = torch.from_numpy(np.asarray(row["label"]).astype(np.int64))
        onehot = F.one_hot(label, num_classes).permute(2, 0, 1).float()[None]
        fractions = F.avg_pool2d(onehot, patch)
        up = F.interpolate(fractions, size=label.shape, mode="bilinear", align_corners=False)
        matrix += confusion_matrix(up[0].argmax(0), label, num_classes)
    return compute_metrics(matrix, WORLD.unseen_label_ids)


def load(path: Path, **changes):
    from transformers import AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(path).eval()
    for key, value in changes.items():
        setattr(model.config, key, value)
    return model


def summary(result: dict) -> dict:
    return {key: float(result[key]) for key, _ in METRICS} | {
        "per_category_iou": [None if v != v else float(v) for v in result["per_category_iou"]]
    }


def evaluate_run(args, name: str, path: Path, val_rows, test_rows, recipe_penalty: float) -> dict:
    """The rows of one trained model: {row name: test metrics}, and the validation penalty scan."""
    model = load(path)
    seen = model.config.seen_label_ids if model.config.setting == "inductive" else None
    rows, scan = {}, {}
    if seen is None:
        rows[name] = summary(score(model, test_rows)[0.0])
        return {"rows": rows, "validation": scan}
    penalties = sorted({*args.penalties, REFERENCE_PENALTY, recipe_penalty})
    scan = {str(p): float(m["harmonic_mean_iou"]) for p, m in score(model, val_rows, penalties, seen).items()}
    test = score(model, test_rows, [REFERENCE_PENALTY, recipe_penalty], seen)
    rows[f"{name} (penalty {REFERENCE_PENALTY})"] = summary(test[REFERENCE_PENALTY])
    rows[f"{name} (penalty {recipe_penalty})"] = summary(test[recipe_penalty])
    if name == "otseg":
        for weight, path_name in ((0.0, "MPS path only"), (1.0, "decoder path only")):
            variant = load(path, ensemble_weight=weight)
            rows[f"otseg {path_name} (penalty {recipe_penalty})"] = summary(
                score(variant, test_rows, [recipe_penalty], seen)[recipe_penalty]
            )
    return {"rows": rows, "validation": scan}


def train_all(args, work: Path, first: list[str], later: list[str]) -> dict:
    """Train every (run, seed), `args.jobs` at a time; the runs that start from another one come last."""
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = {(n, s): pool.submit(train, args, n, s, work) for s in args.seeds for n in first}
        for job in list(jobs.values()):
            job.result()  # the inductive runs exist before the transductive ones start from them
        jobs.update({(n, s): pool.submit(train, args, n, s, work) for s in args.seeds for n in later})
        return {key: job.result() for key, job in jobs.items()}


def cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    val_rows = split_rows("validation", args.num_eval_images)
    test_rows = split_rows("test", args.num_eval_images)
    recipe_penalty = RECIPES["otseg-world-inductive"].model_overrides.get("seen_class_penalty", REFERENCE_PENALTY)
    zegot_penalty = RECIPES["zegot-world-inductive"].model_overrides.get("seen_class_penalty", recipe_penalty)
    table: dict[str, list[dict]] = {}
    fixed = {"patch-grid oracle": summary(oracle(test_rows))}
    baseline = FrozenCLIPSegmenter.from_pretrained(args.clip, WORLD.class_names, WORLD.prompt_templates,
                                                   WORLD.unseen_label_ids)  # fmt: skip
    fixed["frozen CLIP (baseline)"] = summary(score(baseline, test_rows)[0.0])
    validation = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        first = [n for n in args.runs if RUNS[n][2] is None]
        later = [n for n in args.runs if RUNS[n][2] is not None]
        if args.evaluate_only:
            if args.work_dir is None:
                raise ValueError("--evaluate-only needs --work-dir with the trained models")
            paths = {(n, s): (work / f"{n}-{s}" if (work / f"{n}-{s}" / "config.json").exists() else None)
                     for s in args.seeds for n in first + later}  # fmt: skip
        else:
            paths = train_all(args, work, first, later)
        diverged: dict[str, int] = {}
        for (name, seed), path in sorted(paths.items(), key=lambda kv: (list(RUNS).index(kv[0][0]), kv[0][1])):
            if path is None:
                diverged[name] = diverged.get(name, 0) + 1
                continue
            penalty = zegot_penalty if name == "zegot" else recipe_penalty
            result = evaluate_run(args, name, path, val_rows, test_rows, penalty)
            validation[f"{name}-{seed}"] = result["validation"]
            for row, metrics in result["rows"].items():
                table.setdefault(row, []).append(metrics)
            print(f"{name} seed {seed}: validation hIoU by penalty {result['validation']}", file=sys.stderr)
    print(f"\nworld test images (seed {GENERATED_SPLIT_SEEDS['test']}), {len(test_rows)} images, all "
          f"{len(WORLD.class_names)} classes; trained rows: seeds {args.seeds}, mean ± std (percent)\n")  # fmt: skip
    print("| row | " + " | ".join(label for _, label in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, metrics in fixed.items():
        print(f"| {name} | " + " | ".join(f"{100 * metrics[k]:.1f}" for k, _ in METRICS) + " |")
    for name, runs in table.items():
        print(f"| {name} | " + " | ".join(cell([r[k] for r in runs]) for k, _ in METRICS) + " |")
    if diverged:
        print("\ndiverged (non-finite loss), left out of the means: " + ", ".join(f"{k} {v} of {len(args.seeds)}"
                                                                                for k, v in diverged.items()))  # fmt: skip
    output = {"seeds": args.seeds, "num_eval_images": len(test_rows), "fixed": fixed, "trained": table,
              "validation_hiou_by_penalty": validation, "recipe_penalty": recipe_penalty,
              "diverged": diverged}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return output


if __name__ == "__main__":
    main()
