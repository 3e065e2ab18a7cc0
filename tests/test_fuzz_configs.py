"""Fuzzing the configs: the constructor and a hand-edited config.json (tests/fuzz_cases.py lists the cases:
NaN / inf / strings for numbers, "false" for booleans, float or out-of-range ids, bad templates, windows), and
any value for each numeric field (hypothesis): a ValueError naming the field, or a config that holds the
value and loads."""

from __future__ import annotations

import math

import pytest
from fuzz_cases import World, config_cases
from fuzz_helpers import bad_outcomes
from hypothesis import given, settings
from hypothesis import strategies as st

from otseg_hf import OTSegConfig, ZegOTConfig


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz-configs"))


def test_every_config_case_gives_a_clear_error(world):
    bad = bad_outcomes(config_cases(world))
    assert not bad, "\n".join(bad)


ANY = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)
NUMBER_FIELDS = ["sinkhorn_epsilon", "sinkhorn_tol", "seen_class_penalty", "focal_loss_weight",
                 "dice_loss_weight", "focal_alpha", "focal_gamma"]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(NUMBER_FIELDS), value=ANY, zegot=st.booleans())
def test_numeric_fields_hold_finite_numbers_or_raise(field, value, zegot):
    config_class = ZegOTConfig if zegot else OTSegConfig
    try:
        config = config_class(**{field: value})
    except ValueError as error:
        assert field in str(error)
        return
    stored = getattr(config, field)
    assert stored == value and not isinstance(stored, (bool, str)) and math.isfinite(stored)


@settings(max_examples=30, deadline=None)
@given(value=ANY)
def test_transductive_is_a_boolean_or_raises(value):
    try:
        config = OTSegConfig(transductive=value)
    except ValueError as error:
        assert "transductive" in str(error)
        assert not isinstance(value, bool) or value  # True on VOC's split is valid, False always
        return
    assert isinstance(value, bool) and config.transductive is value


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(-2, 22), st.floats(-1, 21), st.text(max_size=2)), max_size=5))
def test_seen_label_ids_are_integers_in_range_or_raise(ids):
    try:
        config = OTSegConfig(seen_label_ids=ids)
    except ValueError as error:
        assert "seen_label_ids" in str(error) or "transductive" in str(error)
        return
    assert config.seen_label_ids == ids and all(type(i) is int and 0 <= i < 20 for i in ids)
