"""The benchmark scripts still run (tiny sizes): they print their tables. Their numbers are not checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_forward_benchmark_smoke():
    out = run("benchmarks/forward.py", "--smoke", "--classes", "5", "--train-classes", "5")
    for title in ("Eval forward", "Training step", "Peak memory"):
        assert title in out
    assert "backward recompute" in out  # the header names the Sinkhorn backward mode


def test_sinkhorn_backward_benchmark_rows():
    out = run(
        "benchmarks/sinkhorn_backward.py", "--problems", "2", "--pixels", "8", "--prompts", "2",
        "--iterations", "3", "--repeats", "1",
    )  # fmt: skip
    rows = [
        line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and " s |" in line
    ]
    assert rows == ["recompute", "checkpoint", "unrolled"]


def test_world_table_benchmark_smoke(tmp_path):
    out = run(
        "benchmarks/ablation_world.py", "--seeds", "0", "--max-steps", "2", "--num-train-images", "16",
        "--num-eval-images", "4", "--runs", "otseg", "transductive", "--jobs", "1", "--json", str(tmp_path / "t.json"),
    )  # fmt: skip
    from otseg_hf.recipes import RECIPES

    penalty = RECIPES["otseg-world-inductive"].model_overrides["seen_class_penalty"]
    for row in ("patch-grid oracle", "frozen CLIP (baseline)", "otseg (penalty 0.1)", f"otseg (penalty {penalty})",
                "otseg MPS path only", "otseg decoder path only", "transductive"):  # fmt: skip
        assert f"| {row}" in out, row
    assert (tmp_path / "t.json").exists()


def test_world_linear_probe_smoke():
    out = run("benchmarks/world_linear_probe.py", "--num-train-images", "8", "--num-eval-images", "4", "--steps", "2")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "seen |" in line]
    assert len(rows) == 26 and "| **mean** |" in out
