"""CEL in workflow values: whole-value expressions, interpolation, clear errors."""

from __future__ import annotations

import pytest

from kurable.engine import expressions as e

CTX = {"input": {"a": 2, "name": "x", "list": [1, 2, 3]}, "vars": {}, "steps": {}}


def test_whole_string_expression_keeps_the_json_type() -> None:
    assert e.render("${ input.a + 1 }", CTX) == 3
    assert e.render("${ input.list.map(i, i * 2) }", CTX) == [2, 4, 6]
    assert e.render("${ {'k': input.a} }", CTX) == {"k": 2}
    assert e.render("${ input.a > 1 }", CTX) is True


def test_interpolation_inside_text_makes_a_string() -> None:
    assert e.render("hi ${ input.name }, n=${ size(input.list) }", CTX) == "hi x, n=3"
    assert e.render("m=${ {'k': 1} }", CTX) == 'm={"k": 1}'


def test_nested_structures_are_rendered_and_literals_kept() -> None:
    value = {"a": ["${ input.a }", 7, None], "b": {"c": "plain"}}
    assert e.render(value, CTX) == {"a": [2, 7, None], "b": {"c": "plain"}}


def test_braces_in_string_literals_do_not_end_the_expression() -> None:
    assert e.render("${ '}' + input.name }", CTX) == "}x"


def test_syntax_error_names_the_location() -> None:
    with pytest.raises(e.ExpressionError, match=r"steps\[0\]\.set\.x: .*syntax error"):
        e.check({"x": "${ input.a + }"}, "steps[0].set")


def test_evaluation_error_names_the_field() -> None:
    with pytest.raises(e.ExpressionError, match=r"calc\.y: expression 'input.nope'"):
        e.render({"y": "${ input.nope }"}, CTX, "calc")


def test_unterminated_expression_is_an_error() -> None:
    with pytest.raises(e.ExpressionError, match="unterminated"):
        e.render("${ input.a", CTX)


def test_condition_must_be_boolean() -> None:
    assert e.condition("input.a == 2", CTX) is True
    with pytest.raises(e.ExpressionError, match="true or false"):
        e.condition("input.a", CTX)


def test_programs_are_compiled_once() -> None:
    e.compile_expression.cache_clear()
    for _ in range(5):
        e.render("${ input.a * 3 }", CTX)
    assert e.compile_expression.cache_info().misses == 1


def test_a_runaway_comprehension_fails_within_its_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setattr(e, "TIME_BUDGET", 0.2)
    ctx = {"input": {"xs": list(range(60))}}
    runaway = "${ input.xs.map(a, input.xs.map(b, input.xs.map(c, a * b * c))) }"
    started = time.monotonic()
    with pytest.raises(e.ExpressionError, match="time budget"):
        e.render(runaway, ctx)
    assert time.monotonic() - started < 1.0


def test_a_result_larger_than_the_size_budget_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e, "SIZE_BUDGET", 1000)
    with pytest.raises(e.ExpressionError, match="exceeds the budget"):
        e.render("${ input.xs.map(x, 'abcdefghij') }", {"input": {"xs": list(range(200))}})
