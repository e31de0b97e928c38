"""Evaluation of Python CEL libraries: speed, and what each answers on the cases Kurable relies on.

    python3.11 -m venv /tmp/celeval/venv
    /tmp/celeval/venv/bin/pip install cel-expr-python common-expression-language cel-python
    /tmp/celeval/venv/bin/python bench/cel_libraries.py [--rounds 20000]

Libraries: `cel-python` (celpy, pure Python, the former baseline), `cel-expr-python` (the
official runtime over cel-cpp) and `common-expression-language` (bindings of cel-rust); a
library that is not installed is skipped. Prints µs per evaluation of a compiled one-line
expression over a JSON context (conversion of the variables included, as Kurable pays it),
µs per compile, and a table of the conformance cases (numbers, strings, lists, maps, macros,
timestamps, durations, conversions, null, errors) with each library's answer; a case marks
`ok` when the answer matches what the CEL spec (github.com/google/cel-spec, langdef.md and
the conformance tests in tests/simple/testdata) prescribes. Figures only: it never fails.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any

ERROR = object()
"""The expected answer of a case that must be an evaluation (or compile) error."""

CASES: list[tuple[str, str, dict[str, Any], Any]] = [
    # (group, expression, variables, expected JSON answer or ERROR)
    ("number", "input.qty > input.threshold", {"input": {"qty": 3, "threshold": 2.5}}, True),
    ("number", "2.5 < input.qty", {"input": {"qty": 3}}, True),
    ("number", "200.0 == 200", {}, True),
    ("number", "input.a == input.b", {"input": {"a": 200.0, "b": 200}}, True),
    ("number", "1u == 1", {}, True),
    ("number", "1u < 2.5", {}, True),
    ("number", "-1 < 1u", {}, True),
    ("number", "2.0 >= 2u", {}, True),
    ("number", "1 != 1.5", {}, True),
    ("number", "1 in [1.0, 2.0]", {}, True),
    ("number", "{1: 'one'}[1.0]", {}, "one"),
    ("number", "7 / 2", {}, 3),
    ("number", "-7 % 3", {}, -1),
    ("number", "7.0 / 2.0", {}, 3.5),
    ("number", "7.0 / 2", {}, ERROR),
    ("number", "9223372036854775807 + 1", {}, ERROR),
    ("number", "-9223372036854775808 - 1", {}, ERROR),
    ("number", "input.big * 2", {"input": {"big": 2**62}}, ERROR),
    ("number", "18446744073709551615u + 1u", {}, ERROR),
    ("number", "1u - 2u", {}, ERROR),
    ("number", "1 / 0", {}, ERROR),
    ("number", "1 % 0", {}, ERROR),
    ("number", "input.a + 1", {"input": {"a": 2}}, 3),
    ("number", "input.a + 1.0", {"input": {"a": 2.5}}, 3.5),
    ("string", "size('héllo')", {}, 5),
    ("string", "'abc'.contains('b')", {}, True),
    ("string", "'abc'.startsWith('ab')", {}, True),
    ("string", "'abc'.endsWith('bc')", {}, True),
    ("string", "'abc'.matches('^a.c$')", {}, True),
    ("string", "'a' + 'b'", {}, "ab"),
    ("string", "'a' + 1", {}, ERROR),
    ("string", "'b' > 'a'", {}, True),
    ("string", "'%d items'.format([3])", {}, "3 items"),
    ("string", "'ABC'.lowerAscii()", {}, "abc"),
    ("list", "2 in [1, 2, 3]", {}, True),
    ("list", "[1, 2, 3][1]", {}, 2),
    ("list", "[1][5]", {}, ERROR),
    ("list", "size([1, 2])", {}, 2),
    ("list", "[1, 2] + [3]", {}, [1, 2, 3]),
    ("list", "input.list == [1, 2.0]", {"input": {"list": [1, 2]}}, True),
    ("map", "'a' in {'a': 1}", {}, True),
    ("map", "{'a': 1}.a", {}, 1),
    ("map", "{'a': 1}['a']", {}, 1),
    ("map", "{'a': 1}.b", {}, ERROR),
    ("map", "size({'a': 1, 'b': 2})", {}, 2),
    ("map", "has(input.x)", {"input": {"x": 1}}, True),
    ("map", "has(input.y)", {"input": {"x": 1}}, False),
    ("map", "input.m == {'k': 1.0}", {"input": {"m": {"k": 1}}}, True),
    ("macro", "[1, 2, 3].all(x, x > 0)", {}, True),
    ("macro", "[1, 2, 3].exists(x, x > 2)", {}, True),
    ("macro", "[1, 2, 3].exists_one(x, x > 1)", {}, False),
    ("macro", "[1, 2, 3].map(x, x * 2)", {}, [2, 4, 6]),
    ("macro", "[1, 2, 3].map(x, x > 1, x * 10)", {}, [20, 30]),
    ("macro", "[1, 2, 3].filter(x, x % 2 == 1)", {}, [1, 3]),
    ("macro", "{'a': 1, 'b': 2}.all(k, k != 'c')", {}, True),
    ("macro", "[0, 1].exists(x, 1 / x > 0)", {}, True),
    ("time", "timestamp('2024-01-01T00:00:00Z') + duration('1h')", {}, "2024-01-01T01:00:00Z"),
    (
        "time",
        "timestamp('2024-01-01T00:00:00Z') < timestamp('2024-01-02T00:00:00+01:00')",
        {},
        True,
    ),
    ("time", "duration('90m') == duration('1h30m')", {}, True),
    (
        "time",
        "timestamp('2024-01-02T00:00:00Z') - timestamp('2024-01-01T00:00:00Z') == duration('24h')",
        {},
        True,
    ),
    ("time", "string(timestamp('2024-01-01T00:00:00Z'))", {}, "2024-01-01T00:00:00Z"),
    ("time", "timestamp('2024-01-01T10:00:00Z').getHours()", {}, 10),
    ("time", "duration('1h').getMinutes()", {}, 60),
    ("time", "string(duration('1m1ms'))", {}, "60.001s"),  # langdef's own example
    (
        "time",
        "timestamp(input.t) > timestamp('2000-01-01T00:00:00Z')",
        {"input": {"t": "2024-05-01T00:00:00Z"}},
        True,
    ),
    ("time", "timestamp('not a time')", {}, ERROR),
    ("convert", "int('42')", {}, 42),
    ("convert", "int(2.7)", {}, 2),
    ("convert", "int('x')", {}, ERROR),
    ("convert", "int(1e19)", {}, ERROR),
    ("convert", "double('2.5')", {}, 2.5),
    ("convert", "double(2)", {}, 2.0),
    ("convert", "uint(3) == 3u", {}, True),
    ("convert", "uint(-1)", {}, ERROR),
    ("convert", "string(42)", {}, "42"),
    ("convert", "string(2.5)", {}, "2.5"),
    ("convert", "string(true)", {}, "true"),
    ("convert", "type(1) == int", {}, True),
    ("convert", "dyn(1) == 1.0", {}, True),
    ("null", "null == null", {}, True),
    ("null", "input.n == null", {"input": {"n": None}}, True),
    ("null", "input.n", {"input": {"n": None}}, None),
    ("null", "null == 0", {}, False),
    ("null", "'a' == 1", {}, False),
    ("error", "nope.x", {}, ERROR),
    ("error", "'a' < 1", {}, ERROR),
    ("error", "input.a.b", {"input": {"a": 1}}, ERROR),
    ("error", "false && 1 / 0 == 1", {}, False),
    ("error", "1 / 0 == 1 || true", {}, True),
    ("error", "true ? 1 : 'a'", {}, 1),
    ("error", "input.qty +", {}, ERROR),
]

BENCH_EXPRESSION = "input.qty > 2 && input.name.startsWith('ord')"  # celpy can run it too
BENCH_CONTEXT: dict[str, Any] = {
    "input": {"qty": 3, "threshold": 2.5, "name": "order-17", "items": list(range(10))},
    "vars": {"total": 12.5},
}


def plain(value: Any, bool_type: type = bool) -> Any:
    """A library's answer as JSON-like Python (timestamps RFC 3339, durations `Ns`)."""
    if isinstance(value, bool_type):
        return bool(value)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {plain(k, bool_type): plain(v, bool_type) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, bool_type) for v in value]
    return value


class Failed(Exception):
    """The library reported an error (compile or evaluation); the message is its text."""


def celpy_library() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import celpy
    from celpy import celtypes
    from celpy.adapter import json_to_cel

    env = celpy.Environment()

    def compile_(source: str) -> Any:
        try:
            return env.program(env.compile(source))
        except Exception as e:
            raise Failed(str(e)) from None

    def evaluate(program: Any, variables: dict[str, Any]) -> Any:
        try:
            result = program.evaluate({k: json_to_cel(v) for k, v in variables.items()})
        except Exception as e:
            raise Failed(str(e)) from None
        if isinstance(result, Exception):
            raise Failed(str(result))
        return plain(result, celtypes.BoolType)  # celpy's bool is an int subclass

    return compile_, evaluate


def cel_cpp_library() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    from cel_expr_python import cel
    from cel_expr_python.ext import ext_strings

    env = cel.NewEnv(extensions=[ext_strings.ExtStrings()])

    def compile_(source: str) -> Any:
        try:
            return env.compile(source, disable_check=True)
        except Exception as e:
            raise Failed(str(e)) from None

    def evaluate(program: Any, variables: dict[str, Any]) -> Any:
        try:
            result = program.eval(data=variables)
        except Exception as e:
            raise Failed(str(e)) from None
        if result.type() == cel.Type.ERROR:
            raise Failed(str(result.value()))
        return plain(result.plain_value())

    return compile_, evaluate


def cel_rust_library() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import cel

    def compile_(source: str) -> Any:
        try:
            return cel.compile(source)
        except Exception as e:
            raise Failed(str(e)) from None

    def evaluate(program: Any, variables: dict[str, Any]) -> Any:
        try:
            return plain(program.execute(variables))
        except Exception as e:
            raise Failed(f"{type(e).__name__}: {e}") from None

    return compile_, evaluate


LIBRARIES = {
    "cel-python 0.5 (celpy)": celpy_library,
    "cel-expr-python (cel-cpp)": cel_cpp_library,
    "common-expression-language (cel-rust)": cel_rust_library,
}


def same(answer: Any, expected: Any) -> bool:
    """Equal and of the same JSON type (True is not 1, 3 is not 3.0)."""
    if type(answer) is not type(expected):
        return False
    if isinstance(expected, list):
        return len(answer) == len(expected) and all(map(same, answer, expected))
    if isinstance(expected, dict):
        return answer.keys() == expected.keys() and all(
            same(answer[k], expected[k]) for k in expected
        )
    return bool(answer == expected)


def run_case(
    library: Any, source: str, variables: dict[str, Any], expected: Any
) -> tuple[bool, str]:
    compile_, evaluate = library
    try:
        answer = evaluate(compile_(source), variables)
    except Failed as e:
        message = " ".join(str(e).split())
        return expected is ERROR, f"error: {message[:90]}"
    except Exception as e:  # a crash of the binding itself
        return False, f"crash {type(e).__name__}: {e}"[:100]
    return expected is not ERROR and same(answer, expected), repr(answer)[:60]


def timing(library: Any, rounds: int) -> tuple[float, float]:
    """(µs per evaluation of a compiled program, µs per compile) over BENCH_EXPRESSION."""
    compile_, evaluate = library
    program = compile_(BENCH_EXPRESSION)
    assert evaluate(program, BENCH_CONTEXT) is True
    started = time.perf_counter()
    for _ in range(rounds):
        evaluate(program, BENCH_CONTEXT)
    per_eval = (time.perf_counter() - started) / rounds * 1e6
    compiles = max(rounds // 20, 50)
    started = time.perf_counter()
    for i in range(compiles):
        compile_(f"{BENCH_EXPRESSION} && {i} >= 0")  # distinct sources: no library cache
    per_compile = (time.perf_counter() - started) / compiles * 1e6
    return per_eval, per_compile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()

    loaded = {}
    for name, make in LIBRARIES.items():
        try:
            loaded[name] = make()
        except ImportError as e:
            print(f"{name}: not installed ({e})")

    print(f"expression: {BENCH_EXPRESSION}")
    for name, library in loaded.items():
        rounds = args.rounds if "celpy" not in name else max(args.rounds // 20, 200)
        per_eval, per_compile = timing(library, rounds)
        print(f"{name:40} {per_eval:9.1f} µs/eval {per_compile:10.1f} µs/compile")

    print()
    print("conformance (ok = the answer the CEL spec prescribes)")
    totals = dict.fromkeys(loaded, 0)
    for group, source, variables, expected in CASES:
        want = "error" if expected is ERROR else repr(expected)
        row = [f"{group:8} {source[:58]:58} want {want[:22]:22}"]
        details = []
        for name, library in loaded.items():
            ok, answer = run_case(library, source, variables, expected)
            totals[name] += ok
            row.append("ok  " if ok else "DIFF")
            if args.verbose or not ok:
                details.append(f"      {name}: {answer}")
        print(" ".join(row))
        for line in details:
            print(line)
    print()
    for name, total in totals.items():
        print(f"{name:40} {total}/{len(CASES)} as the spec prescribes")


if __name__ == "__main__":
    main()
