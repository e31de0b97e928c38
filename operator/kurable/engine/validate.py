"""One eager validator for workflow definitions (the sibling of `entities.definition_problems`).

A definition is checked once, before anything runs: when a WorkflowTemplate is applied
and when a run starts. The CRD cannot see inside nested steps (a parallel branch's
steps, a compensation: free-form objects there, because CRD schemas cannot recurse),
so everything the API server checks at the top level is checked here at every depth,
and more:

- every step, at any depth, parses into the `Step` model (unknown fields, wrong types);
- every step has exactly one action, and one that this operator performs;
- every CEL expression compiles, wherever it stands (`when`, `set`, `forEach.items`,
  `sleep.until`, the actions' evaluated fields, compensations, `output`);
- every `next` and `onFailure.goto` names a step of its own scope: a jump moves within
  one list of steps (the run's, or one branch's), as `decide.child_scopes` runs them;
- durations parse, literal `sleep.until` timestamps carry a UTC offset (the CRD's rule);
- `wait.signal` names fit the annotation `kurable.dev/signal.NAME` (the CRD's rule);
- a template's `inputSchema` is a schema of the one dialect (`engine.schema`);
- fields that do nothing are refused rather than silently ignored;
- keys `"true"`/`"false"` in every free-form JSON value (`set`, `input`, `output`,
  `http.body`, compensations', branches' and entity types' values alike, found by one walk
  over the model: `free_form_values`) and in schema `properties` are refused: they are
  YAML 1.1's reading of an unquoted `y`/`n`/`yes`/`no`/`on`/`off`.

Every problem is reported, each as a path and what to fix, e.g.
`spec.steps[2].parallel.branches[0].steps[0].sleep: unknown field durationn`.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kurable.api.v1alpha1 import Step, WorkflowSpec, WorkflowTemplateSpec, parse_duration
from kurable.api.v1alpha1.workflow import (
    ACTIONS,
    SIGNAL_NAME_MAX_LENGTH,
    SIGNAL_NAME_MESSAGE,
    SIGNAL_NAME_PATTERN,
    TIMESTAMP_PATTERN,
    UNTIL_MESSAGE,
    Backoff,
    Retry,
)

from . import expressions, schema

PERFORMED = frozenset(
    {"set", "sleep", "wait", "parallel", "http", "workflow", "entity", "emit", "view"}
)
"""Step kinds a run performs: the engine's own (set, sleep, wait, parallel) and the
executor's actions (http, workflow, entity, emit, view). `job` is declared by the
API but not performed yet."""

MAX_MESSAGE_PROBLEMS = 50
"""Problems spelled out in one message (status conditions should stay small)."""

_WHOLE = re.compile(r"^\s*\$\{(?P<expr>.*)\}\s*$", re.DOTALL)
_SIGNAL_NAME = re.compile(SIGNAL_NAME_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_YAML11 = {"true": "y, yes or on", "false": "n, no or off"}
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (`spec.steps[0].sleep`) and what to fix."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDefinition(ValueError):
    """A definition with problems; `problems` lists every one, the message joins them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(describe(self.problems))


def describe(problems: Iterable[Problem]) -> str:
    """The problems as one message: `path: problem; path: problem` (at most 50 spelled out)."""
    listed = [str(p) for p in problems]
    if len(listed) > MAX_MESSAGE_PROBLEMS:
        more = len(listed) - MAX_MESSAGE_PROBLEMS
        listed = [*listed[:MAX_MESSAGE_PROBLEMS], f"and {more} more"]
    return "; ".join(listed)


# -- the public entry points --------------------------------------------------------------


def parse_workflow(spec: Mapping[str, Any], root: str = "spec") -> WorkflowSpec:
    """A Workflow's spec parsed to its nested steps and checked; raise InvalidDefinition.

    Inline steps are checked whole; a `templateRef` run's steps are checked when the
    template is resolved (`definition_problems` on the resolved definition).
    """
    definition = _parse_salvaging(WorkflowSpec, spec, root)
    problems = definition_problems(definition, root)
    if problems:
        raise InvalidDefinition(problems)
    return definition


def parse_template(spec: Mapping[str, Any], root: str = "spec") -> WorkflowTemplateSpec:
    """A WorkflowTemplate's spec parsed to its nested steps and checked; raise InvalidDefinition."""
    definition = _parse_salvaging(WorkflowTemplateSpec, spec, root)
    problems = definition_problems(definition, root)
    if problems:
        raise InvalidDefinition(problems)
    return definition


def workflow_problems(spec: Mapping[str, Any], root: str = "spec") -> list[Problem]:
    """Every problem of a Workflow's spec (empty when it is valid)."""
    try:
        parse_workflow(spec, root)
    except InvalidDefinition as e:
        return list(e.problems)
    return []


def template_problems(spec: Mapping[str, Any], root: str = "spec") -> list[Problem]:
    """Every problem of a WorkflowTemplate's spec (empty when it is valid)."""
    try:
        parse_template(spec, root)
    except InvalidDefinition as e:
        return list(e.problems)
    return []


def model_problems(error: ValidationError, root: str = "") -> list[Problem]:
    """pydantic's errors as problems with field paths (`steps[0].sleep: unknown field x`)."""
    problems = []
    for e in error.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden" and loc:
            problems.append(Problem(_path(root, loc[:-1]), f"unknown field {loc[-1]}"))
        elif e["type"] == "missing" and loc:
            problems.append(Problem(_path(root, loc[:-1]), f"missing field {loc[-1]}"))
        else:
            problems.append(Problem(_path(root, loc), e["msg"]))
    return problems


def definition_problems(
    definition: WorkflowSpec | WorkflowTemplateSpec, root: str = "spec"
) -> list[Problem]:
    """Every problem of a parsed definition: actions, expressions, jump targets, durations,
    fields that do nothing, YAML 1.1 boolean keys. Empty when the definition is valid."""
    check = _Checks()
    check.scope(definition.steps or [], f"{root}.steps", "the run's steps")
    check.expressions(definition.output, f"{root}.output")
    check.retry(definition.retry, f"{root}.retry")
    check.duration(definition.timeout, f"{root}.timeout")
    check.problems += model_boolean_keys(definition, root)
    if isinstance(definition, WorkflowTemplateSpec) and definition.input_schema is not None:
        # A YAML 1.1 key explains the schema's other complaints (`required: [false]`).
        where = f"{root}.inputSchema"
        check.problems += schema_boolean_keys(definition.input_schema, where) or [
            Problem("", p) for p in schema.check_schema(definition.input_schema, where)
        ]
    return check.problems


def boolean_keys(value: Any, path: str) -> list[Problem]:
    """Keys `"true"`/`"false"` anywhere in a JSON value: YAML 1.1 read an unquoted key."""
    problems = []
    for where, key in _keys(value, path):
        if key in _YAML11:
            problems.append(Problem(where, _yaml11_message(key)))
    return problems


def model_boolean_keys(model: BaseModel, path: str) -> list[Problem]:
    """`boolean_keys` of every free-form JSON value of a parsed definition (see
    `free_form_values`): one walk, so a field added to the API is checked too."""
    problems: list[Problem] = []
    for value, where in free_form_values(model, path):
        problems += boolean_keys(value, where)
    return problems


def free_form_values(model: BaseModel, path: str) -> Iterator[tuple[Any, str]]:
    """(value, path) of every JSON object or list a definition carries as data rather
    than as API fields (`set`, `input`, `http.body`, an entity's `reply`...), at any depth
    of the model: nested steps, branches, compensations, maps of models. Schemas
    (fields named `...Schema`) are left out: `schema_boolean_keys` reads them."""
    for name, field in type(model).model_fields.items():
        alias = field.alias or name
        if alias.endswith("Schema"):
            continue
        yield from _free_form(getattr(model, name), f"{path}.{alias}")


def _free_form(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, BaseModel):
        yield from free_form_values(value, path)
    elif isinstance(value, list):
        if any(isinstance(item, BaseModel) for item in value):
            for i, item in enumerate(value):
                yield from _free_form(item, f"{path}[{i}]")
        elif value:
            yield value, path
    elif isinstance(value, Mapping):
        if any(isinstance(item, BaseModel) for item in value.values()):
            for key, item in value.items():
                yield from _free_form(item, f"{path}.{key}")
        elif value:
            yield value, path


def schema_boolean_keys(schema: Any, path: str) -> list[Problem]:
    """YAML 1.1 booleans where a schema names fields: `properties` keys, `required` items."""
    problems: list[Problem] = []
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            where = f"{path}.{key}"
            if key == "properties" and isinstance(value, Mapping):
                for name, sub in value.items():
                    if name in _YAML11:
                        problems.append(Problem(f"{where}.{name}", _yaml11_message(name)))
                    problems += schema_boolean_keys(sub, f"{where}.{name}")
            elif key == "required" and isinstance(value, list):
                for i, name in enumerate(value):
                    if isinstance(name, bool) or name in _YAML11:
                        problems.append(
                            Problem(f"{where}[{i}]", _yaml11_message(str(name).lower()))
                        )
            else:
                problems += schema_boolean_keys(value, where)
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            problems += schema_boolean_keys(item, f"{path}[{i}]")
    return problems


# -- the checks ---------------------------------------------------------------------------


class _Checks:
    """Collects problems while walking a parsed definition."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def scope(self, steps: Sequence[Step], path: str, scope: str) -> None:
        """One list of steps: names unique, jumps inside it, each step checked."""
        names = [s.name for s in steps]
        for i, name in enumerate(names):
            if name in names[:i]:
                self.add(f"{path}[{i}].name", f"duplicate step name {name!r} in {scope}")
        for i, step in enumerate(steps):
            self.step(step, f"{path}[{i}]", set(names), scope)

    def step(self, step: Step, path: str, names: set[str], scope: str) -> None:
        if not self.action(step, path):
            return
        self.condition(step.when, f"{path}.when")
        on_failure = step.on_failure.goto if step.on_failure is not None else None
        for goto, field in ((step.next, "next"), (on_failure, "onFailure.goto")):
            if goto is not None and goto not in names:
                self.add(
                    f"{path}.{field}",
                    f"no step named {goto!r} in {scope} (a jump stays within its list of steps)",
                )
        if step.for_each is not None:
            items = step.for_each.items
            if _WHOLE.match(items) is None:
                self.add(
                    f"{path}.forEach.items",
                    f"must be a ${{ }} expression giving a list, got {items!r}",
                )
            self.expressions(items, f"{path}.forEach.items")
            if step.parallel is not None:
                self.add(
                    f"{path}.forEach",
                    "forEach on a parallel step does nothing (the branches run once); "
                    "remove forEach or the parallel",
                )
        self.duration(step.timeout, f"{path}.timeout")
        self.retry(step.retry, f"{path}.retry")
        self.action_fields(step, path)
        if step.compensate is not None:
            self.compensation(step.compensate, f"{path}.compensate")

    def action(self, step: Step, path: str) -> bool:
        """Exactly one action, and one that is performed."""
        present = [a for a in ACTIONS if getattr(step, a) is not None]
        if len(present) != 1:
            found = ", ".join(present) if present else "none"
            self.add(
                path, f"a step needs exactly one action of {', '.join(ACTIONS)}; found {found}"
            )
            return False
        if present[0] not in PERFORMED:
            self.add(
                f"{path}.{present[0]}",
                f"step kind {present[0]!r} is not performed by this operator version yet "
                f"(performed: {', '.join(sorted(PERFORMED))})",
            )
        return True

    def action_fields(self, step: Step, path: str) -> None:
        if step.set is not None:
            self.expressions(step.set, f"{path}.set")
        if step.sleep is not None:
            where = f"{path}.sleep"
            sleep = step.sleep
            if (sleep.duration is None) == (sleep.until is None):
                self.add(where, "sleep needs exactly one of duration or until")
            self.duration(sleep.duration, f"{where}.duration")
            if sleep.until is not None:
                if expressions.is_expression(sleep.until):
                    self.expressions(sleep.until, f"{where}.until")
                else:
                    self.timestamp(sleep.until, f"{where}.until")
        if step.wait is not None:
            self.signal_name(step.wait.signal, f"{path}.wait.signal")
            self.duration(step.wait.timeout, f"{path}.wait.timeout")
        if step.http is not None:
            where = f"{path}.http"
            self.expressions(step.http.url, f"{where}.url")
            for i, header in enumerate(step.http.headers or []):
                if (header.value is None) == (header.value_from is None):
                    self.add(f"{where}.headers[{i}]", "a header needs value or valueFrom")
                self.expressions(header.value, f"{where}.headers[{i}].value")
            self.expressions(step.http.body, f"{where}.body")
            self.duration(step.http.timeout, f"{where}.timeout")
        if step.workflow is not None:
            where = f"{path}.workflow"
            self.not_evaluated(step.workflow.template_ref.name, f"{where}.templateRef.name")
            self.expressions(step.workflow.input, f"{where}.input")
        if step.entity is not None:
            where = f"{path}.entity"
            self.expressions(step.entity.name, f"{where}.name")
            self.expressions(step.entity.input, f"{where}.input")
        if step.parallel is not None:
            where = f"{path}.parallel.branches"
            branches = step.parallel.branches
            seen: set[str] = set()
            for j, branch in enumerate(branches):
                if branch.name in seen:
                    self.add(f"{where}[{j}].name", f"duplicate branch name {branch.name!r}")
                seen.add(branch.name)
                self.scope(branch.steps, f"{where}[{j}].steps", f"branch {branch.name!r}'s steps")

    def compensation(self, undo: Step, path: str) -> None:
        """A compensation runs alone, once its step is to be undone: no jumps, no fan-out."""
        if not self.action(undo, path):
            return
        if undo.parallel is not None:
            self.add(f"{path}.parallel", "a compensation cannot be a parallel step; use one action")
        if "name" in undo.model_fields_set:
            self.add(f"{path}.name", "does nothing: a compensation is named <step>:compensate")
        for field, alias in (
            ("when", "when"),
            ("next", "next"),
            ("on_failure", "onFailure"),
            ("for_each", "forEach"),
            ("compensate", "compensate"),
        ):
            if getattr(undo, field) is not None:
                self.add(f"{path}.{alias}", "does nothing in a compensation; remove it")
        self.duration(undo.timeout, f"{path}.timeout")
        self.retry(undo.retry, f"{path}.retry")
        if undo.parallel is None:
            self.action_fields(undo, path)

    def condition(self, source: str | None, path: str) -> None:
        """`when`: bare (`a > 1`) or wrapped (`${ a > 1 }`), as `expressions.condition` reads it."""
        if source is None:
            return
        whole = _WHOLE.match(source)
        try:
            expressions.compile_expression((whole.group("expr") if whole else source).strip())
        except expressions.ExpressionError as e:
            self.add(path, f"expression {e.expression!r}: {e.problem}")

    def expressions(self, value: Any, path: str) -> None:
        """Compile every `${ }` in a JSON value; one problem per bad string."""
        for where, text in _strings(value, path):
            try:
                expressions.check(text)
            except expressions.ExpressionError as e:
                self.add(where, f"expression {e.expression!r}: {e.problem}")

    def not_evaluated(self, value: str, path: str) -> None:
        if expressions.is_expression(value):
            self.add(path, f"expressions are not evaluated here; write the name itself ({value!r})")

    def duration(self, text: str | None, path: str) -> None:
        if text is None:
            return
        try:
            parse_duration(text)
        except ValueError as e:
            self.add(path, str(e))

    def retry(self, retry: Retry | None, path: str) -> None:
        if retry is None or retry.backoff is None:
            return
        backoff: Backoff = retry.backoff
        self.duration(backoff.initial, f"{path}.backoff.initial")
        self.duration(backoff.max, f"{path}.backoff.max")

    def signal_name(self, name: str, path: str) -> None:
        """The CRD's rule on `wait.signal`, which it can apply only at the top level."""
        if len(name) > SIGNAL_NAME_MAX_LENGTH or _SIGNAL_NAME.fullmatch(name) is None:
            self.add(path, f"{name!r}: {SIGNAL_NAME_MESSAGE}")

    def timestamp(self, text: str, path: str) -> None:
        """The CRD's rule on a literal `sleep.until` (which it applies only at the top
        level), and a date that exists."""
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.add(path, f"{text!r} is not an RFC 3339 timestamp (e.g. 2030-01-01T00:00:00Z)")
            return
        if moment.tzinfo is None:
            self.add(
                path,
                f"{text!r} has no UTC offset; add one (e.g. {text}Z), as Kubernetes timestamps do",
            )
        elif _TIMESTAMP.fullmatch(text) is None:
            self.add(path, f"{text!r}: {UNTIL_MESSAGE}")


# -- helpers ------------------------------------------------------------------------------


_D = TypeVar("_D", WorkflowSpec, WorkflowTemplateSpec)


def _parse_salvaging(model: type[_D], spec: Mapping[str, Any], root: str) -> _D:
    """`spec` parsed, or InvalidDefinition with every problem: when some steps do not
    parse, the others are still checked whole (each unparsable top-level step stands in
    as an empty `set` of the same name, so jumps to it are not reported as missing)."""
    try:
        return _parse(model, spec, root)
    except InvalidDefinition as e:
        problems = list(e.problems)
    raw_steps = spec.get("steps")
    if isinstance(raw_steps, list):
        salvaged = dict(spec, steps=[_parsable_or_stand_in(raw) for raw in raw_steps])
        try:
            rest = model.model_validate(salvaged)
        except ValidationError:
            pass  # the problem is outside the steps: what pydantic said is all there is
        else:
            problems += [p for p in definition_problems(rest, root) if p not in problems]
    raise InvalidDefinition(problems)


def _parsable_or_stand_in(raw: Any) -> Any:
    try:
        Step.model_validate(raw)
    except ValidationError:
        name = raw.get("name") if isinstance(raw, Mapping) else None
        return {"name": name if isinstance(name, str) else "unparsable", "set": {}}
    return raw


def _parse(model: type[_M], spec: Mapping[str, Any], root: str) -> _M:
    try:
        return model.model_validate(dict(spec))
    except ValidationError as e:
        problems = model_problems(e, root)
        raise InvalidDefinition(problems) from None


def _path(root: str, loc: Iterable[Any]) -> str:
    """`spec.steps[0].sleep` from ("steps", 0, "sleep")."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")


def _keys(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _keys(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}.{key}", str(key)
            yield from _keys(item, f"{path}.{key}")


def _yaml11_message(key: str) -> str:
    return (
        f"{key!r} is how YAML 1.1 (kubectl's reader) reads an unquoted {_YAML11[key]}; "
        f'quote the key (e.g. "{_YAML11[key][0]}": ...) if you meant a name'
    )
