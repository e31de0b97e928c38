"""CEL expressions in workflow values: `${ expr }` alone is the value, inside text it interpolates.

CEL is the language Kubernetes itself uses for validation rules. Programs are compiled
once and cached by their source text.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

TIME_BUDGET = float(os.environ.get("KURABLE_EXPRESSION_SECONDS", "1.0"))
"""Seconds an expression with comprehensions may take before its step fails."""
SIZE_BUDGET = int(os.environ.get("KURABLE_EXPRESSION_BYTES", str(1024 * 1024)))
"""Largest result (as JSON) an expression may produce."""
_MACRO = re.compile(r"\.\s*(map|filter|all|exists|exists_one)\s*\(")
_BUDGET_POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kurable-cel")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHOLE = re.compile(r"^\s*\$\{(?P<expr>.*)\}\s*$", re.DOTALL)
_ENV = celpy.Environment()


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
def compile_expression(source: str) -> celpy.Runner:
    """Compile a CEL program once; raise ExpressionError with the parser's complaint."""
    try:
        return _ENV.program(_ENV.compile(source))
    except CELParseError as e:
        raise ExpressionError(source, f"syntax error: {_first_line(str(e))}") from None
    except Exception as e:  # the compiler raises a handful of types for bad programs
        raise ExpressionError(source, f"does not compile: {_first_line(str(e))}") from None


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one CEL expression over JSON `context`; return a JSON value."""
    program = compile_expression(source.strip())
    # Converting JSON to CEL values is most of the cost: convert only the variables
    # the expression names (a name it does not mention cannot be reached).
    names = _identifiers(source)
    activation = {k: json_to_cel(v) for k, v in context.items() if k in names}
    try:
        if _MACRO.search(source):
            result = _with_budget(source.strip(), program, activation)
        else:  # without comprehensions, evaluation is bounded by the expression's size
            result = program.evaluate(activation)
    except ExpressionError:
        raise
    except CELEvalError as e:
        raise ExpressionError(source.strip(), _eval_problem(e)) from None
    except Exception as e:
        raise ExpressionError(source.strip(), f"{type(e).__name__}: {e}") from None
    if isinstance(result, CELEvalError):
        raise ExpressionError(source.strip(), _eval_problem(result))
    value = to_json(result)
    size = len(json.dumps(value, default=str))
    if size > SIZE_BUDGET:
        raise ExpressionError(
            source.strip(), f"result of {size} bytes exceeds the budget of {SIZE_BUDGET}"
        )
    return value


def _with_budget(source: str, program: celpy.Runner, activation: dict[str, Any]) -> Any:
    """Evaluate in a worker thread and give up after TIME_BUDGET seconds.

    A runaway comprehension (`[1..n].map(...)` nested deeply) fails its step instead
    of holding the operator's event loop; the abandoned evaluation ends on its own
    (CEL always terminates) on one of at most two worker threads.
    """
    future = _BUDGET_POOL.submit(program.evaluate, activation)
    try:
        return future.result(timeout=TIME_BUDGET)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise ExpressionError(
            source, f"exceeded its time budget of {TIME_BUDGET:g}s (a runaway comprehension?)"
        ) from None


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
    """A CEL value as plain JSON-compatible Python."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, (celtypes.IntType, celtypes.UintType)):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.BytesType):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, celtypes.TimestampType):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, celtypes.DurationType):
        return f"{value.total_seconds():g}s"
    if isinstance(value, Mapping):
        return {str(to_json(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, celtypes.NullType):
        return None
    return value


def _eval_problem(error: CELEvalError) -> str:
    args = error.args
    if len(args) >= 2 and isinstance(args[1], type):
        return f"{args[0]} ({args[1].__name__})"
    return _first_line(str(args[0]) if args else str(error))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
