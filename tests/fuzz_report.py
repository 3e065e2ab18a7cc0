"""Count the fuzz outcomes per surface (see tests/fuzz_cases.py) for the code on PYTHONPATH.

    PYTHONPATH=$PWD python tests/fuzz_report.py [--details] [--surface NAME ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

torch.set_num_threads(1)
import fuzz_cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--details", action="store_true")
    parser.add_argument("--surface", nargs="*")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        world = fuzz_cases.World(Path(tmp))
        counts = collections.defaultdict(collections.Counter)
        rows = []
        for case in fuzz_cases.all_cases(world, args.surface):
            outcome, detail = fuzz_cases.judge(case)
            counts[case.surface][outcome] += 1
            rows.append({"surface": case.surface, "case": case.name, "outcome": outcome, "detail": detail})
            if args.details and outcome in ("garbage", "deep"):
                print(f"{outcome:8s} {case.surface} / {case.name}: {detail}", file=sys.stderr)
    names = ("clear", "handled", "garbage", "deep")
    print(f"| surface | inputs | {' | '.join(names)} |")
    print("|---|---|" + "---|" * len(names))
    total = collections.Counter()
    for surface, counter in counts.items():
        total.update(counter)
        print(f"| {surface} | {sum(counter.values())} | " + " | ".join(str(counter[n]) for n in names) + " |")
    print(f"| all | {sum(total.values())} | " + " | ".join(str(total[n]) for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
