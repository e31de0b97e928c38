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


def test_a_runaway_comprehension_fails_on_its_iteration_budget() -> None:
    ctx = {"input": {"xs": list(range(60))}}
    runaway = "${ input.xs.map(a, input.xs.map(b, input.xs.map(c, a * b * c))) }"
    with pytest.raises(e.ExpressionError, match="budget of 10000 comprehension iterations"):
        e.render(runaway, ctx)


def test_mapping_a_list_longer_than_the_limit_is_refused_before_evaluating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(e, "MAPPED_LIST_LIMIT", 10)
    ctx = {"input": {"xs": list(range(11)), "few": [1, 2]}}
    with pytest.raises(e.ExpressionError, match="list of up to 11 elements; at most 10"):
        e.render("${ input.few.map(x, x * 2) }", ctx)
    assert e.render("${ input.xs.exists(x, x > 9) }", ctx) is True  # no list is built


def test_a_result_larger_than_the_size_budget_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e, "SIZE_BUDGET", 1000)
    with pytest.raises(e.ExpressionError, match="exceeds the budget"):
        e.render("${ input.xs.map(x, 'abcdefghij') }", {"input": {"xs": list(range(200))}})


# --- issue 10 §1: CEL's numeric semantics, and errors in CEL's words ---


def test_comparing_an_int_with_a_double_from_json_works() -> None:
    ctx = {"input": {"qty": 3, "threshold": 2.5}}
    assert e.render("${ input.qty > input.threshold }", ctx) is True
    assert e.condition("${ input.qty > input.threshold }", ctx) is True
    assert e.condition("input.threshold < input.qty", ctx) is True


def test_a_json_double_equals_the_same_int() -> None:
    assert e.condition("200.0 == 200", {}) is True
    assert e.condition("input.status == 200", {"input": {"status": 200.0}}) is True
    assert e.condition("input.a == input.b", {"input": {"a": 200.0, "b": 200}}) is True
    assert e.condition("input.a != 200", {"input": {"a": 200.5}}) is True


@pytest.mark.parametrize(
    "expression",
    ["1u == 1", "1u < 2.5", "-1 < 1u", "2.0 >= 2u", "1 in [1.0, 2.0]", "dyn(1) == 1.0"],
)
def test_uint_int_and_double_compare_across_types(expression: str) -> None:
    assert e.condition(expression, {}) is True


def test_ints_and_doubles_keep_their_json_type() -> None:
    ctx = {"input": {"i": 2, "d": 2.0}}
    result = e.render({"i": "${ input.i + 1 }", "d": "${ input.d + 1.0 }"}, ctx)
    assert result == {"i": 3, "d": 3.0}
    assert type(result["i"]) is int and type(result["d"]) is float


INTERNALS = (
    "Token(",
    "celpy",
    "<class",
    "(TypeError)",
    "TypeError",
    "INVALID_ARGUMENT",
    "UNKNOWN:",
)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("input.a + 'x'", "no matching overload for _+_(int, string)"),
        ("input.a / 0", "divide by zero"),
        ("input.big * 2", "integer overflow"),
        ("input.missing", "no such key"),
        ("nope.x", "undeclared reference to 'nope'"),
        ("input.list[7]", "index out of range"),
        ("input.a.b", "no such field"),
    ],
)
def test_an_evaluation_error_names_expression_field_and_problem_without_internals(
    expression: str, problem: str
) -> None:
    ctx = {"input": {"a": 2, "big": 2**62, "list": [1]}}
    with pytest.raises(e.ExpressionError) as raised:
        e.render({"total": "${ " + expression + " }"}, ctx, "steps[calc].set")
    message = str(raised.value)
    assert message.startswith(f"steps[calc].set.total: expression {expression!r}: ")
    assert problem in message
    assert not [internal for internal in INTERNALS if internal in message], message


def test_a_syntax_error_names_the_position_without_internals() -> None:
    with pytest.raises(e.ExpressionError) as raised:
        e.check({"when": "${ input.qty + }"}, "steps[0]")
    message = str(raised.value)
    assert message.startswith("steps[0].when: expression 'input.qty +': syntax error at 1:12: ")
    assert not [internal for internal in (*INTERNALS, "<input>", "\n") if internal in message]


ERROR = object()

CONFORMANCE: list[tuple[str, dict[str, object], object]] = [
    # numbers
    ("7 / 2", {}, 3),
    ("-7 % 3", {}, -1),
    ("7.0 / 2.0", {}, 3.5),
    ("7.0 / 2", {}, ERROR),  # CEL has no mixed-type arithmetic, only mixed comparison
    ("9223372036854775807 + 1", {}, ERROR),
    ("-9223372036854775808 - 1", {}, ERROR),
    ("18446744073709551615u + 1u", {}, ERROR),
    ("1u - 2u", {}, ERROR),
    ("1 / 0", {}, ERROR),
    ("1 % 0", {}, ERROR),
    ("{1: 'one'}[1.0]", {}, "one"),
    ("input.list == [1, 2.0]", {"input": {"list": [1, 2]}}, True),
    ("input.m == {'k': 1.0}", {"input": {"m": {"k": 1}}}, True),
    # strings
    ("size('héllo')", {}, 5),
    ("'abc'.contains('b')", {}, True),
    ("'abc'.startsWith('ab') && 'abc'.endsWith('bc')", {}, True),
    ("'abc'.matches('^a.c$')", {}, True),
    ("'a' + 'b'", {}, "ab"),
    ("'a' + 1", {}, ERROR),
    ("'%d items'.format([3])", {}, "3 items"),
    ("'ABC'.lowerAscii()", {}, "abc"),
    # lists and maps
    ("2 in [1, 2, 3]", {}, True),
    ("[1, 2, 3][1]", {}, 2),
    ("[1][5]", {}, ERROR),
    ("size([1, 2]) + size({'a': 1})", {}, 3),
    ("[1, 2] + [3]", {}, [1, 2, 3]),
    ("'a' in {'a': 1}", {}, True),
    ("{'a': 1}.a + {'a': 1}['a']", {}, 2),
    ("{'a': 1}.b", {}, ERROR),
    ("has(input.x)", {"input": {"x": 1}}, True),
    ("has(input.y)", {"input": {"x": 1}}, False),
    # macros
    ("[1, 2, 3].all(x, x > 0)", {}, True),
    ("[1, 2, 3].exists(x, x > 2)", {}, True),
    ("[1, 2, 3].exists_one(x, x > 1)", {}, False),
    ("[1, 2, 3].map(x, x * 2)", {}, [2, 4, 6]),
    ("[1, 2, 3].map(x, x > 1, x * 10)", {}, [20, 30]),
    ("[1, 2, 3].filter(x, x % 2 == 1)", {}, [1, 3]),
    ("{'a': 1, 'b': 2}.all(k, k != 'c')", {}, True),
    ("[0, 1].exists(x, 1 / x > 0)", {}, True),  # an error absorbed by a true element
    # timestamps and durations
    ("timestamp('2024-01-01T00:00:00Z') + duration('1h')", {}, "2024-01-01T01:00:00Z"),
    ("timestamp('2024-01-01T00:00:00Z') < timestamp('2024-01-02T00:00:00+01:00')", {}, True),
    ("duration('90m') == duration('1h30m')", {}, True),
    ("timestamp('2024-01-02T00:00:00Z') - timestamp('2024-01-01T00:00:00Z')", {}, "86400s"),
    ("string(timestamp('2024-01-01T00:00:00Z'))", {}, "2024-01-01T00:00:00Z"),
    ("timestamp('2024-01-01T10:00:00Z').getHours()", {}, 10),
    ("duration('1h').getMinutes()", {}, 60),
    ("string(duration('1m1ms'))", {}, "60.001s"),
    (
        "timestamp(input.t) > timestamp('2000-01-01T00:00:00Z')",
        {"input": {"t": "2024-05-01T00:00:00Z"}},
        True,
    ),
    ("timestamp('not a time')", {}, ERROR),
    # conversions
    ("int('42')", {}, 42),
    ("int(2.7)", {}, 2),
    ("int('x')", {}, ERROR),
    ("int(1e19)", {}, ERROR),
    ("double('2.5')", {}, 2.5),
    ("double(2)", {}, 2.0),
    ("uint(-1)", {}, ERROR),
    ("string(42) + string(2.5) + string(true)", {}, "422.5true"),
    ("type(1) == int", {}, True),
    # null
    ("null == null", {}, True),
    ("input.n == null", {"input": {"n": None}}, True),
    ("input.n", {"input": {"n": None}}, None),
    ("null == 0", {}, False),
    ("'a' == 1", {}, False),
    # errors, and the logical operators that absorb them
    ("'a' < 1", {}, ERROR),
    ("false && 1 / 0 == 1", {}, False),
    ("1 / 0 == 1 || true", {}, True),
    ("true ? 1 : 'a'", {}, 1),
]


@pytest.mark.parametrize(
    ("expression", "context", "expected"), CONFORMANCE, ids=[c[0] for c in CONFORMANCE]
)
def test_cel_conformance(expression: str, context: dict[str, object], expected: object) -> None:
    if expected is ERROR:
        with pytest.raises(e.ExpressionError):
            e.evaluate(expression, context)
        return
    result = e.evaluate(expression, context)
    assert result == expected
    assert type(result) is type(expected)
