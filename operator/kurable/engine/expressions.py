"""CEL expressions in workflow values: `${ expr }` alone is the value, inside text it interpolates.

CEL is the language Kubernetes itself uses for validation rules; Kurable evaluates it with
cel-expr-python, the official runtime over cel-cpp, which implements the spec's numeric
semantics (ints, uints and doubles compare and equal across types: `200.0 == 200`) and the
strings extension (`format`, `lowerAscii`, ...). Programs are compiled once and cached by
their source text. Variables come in as JSON (an int stays an int, a float a double; an
integer outside CEL's int64 as `to_cel` says); results go out as JSON through `to_json`.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

SIZE_BUDGET = int(os.environ.get("KURABLE_EXPRESSION_BYTES", str(1024 * 1024)))
"""Largest result (as JSON) an expression may produce."""
ITERATION_BUDGET = 10_000
"""Comprehension iterations (all macros together) one evaluation may run: cel-expr-python's
fixed limit. It bounds a runaway comprehension deterministically, so a replay decides alike."""
MAPPED_LIST_LIMIT = 2_500
"""Longest list an expression may `map` or `filter`: cel-cpp rebuilds the result list on every
element (cost grows with the square of the length: ~0.3 s at 2,500, ~14 s at 10,000) and holds
the interpreter meanwhile, so longer lists are refused before evaluating."""
_LIST_MACRO = re.compile(r"\.\s*(map|filter)\s*\(")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHOLE = re.compile(r"^\s*\$\{(?P<expr>.*)\}\s*$", re.DOTALL)
_ENV = cel.NewEnv(extensions=[ext_strings.ExtStrings()])


class ExpressionError(Exception):
    """An expression that does not compile or does not evaluate; says which and why."""

    def __init__(self, expression: str, problem: str, where: str = "") -> None:
        self.expression = expression
        self.problem = problem
        self.where = where
        at = f"{where}: " if where else ""
        super().__init__(f"{at}expression {expression!r}: {problem}")

    def at(self, where: str) -> ExpressionError:
        """The same error, located at `where` (e.g. `steps[2].set.total`)."""
        inner = f"{where}.{self.where}" if self.where else where
        return ExpressionError(self.expression, self.problem, inner)


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> cel.Expression:
    """Compile a CEL program once (parse and expand macros; types are checked when evaluated).

    Raises ExpressionError with the parser's complaint (`syntax error at 1:12: ...`).
    """
    try:
        return _ENV.compile(source, disable_check=True)
    except RuntimeError as e:
        raise ExpressionError(source, _compile_problem(str(e))) from None


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one CEL expression over JSON `context` (variable name -> JSON value).

    Returns a JSON value. Raises ExpressionError naming the problem in CEL's words (no such
    key, integer overflow, division by zero, no matching overload, a budget exceeded).
    """
    source = source.strip()
    program = compile_expression(source)
    # Converting JSON to CEL values costs in proportion to their size: convert only the
    # variables the expression names (a name it does not mention cannot be reached).
    names = _identifiers(source)
    variables = {k: v for k, v in context.items() if k in names}
    if _LIST_MACRO.search(source):
        longest = _longest_list(variables)
        if longest > MAPPED_LIST_LIMIT:
            raise ExpressionError(
                source,
                f"maps or filters a list of up to {longest} elements; at most "
                f"{MAPPED_LIST_LIMIT} can be (split the list, e.g. with forEach)",
            )
    try:
        result = program.eval(data=to_cel(variables))
    except RuntimeError as e:  # the runtime's budgets and internal failures
        raise ExpressionError(source, _runtime_problem(str(e))) from None
    if result.type() == cel.Type.ERROR:
        raise ExpressionError(source, _runtime_problem(str(result.value())))
    value = to_json(result.plain_value())
    size = len(json.dumps(value, default=str))
    if size > SIZE_BUDGET:
        raise ExpressionError(source, f"result of {size} bytes exceeds the budget of {SIZE_BUDGET}")
    return value


INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def to_cel(value: Any) -> Any:
    """A JSON value as the runtime takes it, every integer inside CEL's number types:
    an integer in int64 stays an int, one above int64 but inside uint64 becomes a uint
    (the runtime reads it so), and one outside both becomes the nearest double (an infinity
    beyond a double's range).

    The rule follows JSON itself: RFC 8259 §6 says numbers are interoperable as IEEE 754
    doubles, and CEL's spec (cel-spec, "JSON Data Conversion") maps every JSON number to
    a double; the Kubernetes API server already stores `18446744073709551616` as the
    double `18446744073709552000`. An integer CEL cannot hold must not make every
    expression over its map fail, read or not. Containers are copied only when
    something inside them changes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= UINT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:  # beyond a double too: IEEE 754 rounds it to infinity
            return math.inf if value > 0 else -math.inf
    if isinstance(value, dict):
        converted = {k: to_cel(v) for k, v in value.items()}
        same = all(converted[k] is v for k, v in value.items())
        return value if same else converted
    if isinstance(value, list):
        items = [to_cel(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _longest_list(value: Any) -> int:
    """The length of the longest list anywhere inside a JSON value."""
    if isinstance(value, list):
        return max([len(value), *(_longest_list(v) for v in value if isinstance(v, list | dict))])
    if isinstance(value, dict):
        return max(
            (_longest_list(v) for v in value.values() if isinstance(v, list | dict)), default=0
        )
    return 0


@functools.lru_cache(maxsize=4096)
def _identifiers(source: str) -> frozenset[str]:
    return frozenset(_IDENTIFIER.findall(source))


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def render(value: Any, context: Mapping[str, Any], where: str = "") -> Any:
    """Evaluate every `${ }` in a JSON value: whole strings become values, others interpolate."""
    try:
        if isinstance(value, str):
            return _render_string(value, context)
        if isinstance(value, list):
            return [render(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: render(v, context, f"{where}.{k}" if where else k) for k, v in value.items()}
        return value
    except ExpressionError as e:
        raise (e.at(where) if where and not e.where else e) from None


def condition(source: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a condition, written bare (`a > 1`) or wrapped (`${ a > 1 }`); must be bool."""
    match = _WHOLE.match(source)
    result = evaluate(match.group("expr") if match else source, context)
    if not isinstance(result, bool):
        raise ExpressionError(source, f"must be true or false, got {json.dumps(result)}")
    return result


def check(value: Any, where: str = "") -> None:
    """Compile every expression in `value` (without evaluating); raise at the first bad one."""
    if isinstance(value, str):
        for expr in _expressions(value):
            try:
                compile_expression(expr.strip())
            except ExpressionError as e:
                raise e.at(where) if where else e from None
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            check(v, f"{where}.{k}" if where else k)


def check_names(value: Any, names: Iterable[str], where: str = "") -> None:
    """Like `check`, and every variable an expression reads must be one of `names`.

    CEL's own checker decides (variables declared as `dyn`), so a reference that can
    never resolve (`input.by` where only `state` and `event` exist) is refused before
    anything runs. Raises ExpressionError at the first bad expression.
    """
    declared = frozenset(names)
    check(value, where)
    for expr, at in _located(value, where):
        try:
            _checking_env(declared).compile(expr.strip())
        except RuntimeError as e:
            problem = _compile_problem(str(e))
            if "undeclared reference" in problem:
                shown = ", ".join(sorted(declared))
                what = problem.split(": ", 1)[-1].replace(" (in container '')", "")
                raise ExpressionError(
                    expr.strip(),
                    f"{what}: only {shown} can be used here",
                    at,
                ) from None


def fields_read(value: Any, variable: str, where: str = "") -> list[tuple[str, str, str]]:
    """(field, expression, path) for each `variable.field` an expression in `value` reads
    (string literals aside; `variable["field"]` is not seen)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(variable)}\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
    found = []
    for expr, at in _located(value, where):
        code = _STRING_LITERAL.sub('""', expr)
        found += [(m.group(1), expr.strip(), at) for m in pattern.finditer(code)]
    return found


_STRING_LITERAL = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"")


@functools.lru_cache(maxsize=64)
def _checking_env(names: frozenset[str]) -> cel.Env:
    return cel.NewEnv(
        variables={name: cel.Type.DYN for name in names},
        extensions=[ext_strings.ExtStrings()],
    )


def _located(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every expression in a JSON value with the path of the field it stands in."""
    if isinstance(value, str):
        for expr in _expressions(value):
            yield expr, where
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _located(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _located(v, f"{where}.{k}" if where else k)


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if "${" not in text:
        return text
    whole = _WHOLE.match(text)
    if whole and _balanced(whole.group("expr")):
        return evaluate(whole.group("expr"), context)
    out, pos = [], 0
    for start, end, expr in _spans(text):
        out.append(text[pos:start])
        value = evaluate(expr, context)
        out.append(value if isinstance(value, str) else json.dumps(value))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _expressions(text: str) -> list[str]:
    whole = _WHOLE.match(text)
    if whole and _balanced(whole.group("expr")):
        return [whole.group("expr")]
    return [expr for _, _, expr in _spans(text)]


def _spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, expression) of each `${ ... }`, minding nested braces and quotes."""
    spans = []
    i = 0
    while (start := text.find("${", i)) >= 0:
        depth, j, quote = 1, start + 2, ""
        while j < len(text) and depth:
            c = text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            j += 1
        if depth:
            raise ExpressionError(text[start:], "unterminated ${ ... }")
        spans.append((start, j, text[start + 2 : j - 1]))
        i = j
    return spans


def _balanced(expr: str) -> bool:
    """True when `expr` is one expression, not `a } text ${ b` spanning two."""
    try:
        spans = _spans("${" + expr + "}")
    except ExpressionError:
        return False
    return len(spans) == 1 and spans[0][1] == len(expr) + 3


def to_json(value: Any) -> Any:
    """A CEL result (as cel-expr-python's plain Python values) as JSON-compatible Python.

    Timestamps become RFC 3339 text in UTC (`2024-01-01T00:00:00Z`), durations seconds
    with an `s` suffix (`90s`), bytes UTF-8 text, types their CEL name; map keys text.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime):
        utc = value.astimezone(datetime.UTC) if value.tzinfo else value
        return utc.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {_key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, cel.Type):
        return value.name().lower()
    return value


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(to_json(key))


_STATUS = re.compile(r"^[A-Z_]+: ")
_STATUS_TAIL = re.compile(r"\s*\[[A-Z_]+\]$")
_SYNTAX = re.compile(r"^ERROR: <input>:(?P<line>\d+):(?P<column>\d+): (?P<problem>.*)$")
_NO_VALUE = re.compile(r'^No value with name "(?P<name>[^"]*)" found in Activation$')
_NO_KEY = re.compile(r"^Key not found in map ?: ?(?P<key>.*)$")
_NO_INDEX = re.compile(r"^Index error: index=(?P<index>-?\d+) size=(?P<size>\d+)$")
_NO_OVERLOAD = re.compile(r"^No matching overloads? found ?: ?(?P<call>.*)$")


def _compile_problem(message: str) -> str:
    """cel-cpp's parser message, as `syntax error at LINE:COLUMN: what` (first error only)."""
    text = _STATUS_TAIL.sub("", _STATUS.sub("", message.strip()))
    first = _first_line(text)
    match = _SYNTAX.match(first)
    if not match:
        return f"does not compile: {first}"
    problem = match["problem"].removeprefix("Syntax error: ")
    kind = "syntax error" if match["problem"].startswith("Syntax error") else "does not compile"
    return f"{kind} at {match['line']}:{match['column']}: {problem}"


def _runtime_problem(message: str) -> str:
    """cel-cpp's evaluation error in CEL's words, without the status code it travels in."""
    text = _first_line(_STATUS_TAIL.sub("", _STATUS.sub("", message.strip())))
    if match := _NO_VALUE.match(text):
        return f"undeclared reference to '{match['name']}' (no such variable here)"
    if match := _NO_OVERLOAD.match(text):
        call = match["call"].replace("int64", "int").replace("uint64", "uint")
        return f"no matching overload for {call}"
    if text == "Iteration budget exceeded":
        return (
            f"exceeded the budget of {ITERATION_BUDGET} comprehension iterations "
            "(a runaway comprehension?)"
        )
    if match := _NO_KEY.match(text):
        return f"no such key: {match['key']}"
    if match := _NO_INDEX.match(text):
        return f"index out of range: index {match['index']}, size {match['size']}"
    if text == "Applying SELECT to non-message type":
        return "no such field: selecting a field of a value that is not a map"
    return text


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
