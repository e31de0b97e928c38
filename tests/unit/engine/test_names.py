"""Derived names and label values: always valid, deterministic, distinct for distinct inputs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kurable.engine.names import (
    NAME_LIMIT,
    child_run_name,
    derived_name,
    is_label_value,
    is_name,
    label_value,
)

# Kubernetes object names (parents) and free-form step names, of any length.
k8s_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True).filter(is_name)
any_text = st.text(min_size=1, max_size=300)


def test_a_short_valid_join_is_kept_as_it_is() -> None:
    assert child_run_name("expense-42", "approve") == "expense-42-approve"
    assert label_value("expense-42") == "expense-42"


def test_the_70_character_parent_of_the_field_report_gets_a_valid_child_and_label() -> None:
    parent = "a" * 70
    child = child_run_name(parent, "sub")
    assert is_name(child) and len(child) <= NAME_LIMIT
    label = label_value(parent)
    assert is_label_value(label) and label != parent


def test_foreach_items_and_later_visits_get_their_own_children() -> None:
    names = {child_run_name("run", f"each[{i}]") for i in range(50)}
    names |= {child_run_name("run", "each", visit) for visit in range(1, 50)}
    assert len(names) == 99
    assert all(is_name(n) for n in names)


@settings(max_examples=300)
@given(k8s_names, any_text, st.integers(min_value=1, max_value=10**6))
def test_a_child_name_is_always_a_name_and_a_label_value(
    parent: str, step: str, visit: int
) -> None:
    name = child_run_name(parent, step, visit)
    assert is_name(name, NAME_LIMIT)
    assert is_label_value(name)
    assert child_run_name(parent, step, visit) == name  # deterministic


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_a_label_value_is_always_valid_and_deterministic(text: str) -> None:
    value = label_value(text)
    assert is_label_value(value)
    assert label_value(text) == value


@settings(max_examples=200)
@given(st.lists(any_text, min_size=2, max_size=2, unique=True), any_text)
def test_distinct_steps_of_one_parent_get_distinct_children(steps: list[str], parent: str) -> None:
    parent = label_value(parent).lower().strip("_.-") or "p"
    a, b = (child_run_name(parent, s) for s in steps)
    assert a != b


@settings(max_examples=200)
@given(st.lists(st.text(max_size=300), min_size=2, max_size=2, unique=True))
def test_distinct_texts_get_distinct_label_values(texts: list[str]) -> None:
    assert label_value(texts[0]) != label_value(texts[1])


@given(st.lists(any_text, min_size=1, max_size=4), st.integers(min_value=12, max_value=253))
def test_derived_names_respect_any_limit(parts: list[str], limit: int) -> None:
    assert is_name(derived_name(*parts, limit=limit), limit)
