"""Peak memory of the segmentation pipeline on a large image with a large vocabulary.

    python benchmarks/large_image_memory.py                       # 4000x4000, 150 classes, the shipped world model
    python benchmarks/large_image_memory.py --size 2000 --classes 20

Runs `pipeline("zero-shot-image-segmentation", model=<world-otseg>)` on one random RGB image of --size x --size
with --classes candidate labels in a fresh child process, and prints the growth of its peak resident set size
(VmHWM after a reset through /proc/self/clear_refs, Linux only) over the RSS with the pipeline built. This is a
measurement, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

WORLD = Path(__file__).resolve().parent.parent / "otseg_hf" / "world" / "pretrained" / "world-otseg"


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(size: int, classes: int, threads: int, queue) -> None:
    import numpy as np
    import torch
    from transformers import pipeline

    import otseg_hf  # noqa: F401  (registers the tasks)

    torch.set_num_threads(threads)
    segmenter = pipeline("zero-shot-image-segmentation", model=str(WORLD))
    labels = [f"class {i}" for i in range(classes)]
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    base = _rss()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    start = time.perf_counter()
    segments = segmenter(image, candidate_labels=labels)
    seconds = time.perf_counter() - start
    queue.put({"size": size, "classes": classes, "peak_growth": _peak() - base, "rss_before": base,
               "seconds": seconds, "segments": len(segments)})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4000, help="image side in pixels (default 4000)")
    parser.add_argument("--classes", type=int, default=150, help="candidate labels (default 150)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the child (default 1)")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(args.size, args.classes, args.threads, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the child process failed (exit code {child.exitcode}; out of memory?)")
    result = queue.get()
    print(
        f"| {result['size']}x{result['size']} | {result['classes']} | {result['peak_growth'] / 2**30:.2f} GiB | "
        f"{(result['rss_before'] + result['peak_growth']) / 2**30:.2f} GiB | {result['seconds']:.1f} s | "
        f"{result['segments']} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
