"""Time and peak memory of `log_sinkhorn` forward + backward per `grad_mode`, printed as a markdown table.

    python benchmarks/sinkhorn_backward.py                      # OTSeg's worst case on CPU: 100 iterations
    python benchmarks/sinkhorn_backward.py --problems 64 --iterations 30 --device cuda

One Sinkhorn call of the OTSeg head for batch 2 and 171 classes is 342 problems of M = 1024 pixels x N = 8
prompts. Each mode runs in a fresh process. On CPU the peak is the growth of the process's peak RSS, measured
with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the RSS: otherwise the
allocator's reuse of freed blocks, not the live tensors, decides the number (allocations are slower then, so
compare times within one table only). On CUDA it is `torch.cuda.max_memory_allocated` growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODES = ("recompute", "checkpoint", "unrolled")


def measure(args: argparse.Namespace) -> dict:
    """In this process: median forward and backward times and the peak memory growth of one mode."""
    import resource
    import time

    import torch

    from otseg_hf.model.sinkhorn import log_sinkhorn

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    cost = (2 * torch.rand(args.problems, args.pixels, args.prompts, generator=generator)).to(device)
    weights = torch.randn(cost.shape, generator=generator).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def peak() -> int:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    base = peak()
    times = []
    for _ in range(args.repeats):
        leaf = cost.clone().requires_grad_(True)
        sync()
        start = time.perf_counter()
        plan = log_sinkhorn(leaf, 0.05, max_iter=args.iterations, tol=0.0, grad_mode=args.mode)
        sync()
        middle = time.perf_counter()
        (plan * weights).sum().backward()
        sync()
        times.append((middle - start, time.perf_counter() - middle))
        del plan, leaf
    forward, backward = (sorted(column)[len(column) // 2] for column in zip(*times))
    return {"mode": args.mode, "forward": forward, "backward": backward, "peak": peak() - base}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=342, help="B: problems per call (batch x classes)")
    parser.add_argument("--pixels", type=int, default=1024, help="M")
    parser.add_argument("--prompts", type=int, default=8, help="N")
    parser.add_argument("--iterations", type=int, default=100, help="iterations (tol 0: all of them run)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the table shows the median")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the per-mode child process
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args)))
        return

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rows = []
    for mode in MODES:
        command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--mode", mode]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"### log_sinkhorn forward + backward: {args.problems} problems of {args.pixels} x {args.prompts}, "
        f"{args.iterations} iterations, {args.device}\n"
    )
    print("| grad_mode | forward | backward | peak memory growth |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['forward']:.2f} s | {row['backward']:.2f} s | {row['peak'] / 2**20:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
