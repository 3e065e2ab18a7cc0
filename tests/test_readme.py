"""Every ```python and ```bash block of the README runs as written, in order, in a scratch folder (Python blocks
share one namespace, like a notebook; bash blocks run with `bash -euo pipefail`), with the package's folders linked
in and the images the text names (image.jpg, street.jpg, ...) generated.

A comment right before a block changes it:
    <!-- readme-test: substitute "A" "B" -->   replace A by B (a Hub id by a local folder)
    <!-- readme-test: skip (REASON) -->         do not run it (the paper's datasets, several GPUs, a server)
The block after `<!-- test-command -->` is the CI command itself and is not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\s*$")
MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<body>.*?)\s*-->")
NAMED_IMAGES = ("image.jpg", "other.jpg", "street.jpg", "beach.jpg")
NOISE = ("Loading weights", "Writing model shards", "Saving current state")


def readme_blocks(text: str) -> list[dict]:
    """[{"lang", "code", "line", "skip", "substitutions"}] for every fenced block, with the markers before it."""
    blocks, lines, index = [], text.splitlines(), 0
    pending: list[str] = []
    while index < len(lines):
        line = lines[index]
        marker = MARKER.search(line)
        if marker:
            pending.append(marker.group("body"))
        elif "<!-- test-command -->" in line:
            pending.append("skip (the CI test command itself)")
        fence = FENCE.match(line)
        if fence:
            start, body = index + 1, []
            index += 1
            while index < len(lines) and not lines[index].strip().startswith("```"):
                body.append(lines[index][len(fence.group("indent")) :])
                index += 1
            skip = next((m[4:].strip(" ()") for m in pending if m.startswith("skip")), None)
            substitutions = [shlex.split(m)[1:3] for m in pending if m.startswith("substitute")]
            blocks.append({"lang": fence.group("lang"), "code": "\n".join(body) + "\n", "line": start,
                           "skip": skip, "substitutions": substitutions})  # fmt: skip
            pending = []
        elif line.strip() and not marker and "<!-- test-command -->" not in line:
            pending = [] if not line.startswith("<!--") else pending
        index += 1
    return blocks


def test_markers_are_read():
    text = '<!-- readme-test: substitute "a/b" "c" -->\n\n```bash\necho a/b\n```\ntext\n```python\nx = 1\n```\n'
    blocks = readme_blocks(text)
    assert [b["substitutions"] for b in blocks] == [[["a/b", "c"]], []]
    assert blocks[0]["code"] == "echo a/b\n" and blocks[1]["skip"] is None
    assert readme_blocks("<!-- readme-test: skip (GPUs) -->\n```bash\nx\n```\n")[0]["skip"] == "GPUs"


def test_readme_blocks_run_as_written(tmp_path, capsys):
    for name in ("otseg_hf", "training", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    rng = np.random.default_rng(0)
    for name in NAMED_IMAGES:
        PIL.Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    blocks = [b for b in readme_blocks((ROOT / "README.md").read_text()) if b["lang"] in ("python", "bash")]
    assert len(blocks) >= 10
    namespace: dict = {"__name__": "__readme__"}
    timings, skipped = [], []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for block in blocks:
            where = f"README.md line {block['line']}"
            if block["skip"]:
                skipped.append((where, block["skip"]))
                continue
            code = block["code"]
            for old, new in block["substitutions"]:
                assert old in code, f"{where}: the substitution {old!r} matches nothing"
                code = code.replace(old, new)
            started = time.perf_counter()
            if block["lang"] == "python":
                exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the README's own code)
            else:
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=600)  # fmt: skip
                assert done.returncode == 0, f"{where} failed:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
                # the scripts of this package keep the libraries quiet (the demo is the world's own script)
                scripts = "training/" in code or "otseg-" in code
                noisy = [word for word in NOISE if scripts and word in done.stderr]
                assert not noisy, f"{where}: library noise {noisy} in its output"
            timings.append((where, code.strip().splitlines()[0][:70], time.perf_counter() - started))
    finally:
        os.chdir(cwd)
    with capsys.disabled():
        print("\nREADME blocks (seconds):")
        for where, first, seconds in timings:
            print(f"  {seconds:6.1f}  {where}: {first}")
        for where, reason in skipped:
            print(f"  skipped {where}: {reason}")
    assert (tmp_path / "out" / "mine" / "training_curves.png").is_file()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
