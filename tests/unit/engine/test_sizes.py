"""The size rule on journaled values, and how large stored records are cut into chunks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine import entities, sizes
from kurable.engine.entities import CommandRejected, Event


def test_the_size_is_the_canonical_json_in_utf8_bytes() -> None:
    assert sizes.encoded_size({"a": [1, 2]}) == len(b'{"a":[1,2]}')
    # Non-ASCII characters count as their UTF-8 bytes, not as one character each.
    assert sizes.encoded_size("é") == len('"é"'.encode())
    assert sizes.encoded_size("é") == 4


def test_a_value_at_the_limit_fits_and_one_byte_more_does_not() -> None:
    value = "x" * 98  # 100 bytes with its quotes
    assert sizes.encoded_size(value) == 100
    assert sizes.size_problem(value, 100, "the output of step s") is None
    problem = sizes.size_problem(value + "x", 100, "the output of step s")
    assert problem is not None


def test_the_refusal_says_what_how_big_the_limit_and_the_setting() -> None:
    value = {"blob": "x" * (2 * 1024 * 1024)}
    problem = sizes.size_problem(value, sizes.DEFAULT_MAX_VALUE_BYTES, "the output of step big")
    assert problem is not None
    assert problem.startswith("the output of step big is 2.0 MiB")
    assert f"({sizes.encoded_size(value)} bytes of JSON)" in problem
    assert "limit of 1.0 MiB (1048576 bytes)" in problem
    assert "--max-value-bytes" in problem and "KURABLE_MAX_VALUE_BYTES" in problem


def test_the_default_limit_fits_under_etcds_default_request_limit() -> None:
    etcd_max_request_bytes = 1.5 * 1024 * 1024
    assert etcd_max_request_bytes > sizes.DEFAULT_MAX_VALUE_BYTES
    assert sizes.CHUNK_BYTES * 4 <= sizes.DEFAULT_MAX_VALUE_BYTES


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_chunks_join_back_to_the_payload_and_none_exceeds_the_size(
    payload: bytes, size: int
) -> None:
    pieces = sizes.chunks(payload, size)
    assert b"".join(pieces) == payload
    assert all(len(piece) <= size for piece in pieces)
    assert len(pieces) == max(1, -(-len(payload) // size))


def test_a_chunk_size_below_one_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        sizes.chunks(b"abc", 0)


ACCOUNT = EntityTypeSpec.model_validate(
    {
        "stateSchema": {"type": "object"},
        "commands": {
            "note": {
                "emit": [{"type": "Noted", "data": {"text": "${ input.text }"}}],
                "reply": "${ input.text }",
            }
        },
        "events": {"Noted": {"set": {"notes": "${ state.notes + [event.text] }"}}},
    }
)


def _accepted(text: str) -> entities.CommandAccepted:
    return entities.decide(ACCOUNT, {"notes": []}, "note", {"text": text})


def test_a_command_within_the_limit_passes_the_size_check() -> None:
    entities.check_commit_size(_accepted("x" * 100), "note", 1024)


def test_an_event_over_the_limit_rejects_the_command_naming_the_event() -> None:
    with pytest.raises(CommandRejected) as caught:
        entities.check_commit_size(_accepted("x" * 2000), "note", 1024)
    assert caught.value.reason == "ValueTooLarge"
    assert "the data of event 'Noted' of command 'note'" in caught.value.message
    assert "nothing was applied" in caught.value.message


def test_a_reply_over_the_limit_rejects_the_command() -> None:
    accepted = entities.CommandAccepted(events=(), state={}, reply="y" * 2000)
    with pytest.raises(CommandRejected, match="the reply of command 'note'"):
        entities.check_commit_size(accepted, "note", 1024)


def test_a_commit_whose_writes_together_exceed_the_limit_is_rejected() -> None:
    # Each value fits, but events are written twice plus the state: one etcd request.
    text = "x" * 400
    accepted = entities.CommandAccepted(
        events=(Event("Noted", {"text": text}),), state={"notes": [text]}, reply=None
    )
    with pytest.raises(CommandRejected) as caught:
        entities.check_commit_size(accepted, "note", 1024)
    assert caught.value.reason == "ValueTooLarge"
    assert "twice" in caught.value.message
    expected = 2 * len(json.dumps({"text": text}, separators=(",", ":")))
    assert f"its events {expected // 2} bytes twice" in caught.value.message


def test_the_size_and_the_limit_never_read_the_same() -> None:
    limit = sizes.DEFAULT_MAX_VALUE_BYTES
    value = "x" * (1_100_011 - 2)  # 1100011 bytes of JSON, 1.05 MiB
    problem = sizes.size_problem(value, limit, "the output of step s")
    assert problem is not None
    assert "is 1.05 MiB (1100011 bytes of JSON), over the limit of 1.00 MiB" in problem
    just_over = sizes.size_problem("x" * (limit - 1), limit, "the output of step s")
    assert just_over is not None
    assert "is 1048577 B (1048577 bytes of JSON), over the limit of 1048576 B" in just_over
