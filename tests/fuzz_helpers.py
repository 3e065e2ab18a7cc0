"""Shared by tests/test_fuzz_*.py: run a surface's cases of tests/fuzz_cases.py and report the bad outcomes."""

from __future__ import annotations

import logging

import fuzz_cases


def bad_outcomes(cases) -> list[str]:
    """'surface / case: outcome detail' for every case that is garbage or deep (see fuzz_cases.judge)."""
    logging.disable(logging.WARNING)
    try:
        judged = [(case, *fuzz_cases.judge(case)) for case in cases]
    finally:
        logging.disable(logging.NOTSET)
    assert judged, "no cases"
    return [f"{c.surface} / {c.name}: {outcome} {detail}" for c, outcome, detail in judged if outcome in
            ("garbage", "deep")]  # fmt: skip
