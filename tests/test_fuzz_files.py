"""Fuzzing what reads files or command lines: folder loading (damaged, NaN, truncated, edited), the converter
(hostile, truncated, NaN, bad flags), otseg-segment and train.py / evaluate.py (bad flags, folders, data)."""

from __future__ import annotations

import pytest
from fuzz_cases import World, cli_cases, converter_cases, folder_cases, training_cases
from fuzz_helpers import bad_outcomes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz-files"))


@pytest.mark.parametrize("build", [folder_cases, converter_cases, cli_cases, training_cases],
                         ids=lambda b: b.__name__)  # fmt: skip
def test_every_case_gives_a_clear_error_or_a_good_result(world, build):
    bad = bad_outcomes(build(world))
    assert not bad, "\n".join(bad)
