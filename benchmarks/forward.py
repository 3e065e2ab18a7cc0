"""Speed and memory of OTSeg's eval forward and training step, printed as tables.

    python benchmarks/forward.py                          # default config, CPU, float32
    python benchmarks/forward.py --smoke                  # tiny config: checks that the script works
    python benchmarks/forward.py --device cuda --dtype bfloat16
    python benchmarks/forward.py --classes 171 --repeats 5 --threads 2

The model is the default `OTSegConfig()` (CLIP ViT-B/16 at 512x512) made fully supervised
(`seen_label_ids=None`), so every one of the K classes is computed. Weights are random: the
timings do not depend on them, except through the number of Sinkhorn iterations, which is
printed. Class text comes as random normalised `text_embeds` (K, N, D), N = 6 prompts for 20
classes (VOC) and 8 otherwise (Context, COCO-Stuff).

Tables:
1. eval forward (batch 1): vision encoder, head, the head's Sinkhorn calls, the whole forward;
2. training step (batch 2): the whole step, then its parts (encoder forward and backward, and the
   head trained alone on detached features: forward, loss, backward);
3. peak memory of one training step and of one head-alone step: on CPU the growth of the peak
   resident set (Linux VmHWM) over the RSS after building the model, in a fresh child process
   per measurement; on CUDA the growth of `torch.cuda.max_memory_allocated`.

Times are medians over `--repeats` runs after `--warmup` runs. Reference numbers (a 2-core CPU,
default config, float32) are printed beside ours; they do not apply to `--smoke` or other machines.
See benchmarks/README.md for the columns and where results are recorded.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import otseg_hf
from otseg_hf import OTSegConfig, OTSegForSemanticSegmentation
from otseg_hf.model import modeling_base
from otseg_hf.model.configuration_base import SINKHORN_GRAD_MODES
from otseg_hf.model.loss_targets import zero_shot_loss
from otseg_hf.testing import tiny_clip_config

EVAL_BATCH = 1
TRAIN_BATCH = 2
IGNORE_FRACTION = 0.1  # share of label pixels set to the ignore index

# Reference numbers for a 2-core CPU, default config, float32 (seconds and bytes), by class count;
# a plain number holds for every class count.
REFERENCE = {
    "eval_encoder": 1.40,
    "eval_head": {20: 0.10, 171: 1.04},
    "train_head_step": {171: 22.7},
    "train_head_step_peak": {171: 10.2 * 2**30},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ------------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------------
def class_counts(text: str) -> list[int]:
    counts = [int(c) for c in text.split(",") if c.strip()]
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"class counts must be positive integers, got {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per measurement; the median is shown (default 3; 1 with --smoke)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)"
    )
    parser.add_argument(
        "--classes",
        type=class_counts,
        default=[20, 59, 171],
        help="class counts of the eval table (default 20,59,171)",
    )
    parser.add_argument(
        "--train-classes",
        type=class_counts,
        default=[20, 171],
        help="class counts of the training and memory tables (default 20,171)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model and input dtype")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; 1 with --smoke, whose tensors are too small to share)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=["eval", "train", "memory"],
        default=[],
        help="leave out a table (repeatable)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny CLIP (otseg_hf.testing.tiny_clip_config) at 64x64, 1 thread, 1 repeat: checks the script works",
    )
    parser.add_argument(
        "--sinkhorn-tol",
        type=float,
        default=None,
        help="override config.sinkhorn_tol (default 1e-6); 0 runs all sinkhorn_max_iter (100) iterations: "
        "the worst case, whereas random weights converge in a few",
    )
    parser.add_argument(
        "--sinkhorn-grad-mode",
        choices=SINKHORN_GRAD_MODES,
        default="recompute",
        help="config.sinkhorn_grad_mode: how training backpropagates through the Sinkhorn iterations",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    if args.threads is None and args.smoke:
        args.threads = 1
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    return args


# ------------------------------------------------------------------------------------------------
# model and inputs
# ------------------------------------------------------------------------------------------------
def build_config(args: argparse.Namespace) -> OTSegConfig:
    """The default config, fully supervised; with `--smoke`, a tiny CLIP at 64x64 (8x8 grid)."""
    if args.smoke:
        config = OTSegConfig(
            clip_config=tiny_clip_config(image_size=64, patch_size=8),
            seen_label_ids=None,
            num_visual_prompts=3,
            visual_prompt_depth=2,
            decoder_ffn_dim=64,
            inference_window_size=64,
            inference_window_stride=48,
            sinkhorn_grad_mode=args.sinkhorn_grad_mode,
        )
    else:
        config = OTSegConfig(seen_label_ids=None, sinkhorn_grad_mode=args.sinkhorn_grad_mode)
    if args.sinkhorn_tol is not None:
        config.sinkhorn_tol = args.sinkhorn_tol  # 0: never stop early
    return config


def build_model(args: argparse.Namespace) -> OTSegForSemanticSegmentation:
    torch.manual_seed(0)
    model = OTSegForSemanticSegmentation(build_config(args))
    return model.to(device=args.device, dtype=DTYPES[args.dtype])


def num_prompts_for(num_classes: int) -> int:
    """N of the recipes: VOC (20 classes) uses 6 templates, Context and COCO-Stuff 8."""
    return 6 if num_classes == 20 else 8


@dataclass
class Inputs:
    pixel_values: torch.Tensor  # (B, 3, H, W)
    text_embeds: torch.Tensor  # (K, N, D), L2-normalised
    labels: torch.Tensor  # (B, H, W), class ids and the ignore index


def make_inputs(model: OTSegForSemanticSegmentation, batch: int, num_classes: int) -> Inputs:
    config = model.config
    size = config.clip_config.vision_config.image_size
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(num_classes)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    text = torch.randn(num_classes, num_prompts_for(num_classes), config.projection_dim, generator=generator)
    text = torch.nn.functional.normalize(text, dim=-1)
    labels = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < IGNORE_FRACTION] = config.ignore_index
    return Inputs(
        pixel_values.to(param.device, param.dtype),
        text.to(param.device, param.dtype),
        labels.to(param.device),
    )


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device):
    """Run `fn()`; return its result and its wall time in seconds (device work included)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def repeat(measure: Callable[[], dict[str, float]], warmup: int, repeats: int) -> dict[str, float]:
    """Median of each timing `measure()` returns, over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        measure()
    return medians([measure() for _ in range(repeats)])


class SinkhornTimer:
    """Times every `log_sinkhorn` call of the head by swapping the function `modeling_base` calls.

    `seconds` and `iterations` (one entry per call) accumulate until `reset()`.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.seconds = 0.0
        self.iterations: list[int] = []

    def __enter__(self) -> SinkhornTimer:
        self._original = modeling_base.log_sinkhorn

        def timed_log_sinkhorn(cost, *args, **kwargs):
            wants_info = kwargs.pop("return_info", False)
            result, seconds = timed(
                lambda: self._original(cost, *args, return_info=True, **kwargs), self.device
            )
            self.seconds += seconds
            self.iterations.append(result.n_iter)
            return result if wants_info else result.plan

        modeling_base.log_sinkhorn = timed_log_sinkhorn
        return self

    def __exit__(self, *exc) -> None:
        modeling_base.log_sinkhorn = self._original


# ------------------------------------------------------------------------------------------------
# what is measured
# ------------------------------------------------------------------------------------------------
def head_loss(
    model: OTSegForSemanticSegmentation,
    decoder_logits: torch.Tensor,
    score_logits: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """The model's loss (fully supervised): focal + dice of both paths. (B, K, M) logits, (B, H, W) labels."""
    config = model.config
    grid = config.clip_config.vision_config.image_size // config.clip_config.vision_config.patch_size
    maps = [(1.0, logits.unflatten(-1, (grid, grid))) for logits in (decoder_logits, score_logits)]
    return zero_shot_loss(maps, labels, labels.shape[-2:], config)


def train_step(model: OTSegForSemanticSegmentation, inputs: Inputs) -> None:
    """One training step as a training script runs it: forward with labels, backward."""
    model.zero_grad(set_to_none=True)
    loss = model(inputs.pixel_values, labels=inputs.labels, text_embeds=inputs.text_embeds).loss
    loss.backward()


def detached_features(
    model: OTSegForSemanticSegmentation, inputs: Inputs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs (B, D), (B, M, D), detached, for training the head alone."""
    with torch.no_grad():
        global_embeds, pixel_embeds, _ = model.forward_features(inputs.pixel_values)
    return global_embeds, pixel_embeds


def head_step(
    model: OTSegForSemanticSegmentation,
    inputs: Inputs,
    features: tuple[torch.Tensor, torch.Tensor],
    sinkhorn: SinkhornTimer | None = None,
) -> dict[str, float]:
    """Training step of the head alone on features that require grad: forward, loss, backward."""
    device = inputs.pixel_values.device
    model.zero_grad(set_to_none=True)
    global_embeds, pixel_embeds = (f.detach().requires_grad_(True) for f in features)
    if sinkhorn is not None:
        sinkhorn.reset()
    (decoder, score), forward_s = timed(
        lambda: model.head(global_embeds, pixel_embeds, inputs.text_embeds), device
    )
    loss, loss_s = timed(lambda: head_loss(model, decoder, score, inputs.labels), device)
    _, backward_s = timed(loss.backward, device)
    times = {"head_fwd": forward_s, "loss": loss_s, "head_bwd": backward_s}
    times["head_step"] = forward_s + loss_s + backward_s
    if sinkhorn is not None:
        times["sinkhorn_fwd"] = sinkhorn.seconds
    return times


def bench_eval(model: OTSegForSemanticSegmentation, args: argparse.Namespace, num_classes: int) -> dict:
    """Eval forward, batch 1: encoder, head, Sinkhorn share of the head, whole forward."""
    model.eval()
    inputs = make_inputs(model, EVAL_BATCH, num_classes)
    device = inputs.pixel_values.device
    sinkhorn = SinkhornTimer(device)

    @torch.no_grad()
    def measure() -> dict[str, float]:
        (global_embeds, pixel_embeds, _), encoder_s = timed(
            lambda: model.forward_features(inputs.pixel_values), device
        )
        sinkhorn.reset()
        with sinkhorn:
            _, head_s = timed(lambda: model.head(global_embeds, pixel_embeds, inputs.text_embeds), device)
        _, total_s = timed(lambda: model(inputs.pixel_values, text_embeds=inputs.text_embeds), device)
        return {"encoder": encoder_s, "head": head_s, "sinkhorn": sinkhorn.seconds, "total": total_s}

    times = repeat(measure, args.warmup, args.repeats)
    num_pixels = inputs.pixel_values.shape[-1] ** 2 // model.config.clip_config.vision_config.patch_size**2
    return {
        "classes": num_classes,
        "prompts": inputs.text_embeds.shape[1],
        "sinkhorn_shape": (EVAL_BATCH * num_classes, num_pixels, inputs.text_embeds.shape[1]),
        "sinkhorn_iterations": list(sinkhorn.iterations),
        **times,
    }


def bench_train(model: OTSegForSemanticSegmentation, args: argparse.Namespace, num_classes: int) -> dict:
    """Training step, batch 2: the whole step, then encoder forward/backward and the head-alone step."""
    model.train()
    inputs = make_inputs(model, TRAIN_BATCH, num_classes)
    device = inputs.pixel_values.device
    sinkhorn = SinkhornTimer(device)

    def measure() -> dict[str, float]:
        _, step_s = timed(lambda: train_step(model, inputs), device)
        # encoder forward and backward through the prompts, with random cotangents for its outputs
        model.zero_grad(set_to_none=True)
        (global_embeds, pixel_embeds, _), encoder_fwd_s = timed(
            lambda: model.forward_features(inputs.pixel_values), device
        )
        cotangents = (torch.randn_like(global_embeds), torch.randn_like(pixel_embeds))
        _, encoder_bwd_s = timed(
            lambda: torch.autograd.backward((global_embeds, pixel_embeds), cotangents), device
        )
        features = (global_embeds.detach(), pixel_embeds.detach())
        with sinkhorn:
            head = head_step(model, inputs, features, sinkhorn)
        return {"step": step_s, "encoder_fwd": encoder_fwd_s, "encoder_bwd": encoder_bwd_s, **head}

    times = repeat(measure, args.warmup, args.repeats)
    model.zero_grad(set_to_none=True)
    return {"classes": num_classes, "sinkhorn_iterations": list(sinkhorn.iterations), **times}


# ------------------------------------------------------------------------------------------------
# peak memory
# ------------------------------------------------------------------------------------------------
def run_for_memory(model: OTSegForSemanticSegmentation, inputs: Inputs, what: str) -> Callable[[], None]:
    """The work whose peak memory is measured: a whole training step or a head-alone step."""
    model.train()
    if what == "train_step":
        return lambda: train_step(model, inputs)
    features = detached_features(model, inputs)
    return lambda: head_step(model, inputs, features)


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure_peak_rss(args: argparse.Namespace, what: str, num_classes: int, results) -> None:
    """In a fresh process: peak RSS growth of one step over the RSS after building model and inputs."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    run = run_for_memory(model, make_inputs(model, TRAIN_BATCH, num_classes), what)
    gc.collect()
    baseline = current_rss()
    exact = reset_peak_rss()  # otherwise the peak includes building the model
    run()
    results.put({"peak_growth": peak_rss() - baseline, "exact": exact})


def peak_memory(args: argparse.Namespace, what: str, num_classes: int, model=None) -> dict:
    """Peak memory growth (bytes) of `what` ("train_step" or "head_step") with `num_classes` classes.

    CUDA: `max_memory_allocated` growth with `model`, in this process. CPU: peak RSS growth in a child
    process, forked before this process runs any torch work (a fork after OpenMP has run is unsafe).
    """
    if args.device == "cuda":
        run = run_for_memory(model, make_inputs(model, TRAIN_BATCH, num_classes), what)
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        try:
            run()
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            return {"peak_growth": None, "error": "out of memory"}
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
        model.zero_grad(set_to_none=True)
        return {"peak_growth": peak, "exact": True}
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    results = context.SimpleQueue()
    worker = context.Process(target=measure_peak_rss, args=(args, what, num_classes, results))
    worker.start()
    worker.join()
    if worker.exitcode != 0:
        reason = (
            "killed (out of memory?)" if worker.exitcode == -9 else f"failed (exit code {worker.exitcode})"
        )
        return {"peak_growth": None, "error": reason}
    return results.get()


def measure_memory(args: argparse.Namespace, model=None) -> dict[int, dict]:
    """Peak memory of a training step and of a head-alone step for each of `--train-classes`."""
    memory = {}
    for num_classes in args.train_classes:
        memory[num_classes] = {}
        for what in ("train_step", "head_step"):
            progress(f"peak memory: {what}, K={num_classes}")
            memory[num_classes][what] = peak_memory(args, what, num_classes, model)
    return memory


# ------------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------------
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def fmt_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def print_table(title: str, headers: list[str], rows: list[list[str]], notes: Sequence[str] = ()) -> None:
    """A markdown table: paste it into benchmarks/README.md as it is."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.rjust(w) for cell, w in zip(row, widths)) + " |")
    for note in notes:
        print(f"\n{note}")
    sys.stdout.flush()


def print_header(args: argparse.Namespace, config: OTSegConfig) -> None:
    vision = config.clip_config.vision_config
    grid = vision.image_size // vision.patch_size
    with torch.device("meta"):  # parameter counts without allocating or initialising anything
        parameters = list(OTSegForSemanticSegmentation(config).parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print("## OTSeg forward benchmark" + (" (--smoke: tiny config, not comparable)" if args.smoke else ""))
    print(
        f"\notseg_hf {otseg_hf.__version__}, torch {torch.__version__}, device {args.device}, dtype {args.dtype}, "
        f"threads {torch.get_num_threads()} of {os.cpu_count()} CPUs, load average {load}"
    )
    print(
        f"model: {vision.image_size}x{vision.image_size} images, patch {vision.patch_size} (M = {grid * grid} pixels), "
        f"{vision.num_hidden_layers} vision layers of width {vision.hidden_size}, D = {config.projection_dim}, "
        f"{config.num_visual_prompts} visual prompts, {config.num_decoder_layers} decoder layers, "
        f"Sinkhorn max {config.sinkhorn_max_iter} iterations, tol {config.sinkhorn_tol:g}, backward {config.sinkhorn_grad_mode}; {total / 1e6:.1f}M parameters, "
        f"{trainable / 1e6:.2f}M trainable; random weights"
    )
    print(f"times: median of {args.repeats} timed run(s) after {args.warmup} warm-up run(s)", flush=True)


def progress(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reference(key: str, num_classes: int, fmt: Callable, applies: bool) -> str:
    """The reference number for `num_classes` classes, formatted; "-" where there is none."""
    value = REFERENCE[key]
    value = value.get(num_classes) if isinstance(value, dict) else value
    return fmt(value) if applies and value is not None else "-"


def print_eval(rows: list[dict], ref: bool) -> None:
    table = []
    for r in rows:
        k = r["classes"]
        table.append(
            [
                str(k),
                str(r["prompts"]),
                fmt_time(r["encoder"]),
                reference("eval_encoder", k, fmt_time, ref),
                fmt_time(r["head"]),
                reference("eval_head", k, fmt_time, ref),
                fmt_time(r["sinkhorn"]),
                f"{r['sinkhorn'] / r['head']:.0%}",
                "/".join(map(str, r["sinkhorn_iterations"])),
                "x".join(map(str, r["sinkhorn_shape"])),
                fmt_time(r["total"]),
            ]
        )
    headers = [
        "K",
        "N",
        "encoder",
        "ref",
        "head",
        "ref",
        "sinkhorn",
        "share",
        "iterations",
        "cost (BK,M,N)",
        "total",
    ]
    print_table(f"Eval forward, batch {EVAL_BATCH}, torch.no_grad()", headers, table)


def print_train(rows: list[dict], ref: bool) -> None:
    table = []
    for r in rows:
        k = r["classes"]
        table.append(
            [
                str(k),
                fmt_time(r["step"]),
                fmt_time(r["encoder_fwd"]),
                fmt_time(r["encoder_bwd"]),
                fmt_time(r["head_fwd"]),
                fmt_time(r["sinkhorn_fwd"]),
                fmt_time(r["loss"]),
                fmt_time(r["head_bwd"]),
                fmt_time(r["head_step"]),
                reference("train_head_step", k, fmt_time, ref),
                "/".join(map(str, r["sinkhorn_iterations"])),
            ]
        )
    headers = [
        "K",
        "step",
        "enc fwd",
        "enc bwd",
        "head fwd",
        "sinkhorn",
        "loss",
        "head bwd",
        "head step",
        "ref",
        "iterations",
    ]
    print_table(
        f"Training step, batch {TRAIN_BATCH}, fully supervised (all K classes)",
        headers,
        table,
        ["`step` is the whole step (model forward with labels + backward); the other columns are its parts, "
         "measured apart; `head step` = head fwd + loss + head bwd on detached features."],
    )  # fmt: skip


def print_memory(rows: list[dict], ref: bool, device: str) -> None:
    table, notes = [], []
    for r in rows:
        k = r["classes"]
        cells = [str(k)]
        for what in ("train_step", "head_step"):
            result = r[what]
            cells.append(fmt_bytes(result.get("peak_growth")))
            if "error" in result:
                notes.append(f"K={k} {what}: {result['error']}")
            elif not result.get("exact", True):
                notes.append(f"K={k} {what}: peak RSS could not be reset; it includes building the model")
        cells.append(reference("train_head_step_peak", k, fmt_bytes, ref))
        table.append(cells)
    how = (
        "torch.cuda.max_memory_allocated growth"
        if device == "cuda"
        else "peak RSS growth over the model's, one fresh process per cell"
    )
    headers = ["K", "step peak", "head step peak", "ref (head step)"]
    print_table(f"Peak memory of one training step, batch {TRAIN_BATCH} ({how})", headers, table, notes)


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header(args, build_config(args))
    # the reference numbers are for the full-size float32 model on a 2-core CPU
    ref = not args.smoke and args.device == "cpu" and args.dtype == "float32"
    results: dict = {"args": vars(args)}

    # CPU peak memory first: its child processes must be forked before this process runs torch work,
    # and a step that runs out of memory then kills a child, not the benchmark
    memory = {}
    if "memory" not in args.skip and args.device == "cpu":
        memory = measure_memory(args)
    model = build_model(args)
    if "memory" not in args.skip and args.device == "cuda":
        memory = measure_memory(args, model)

    if "eval" not in args.skip:
        results["eval"] = []
        for k in args.classes:
            progress(f"eval forward, K={k}")
            results["eval"].append(bench_eval(model, args, k))
        print_eval(results["eval"], ref)
    if "train" not in args.skip:
        results["train"] = []
        for k in args.train_classes:
            if any("error" in m for m in memory.get(k, {}).values()):
                print(f"\n(training step with K={k} not timed: its memory measurement failed)")
                continue
            progress(f"training step, K={k}")
            results["train"].append(bench_train(model, args, k))
        if results["train"]:
            print_train(results["train"], ref)
    if memory:
        results["memory"] = [{"classes": k, **m} for k, m in memory.items()]
        print_memory(results["memory"], ref, args.device)
    if not ref:
        print("\n(reference columns shown only for the full-size float32 model on CPU)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
