"""W3C traceparent parsing and the derived ids of a run's spans."""

from __future__ import annotations

import pytest

from kurable.engine.tracecontext import (
    attempt_span_id,
    parse_traceparent,
    run_span_id,
    run_trace_id,
)

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_traceparent_parses_and_prints_back() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None
    assert parent.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent.span_id == 0xB7AD6B7169203331
    assert parent.header() == VALID
    assert parse_traceparent(VALID.upper()) == parent


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ],
)
def test_a_malformed_traceparent_is_none(text: str | None) -> None:
    assert parse_traceparent(text) is None


def test_a_later_version_with_more_fields_reads_its_first_four() -> None:
    parent = parse_traceparent("01-" + VALID[3:] + "-what-comes-next")
    assert parent is not None and parent.span_id == 0xB7AD6B7169203331


def test_ids_are_derived_from_the_run_so_every_replica_names_the_same_spans() -> None:
    assert run_trace_id("u-1", VALID) == 0x0AF7651916CD43DD8448EB211C80319C
    assert run_trace_id("u-1", None) == run_trace_id("u-1", "garbage") != run_trace_id("u-2", None)
    assert run_span_id("u-1") == run_span_id("u-1") != run_span_id("u-2")
    first = attempt_span_id("u-1", "call", 1, 1)
    assert first == attempt_span_id("u-1", "call", 1, 1)
    assert (
        len({first, attempt_span_id("u-1", "call", 1, 2), attempt_span_id("u-1", "call", 2, 1)})
        == 3
    )
    assert 0 < run_trace_id("u-1", None) < 2**128 and 0 < first < 2**64
