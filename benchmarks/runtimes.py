"""Eval forward of OTSeg in three runtimes: PyTorch eager, `torch.compile` (inductor, fullgraph) and onnxruntime,
and a training step eager and compiled.

    python benchmarks/runtimes.py                         # default config, CPU, float32, 171 classes
    python benchmarks/runtimes.py --smoke                 # tiny config: checks that the script works
    python benchmarks/runtimes.py --device cuda --dtype bfloat16 --skip onnx --json gpu.json
    python benchmarks/runtimes.py --skip onnx --skip eval --train --train-classes 20   # the training step only

The model and inputs are `forward.py`'s (random weights, batch --batch, K = --classes random normalised text
embeddings). For each runtime: the median time of one forward over --repeats runs, the time of the first call
(tracing, code generation and compilation included: the compile or export cost) and the largest |difference|
of its logits from eager's (and whether the argmax agrees everywhere). Sinkhorn runs to the config's stopping
rule in every runtime (the eager solver as an opaque operator when compiled, a Loop when exported), so the
numbers compare the same work. This is
a measurement, not a test: nothing asserts.

With --train, the training step (batch --train-batch, K = --train-classes, fully supervised, `model.train()`) is
`model(pixel_values, labels=..., text_embeds=...).loss.backward()`, eager and with `torch.compile(model,
fullgraph=True)` (the forward with its loss as one graph, and its backward compiled by AOTAutograd and inductor). Dropout is set to 0 so that both
compute the same function; the table shows the loss difference and the largest gradient difference relative to
the largest gradient. `first call` of the compiled row is the compile time (plus one step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import DTYPES, build_model, make_inputs, synchronize  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=171, help="class count K (default 171)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is shown (default 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--skip", action="append", choices=["compile", "onnx", "eval"], default=[],
        help="leave out a runtime, or the eval forward",
    )
    parser.add_argument("--train", action="store_true", help="also time a training step, eager and compiled")
    parser.add_argument("--train-classes", type=int, default=20, help="class count K of the training step")
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step (default 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny CLIP at 64x64, 1 repeat")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    # forward.py's build_model reads these
    args.sinkhorn_tol, args.sinkhorn_grad_mode = None, "recompute"
    if args.smoke:
        args.repeats = 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.device == "cuda" and "onnx" not in args.skip:
        args.skip.append("onnx")  # onnxruntime's CPU provider only here
    return args


def time_calls(fn, device, repeats):
    """(first call's seconds, median of `repeats` further calls, last result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), result


def compare(logits, reference):
    logits, reference = logits.float().cpu(), reference.float().cpu()
    return {
        "max_abs_diff": (logits - reference).abs().max().item(),
        "argmax_agreement": (logits.argmax(1) == reference.argmax(1)).float().mean().item(),
    }


def training_rows(model, args, device) -> dict:
    """Eager and compiled training step: the times, and the compiled loss and gradients against eager's."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    inputs = make_inputs(model, args.train_batch, args.train_classes)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(forward):
        model.zero_grad(set_to_none=True)
        loss = forward(inputs.pixel_values, labels=inputs.labels, text_embeds=inputs.text_embeds).loss
        loss.backward()
        return loss.detach(), [p.grad.detach().clone() for p in params]

    rows = {}
    first, median, (loss, grads) = time_calls(lambda: run(model), device, args.repeats)
    rows["eager"] = {"first_s": first, "median_s": median, "loss_diff": 0.0, "grad_rel_diff": 0.0}
    if "compile" not in args.skip:
        compiled = torch.compile(model, fullgraph=True)
        first, median, (c_loss, c_grads) = time_calls(lambda: run(compiled), device, args.repeats)
        scale = max(g.abs().max().item() for g in grads)
        rows["torch.compile"] = {
            "first_s": first,
            "median_s": median,
            "loss_diff": abs(c_loss.item() - loss.item()),
            "grad_rel_diff": max((a - b).abs().max().item() for a, b in zip(c_grads, grads)) / scale,
        }
    model.zero_grad(set_to_none=True)
    model.eval()
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(args).eval()
    inputs = make_inputs(model, args.batch, args.classes)
    pixel_values, text = inputs.pixel_values, inputs.text_embeds
    rows, train_rows = {}, {}
    if args.train:
        train_rows = training_rows(model, args, device)
    with torch.no_grad():
        if "eval" in args.skip:
            args.skip.append("onnx")
            eager = None
        else:
            first, median, eager = time_calls(lambda: model(pixel_values, text_embeds=text).logits, device, args.repeats)
            rows["eager"] = {"first_s": first, "median_s": median, **compare(eager, eager)}
        if "compile" not in args.skip and eager is not None:
            compiled = torch.compile(model, fullgraph=True)
            first, median, out = time_calls(
                lambda: compiled(pixel_values, text_embeds=text).logits, device, args.repeats
            )
            rows["torch.compile"] = {"first_s": first, "median_s": median, **compare(out, eager)}
    if "onnx" not in args.skip:
        import onnxruntime

        from otseg_hf.export.onnx import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / "model.onnx", batch_size=args.batch)
            options = onnxruntime.SessionOptions()
            if args.threads:
                options.intra_op_num_threads = args.threads
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            export_s = time.perf_counter() - start
            feed = {"pixel_values": pixel_values.float().numpy(), "text_embeds": text.float().numpy()}
            first, median, out = time_calls(lambda: session.run(None, feed)[0], device, args.repeats)
            rows["onnxruntime"] = {
                "first_s": export_s + first, "median_s": median, **compare(torch.from_numpy(out), eager)
            }
    header = (
        f"K = {args.classes}, batch {args.batch}, {args.device}, {args.dtype}, threads {torch.get_num_threads()}, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(header)
    if rows:
        print(f"\nEval forward, K = {args.classes}, batch {args.batch}")
        print("\n| runtime | forward (median) | first call (compile/export included) | max abs diff vs eager | argmax agreement |")
        print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['median_s']:.3f} s | {row['first_s']:.1f} s | {row['max_abs_diff']:.2e} | "
            f"{100 * row['argmax_agreement']:.2f} % |"
        )
    if train_rows:
        print(f"\nTraining step, K = {args.train_classes}, batch {args.train_batch}, fully supervised, dropout 0")
        print("\n| runtime | step (median) | first call (compile included) | loss diff vs eager | max grad diff / max grad |")
        print("|---|---:|---:|---:|---:|")
        for name, row in train_rows.items():
            print(
                f"| {name} | {row['median_s']:.3f} s | {row['first_s']:.1f} s | {row['loss_diff']:.2e} | "
                f"{row['grad_rel_diff']:.2e} |"
            )
    result = {
        "header": header, "classes": args.classes, "device": args.device, "dtype": args.dtype, "rows": rows,
        "train_classes": args.train_classes, "train_rows": train_rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
