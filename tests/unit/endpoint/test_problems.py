"""Problem details (RFC 9457): their fields, JSON Pointers, malformed JSON's position."""

from __future__ import annotations

import json

import pytest

from kurable.endpoint._problems import TYPE_BASE, Problem, invalid, malformed_json, pointer


def test_a_problem_has_type_title_status_detail_and_instance() -> None:
    body = json.loads(Problem(403, "forbidden", "may not").encode("/v1/x"))
    assert body == {
        "type": TYPE_BASE + "forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "may not",
        "instance": "/v1/x",
    }


def test_pointers_escape_tilde_and_slash() -> None:
    assert pointer(("input", "a/b", "c~d", 3)) == "/input/a~1b/c~0d/3"
    assert pointer(()) == ""


def test_malformed_json_is_400_with_the_line_and_column() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads('{\n  "input": {"amount": 1,}\n}')
    problem = malformed_json(caught.value)
    assert problem.status == 400
    assert problem.errors[0]["line"] == 2
    assert problem.errors[0]["column"] == caught.value.colno
    assert "line 2" in problem.detail


def test_schema_errors_become_pointers_into_the_body() -> None:
    problem = invalid(
        [
            {"loc": ("body", "templateRef", "name"), "msg": "Field required"},
            {"loc": ("body", "labels", "a"), "msg": "Input should be a valid string"},
        ]
    )
    assert problem.status == 422
    assert [e["pointer"] for e in problem.errors] == ["/templateRef/name", "/labels/a"]
    assert problem.detail == "/templateRef/name: Field required (and 1 more)"
