"""Entities, decided purely: a command against a state gives events, a new state and a reply.

No I/O here. A command to an EntityType whose definition has problems is refused
first (`TypeInvalid`, `type_problems`). `decide` runs one command of an EntityType
through its steps:

1. the command must exist (`UnknownCommand`);
2. its input must fit `inputSchema` (`InvalidInput`);
3. its guards must hold, checked in order (`GuardFailed`, naming the guard and its rule);
4. its `emit` list is rendered over the current `state` and `input`;
5. each event is applied with `events.<type>.set` (CEL over `state` and `event`, the
   event's data) to give the new state;
6. the new state must fit `stateSchema` (`InvalidState`);
7. `reply` is rendered over the *new* state and the input.

Before an accepted command is committed, `check_commit_size` holds it to the journal's
size limit (`ValueTooLarge`, nothing applied): each event's data and the reply, and the
whole commit (events written twice, the new state, the reply: one etcd request).

An expression that fails to evaluate in steps 3-7 is a fault of the definition,
reported as `HandlerError` with the place it failed. `replay` folds stored events
into a state with the same event handlers, so the log and the snapshot agree.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from kurable.api.v1alpha1 import EntityStatus, EntityTypeSpec

from . import expressions, schema, sizes, validate
from .conditions import updated_condition
from .messages import EXCERPT_LIMIT, one_line

RejectionReason = Literal[
    "TypeInvalid",
    "UnknownCommand",
    "InvalidInput",
    "GuardFailed",
    "InvalidState",
    "HandlerError",
    "ValueTooLarge",
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)
STATUS_STATE_LIMIT = 4096
"""Status shows the state when its JSON is at most this many bytes; etcd keeps it whole."""


class CommandRejected(Exception):
    """A command that changes nothing, with the reason and a message naming the rule."""

    def __init__(self, reason: RejectionReason, message: str) -> None:
        self.reason: RejectionReason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")

    def to_json(self) -> dict[str, Any]:
        """The rejection as stored in a dedup record."""
        return {"reason": self.reason, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommandRejected:
        """The rejection a dedup record holds."""
        stored = data.get("reason")
        reason: RejectionReason = next(
            (r for r in REJECTION_REASONS if r == stored), "HandlerError"
        )
        return cls(reason, str(data.get("message", "")))


class CommandConflict(Exception):
    """A command id reused for a different command or input: nothing was applied.

    An id names one request (the IETF idempotency-key draft's rule): a retry must send
    the same command with the same input, and gets the first answer; anything else under
    the same id is refused (an HTTP endpoint answers 409 Conflict). `differs` says what
    differs: ("command",) or ("input",).
    """

    def __init__(self, command_id: str, differs: Sequence[str], message: str) -> None:
        self.command_id = command_id
        self.differs = tuple(differs)
        self.message = message
        super().__init__(message)


def command_fingerprint(command: str, input: Any) -> str:
    """The sha256 (hex) of the canonical JSON of `{command, input}`: what a command id
    stands for. Canonical: keys sorted, no spaces, `None` input as `{}`, and a number
    with an integral value as an integer (`10.0` and `10` are one input, as in CEL)."""
    canonical = json.dumps(
        {"command": command, "input": _canonical({} if input is None else input)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_same_command(
    record: Mapping[str, Any], command_id: str, command: str, input: Any
) -> None:
    """Raise CommandConflict unless `command` with `input` is what the dedup `record` of
    `command_id` was written for. Records without a fingerprint (written before
    fingerprints existed) are trusted when the command's name matches."""
    recorded_command = record.get("command")
    differs = []
    if recorded_command is not None and recorded_command != command:
        differs.append("command")
    fingerprint = record.get("fingerprint")
    if (
        fingerprint is not None
        and not differs
        and fingerprint != command_fingerprint(command, input)
    ):
        differs.append("input")
    if not differs:
        return
    what = (
        f"command {recorded_command!r}, not {command!r}"
        if differs == ["command"]
        else f"command {command!r} with a different input"
    )
    raise CommandConflict(
        command_id,
        differs,
        f"command id {command_id!r} was already used for {what}: an id names one request, "
        "and a retry must send the same command and input (to send another command, "
        "use a new id)",
    )


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


class EventNotApplicable(Exception):
    """A stored event the EntityType can no longer apply (its handler was removed or fails)."""


@dataclass(frozen=True)
class Event:
    """An event a command emitted: its type (declared under `events`) and its data."""

    type: str
    data: Any = None


@dataclass(frozen=True)
class CommandAccepted:
    """An accepted command: the events to append, the state after them, and the reply."""

    events: tuple[Event, ...]
    state: dict[str, Any]
    reply: Any


@dataclass(frozen=True)
class Snapshot:
    """An entity's current state as etcd keeps it: the state, its version, the last event."""

    state: dict[str, Any]
    version: int = 0
    """How many events have been applied."""
    last_event: dict[str, Any] | None = None
    """`{type, at, version}` of the last event, None before the first."""

    def to_json(self) -> dict[str, Any]:
        """The snapshot as stored in etcd."""
        return {"state": self.state, "version": self.version, "lastEvent": self.last_event}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """A snapshot read from etcd."""
        return cls(
            state=dict(data.get("state") or {}),
            version=int(data.get("version", 0)),
            last_event=data.get("lastEvent"),
        )


def check_commit_size(accepted: CommandAccepted, command: str, limit: int) -> None:
    """Raise CommandRejected(`ValueTooLarge`) when `accepted` is too large to commit: an
    event's data or the reply over `limit` bytes of JSON (kurable.engine.sizes), or the
    commit's writes together (each event twice: the entity's log and its type's stream;
    the new state; the reply) over `limit`, so that the one etcd request that commits a
    command stays within etcd's limit."""
    for event in accepted.events:
        problem = sizes.size_problem(
            event.data, limit, f"the data of event {event.type!r} of command {command!r}"
        )
        if problem:
            raise CommandRejected("ValueTooLarge", f"{problem}; nothing was applied")
    problem = sizes.size_problem(accepted.reply, limit, f"the reply of command {command!r}")
    if problem:
        raise CommandRejected("ValueTooLarge", f"{problem}; nothing was applied")
    events = sum(sizes.encoded_size(e.data) for e in accepted.events)
    state = sizes.encoded_size(accepted.state)
    reply = sizes.encoded_size(accepted.reply)
    total = 2 * events + state + reply
    if total > limit:
        raise CommandRejected(
            "ValueTooLarge",
            f"command {command!r} would write {total} bytes in one commit (its events "
            f"{events} bytes twice, for the entity's log and its type's stream; the new "
            f"state {state} bytes; the reply {reply} bytes), over the limit of {limit} bytes; "
            f"make the events or the state smaller, or raise the limit with "
            f"{sizes.LIMIT_SETTING} (and etcd's --max-request-bytes with it); nothing was "
            "applied",
        )


def usable_type(entity_type: EntityTypeSpec | Mapping[str, Any]) -> EntityTypeSpec:
    """The definition commands run against; raise CommandRejected(TypeInvalid) when the
    EntityType is not usable, saying why.

    `entity_type` is the EntityType object (`{metadata, spec, status}` as the API server
    returns it), its spec as a mapping, or a parsed EntityTypeSpec. An object whose status
    says `Invalid` for its current generation is refused with its status message; when
    status has not caught up with the spec (or there is none), the definition is checked
    here (`definition_problems`), so an edit that broke the type is refused at once.
    """
    if isinstance(entity_type, EntityTypeSpec):
        return _checked_definition(entity_type, "the EntityType")
    if "kind" not in entity_type and "metadata" not in entity_type:
        return _checked_definition(_parsed(entity_type, "the EntityType"), "the EntityType")
    meta = entity_type.get("metadata") or {}
    status = entity_type.get("status") or {}
    name = f"EntityType {meta.get('name', '?')}"
    spec = _parsed(entity_type.get("spec") or {}, name)
    current = status.get("observedGeneration") is not None and status.get(
        "observedGeneration"
    ) == meta.get("generation")
    if current and status.get("phase") == "Invalid":
        raise CommandRejected(
            "TypeInvalid",
            f"{name} is Invalid: {status.get('message') or 'see its status'}; "
            "fix its definition and send the command again",
        )
    if current and status.get("phase") == "Valid":
        return spec
    return _checked_definition(spec, name)


def _parsed(spec: Mapping[str, Any], name: str) -> EntityTypeSpec:
    try:
        return EntityTypeSpec.model_validate(spec)
    except ValidationError as e:
        problems = "; ".join(str(p) for p in validate.model_problems(e, "spec"))
        raise CommandRejected(
            "TypeInvalid", f"{name} is Invalid: {problems}; fix its definition"
        ) from None


def _checked_definition(spec: EntityTypeSpec, name: str) -> EntityTypeSpec:
    problems = definition_problems(spec)
    if problems:
        raise CommandRejected(
            "TypeInvalid", f"{name} is Invalid: {'; '.join(problems[:5])}; fix its definition"
        )
    return spec


def decide(
    entity_type: EntityTypeSpec, state: Mapping[str, Any], command: str, input: Any
) -> CommandAccepted:
    """Run `command` with `input` against `state`; raise CommandRejected when it is refused."""
    spec = entity_type.commands.get(command)
    if spec is None:
        known = ", ".join(sorted(entity_type.commands)) or "none"
        raise CommandRejected("UnknownCommand", f"no command {command!r} (known: {known})")
    if spec.handler is not None:
        raise CommandRejected(
            "HandlerError",
            f"command {command!r} is decided by an HTTP handler: use decide_answered "
            "with the handler's answer",
        )
    input = checked_input(entity_type, command, input)
    context = {"state": dict(state), "input": input}
    for index, guard in enumerate(spec.guards or [], start=1):
        where = f"guard {index} ({guard.rule.strip()})"
        try:
            holds = expressions.condition(guard.rule, context)
        except expressions.ExpressionError as e:
            raise CommandRejected("HandlerError", f"{where}: {e}") from None
        if not holds:
            raise CommandRejected("GuardFailed", f"{where}: {_guard_message(guard, context)}")
    events = []
    for index, emitted in enumerate(spec.emit or []):
        try:
            data = expressions.render(emitted.data, context, f"emit[{index}].data")
        except expressions.ExpressionError as e:
            raise CommandRejected("HandlerError", f"command {command!r}: {e}") from None
        events.append(Event(emitted.type, data))
    new_state = _applied(entity_type, command, state, events)
    try:
        reply = expressions.render(spec.reply, {"state": new_state, "input": input}, "reply")
    except expressions.ExpressionError as e:
        raise CommandRejected("HandlerError", f"command {command!r}: {e}") from None
    return CommandAccepted(tuple(events), new_state, reply)


def handler_of(entity_type: EntityTypeSpec, command: str) -> str | None:
    """The URL of the HTTP handler that decides `command`, if one does."""
    spec = entity_type.commands.get(command)
    return spec.handler.http.url if spec is not None and spec.handler is not None else None


def checked_input(entity_type: EntityTypeSpec, command: str, input: Any) -> Any:
    """`input` (None as {}) if it fits the command's inputSchema; else CommandRejected."""
    spec = entity_type.commands.get(command)
    if spec is None:
        known = ", ".join(sorted(entity_type.commands)) or "none"
        raise CommandRejected("UnknownCommand", f"no command {command!r} (known: {known})")
    input = {} if input is None else input
    if spec.input_schema is not None:
        problems = schema.validate(spec.input_schema, input, "input")
        if problems:
            raise CommandRejected("InvalidInput", "; ".join(problems))
    return input


def decide_answered(
    entity_type: EntityTypeSpec, state: Mapping[str, Any], command: str, answer: Any
) -> CommandAccepted:
    """A command decided by an HTTP handler: check its answer `{events, reply}` (or
    `{error}`), apply the events with the type's own event handlers, check the state."""
    where = f"the handler of {command!r}"
    if not isinstance(answer, Mapping):
        raise CommandRejected(
            "HandlerError",
            f"{where} answered {one_line(repr(answer), EXCERPT_LIMIT)}, not an object",
        )
    if answer.get("error"):
        raise CommandRejected(
            "HandlerError", f"{where} refused: {one_line(answer['error'], EXCERPT_LIMIT)}"
        )
    raw = answer.get("events") or []
    if not isinstance(raw, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("type"), str) for e in raw
    ):
        raise CommandRejected("HandlerError", f"{where}: events must be [{{type, data}}, ...]")
    events = [Event(e["type"], e.get("data")) for e in raw]
    new_state = _applied(entity_type, command, state, events)
    return CommandAccepted(tuple(events), new_state, answer.get("reply"))


def _applied(
    entity_type: EntityTypeSpec, command: str, state: Mapping[str, Any], events: list[Event]
) -> dict[str, Any]:
    """The state after `events`, checked against the stateSchema."""
    new_state: dict[str, Any] = dict(state)
    for event in events:
        try:
            new_state = apply_event(entity_type, new_state, event)
        except EventNotApplicable as e:
            raise CommandRejected("HandlerError", f"command {command!r}: {e}") from None
    problems = schema.validate(entity_type.state_schema, new_state, "state")
    if problems:
        raise CommandRejected(
            "InvalidState",
            f"command {command!r} would leave the state invalid: " + "; ".join(problems),
        )
    return new_state


def apply_event(
    entity_type: EntityTypeSpec, state: Mapping[str, Any], event: Event
) -> dict[str, Any]:
    """The state after `event`: each `set` field is evaluated over the state before it."""
    handler = entity_type.events.get(event.type)
    if handler is None:
        raise EventNotApplicable(f"event type {event.type!r} has no handler under events")
    context = {"state": dict(state), "event": event.data}
    try:
        changes = expressions.render(handler.set, context, f"events.{event.type}.set")
    except expressions.ExpressionError as e:
        raise EventNotApplicable(str(e)) from None
    return {**state, **changes}


def replay(
    entity_type: EntityTypeSpec, initial_state: Mapping[str, Any], events: Iterable[Event]
) -> dict[str, Any]:
    """The state after applying `events` in order to `initial_state`."""
    state = dict(initial_state)
    for event in events:
        state = apply_event(entity_type, state, event)
    return state


def initial_state(entity_type: EntityTypeSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The state an entity starts in; raise CommandRejected(InvalidState) when it does not fit."""
    state = dict(given or {})
    problems = schema.validate(entity_type.state_schema, state, "spec.initialState")
    if problems:
        raise CommandRejected(
            "InvalidState", "initialState does not fit the stateSchema: " + "; ".join(problems)
        )
    return state


def state_problems(entity_type: EntityTypeSpec, state: Any) -> list[str]:
    """Why `state` does not fit the type's stateSchema (empty when it does)."""
    return schema.validate(entity_type.state_schema, state, "state")


COMMAND_VARIABLES = ("state", "input")
"""What a command's guards, emitted event data and reply may read."""
EVENT_VARIABLES = ("state", "event")
"""What an event handler's `set` may read: the state before the event, and `event`, the
event's data (the command's rendered `emit[].data`)."""


def definition_problems(entity_type: EntityTypeSpec) -> list[str]:
    """Everything wrong with an EntityType, each naming the command or field to fix.

    Besides schemas and syntax: every expression may read only the variables of its
    place (`COMMAND_VARIABLES`, `EVENT_VARIABLES`), and an event handler may read only
    fields of `event` that some command emits (when every command's `emit[].data` for
    that event is a literal object, so the fields are known), and fields of `state` and
    `input` only when their schema lists them (when it lists `properties`): such
    references could never resolve.
    """
    problems = schema.check_schema(entity_type.state_schema, "spec.stateSchema")
    if not problems and entity_type.state_schema.get("type", "object") != "object":
        problems.append("spec.stateSchema.type: the state must be an object")
    for name, command in entity_type.commands.items():
        where = f"spec.commands.{name}"
        if command.input_schema is not None:
            problems += schema.check_schema(command.input_schema, f"{where}.inputSchema")
        for index, guard in enumerate(command.guards or []):
            problems += _compile(
                guard.rule if "${" in guard.rule else "${" + guard.rule + "}",
                f"{where}.guards[{index}].rule",
                COMMAND_VARIABLES,
            )
            if guard.message_expression is not None:
                problems += _compile(
                    _wrapped(guard.message_expression),
                    f"{where}.guards[{index}].messageExpression",
                    COMMAND_VARIABLES,
                )
        for index, emitted in enumerate(command.emit or []):
            if emitted.type not in entity_type.events:
                declared = ", ".join(sorted(entity_type.events)) or "none"
                problems.append(
                    f"{where}.emit[{index}].type: event type {emitted.type!r} has no handler "
                    f"under spec.events (declared: {declared})"
                )
            problems += _compile(emitted.data, f"{where}.emit[{index}].data", COMMAND_VARIABLES)
        problems += _compile(command.reply, f"{where}.reply", COMMAND_VARIABLES)
        problems += _unknown_fields(command.input_schema, "input", _command_places(command, where))
    state_places = [
        place
        for name, command in entity_type.commands.items()
        for place in _command_places(command, f"spec.commands.{name}")
    ]
    state_places += [(h.set, f"spec.events.{t}.set") for t, h in entity_type.events.items()]
    if not problems:
        problems += _unknown_fields(entity_type.state_schema, "state", state_places)
    emitted_fields = _emitted_fields(entity_type)
    for event_type, handler in entity_type.events.items():
        at = f"spec.events.{event_type}.set"
        compiled = _compile(handler.set, at, EVENT_VARIABLES)
        problems += compiled
        known = emitted_fields.get(event_type)
        if compiled or known is None:
            continue
        for field, expression, path in expressions.fields_read(handler.set, "event", at):
            if field not in known:
                shown = ", ".join(sorted(known)) or "none"
                problems.append(
                    f"{path}: expression {expression!r}: event has no field {field!r}: `event` "
                    f"is the event's data, and the commands emit {event_type} with the fields "
                    f"{shown} (e.g. `event.{min(known) if known else 'x'}`)"
                )
    if "snapshot_every" in entity_type.model_fields_set:
        problems.append(
            "spec.snapshotEvery: does nothing in this version (the snapshot always holds "
            "the current state, written with every event); remove it"
        )
    return problems + [str(p) for p in _boolean_keys(entity_type)]


def _emitted_fields(entity_type: EntityTypeSpec) -> dict[str, frozenset[str]]:
    """Event type -> the fields its data can have, for the event types whose every
    emitter gives a literal object; the others (and every type, when a command is
    decided by an HTTP handler, which may emit anything) are left out: unknown."""
    if any(command.handler is not None for command in entity_type.commands.values()):
        return {}
    fields: dict[str, set[str]] = {}
    opaque: set[str] = set()
    for command in entity_type.commands.values():
        for emitted in command.emit or []:
            if isinstance(emitted.data, Mapping):
                fields.setdefault(emitted.type, set()).update(emitted.data)
            else:
                opaque.add(emitted.type)
    return {t: frozenset(f) for t, f in fields.items() if t not in opaque}


def _unknown_fields(declared: Any, variable: str, places: Sequence[tuple[Any, str]]) -> list[str]:
    """`variable.x` reads where the schema `declared` lists its fields (`properties`, no
    `x-kubernetes-preserve-unknown-fields`: the one dialect refuses any other field, see
    `engine.schema`) and `x` is not one of them: such a read can never find a value."""
    if (
        not isinstance(declared, Mapping)
        or not isinstance(declared.get("properties"), Mapping)
        or declared.get("x-kubernetes-preserve-unknown-fields") is True
    ):
        return []
    allowed = set(declared["properties"])
    shown = ", ".join(sorted(allowed)) or "none"
    problems = []
    for value, at in places:
        for field, expression, path in expressions.fields_read(value, variable, at):
            if field not in allowed:
                problems.append(
                    f"{path}: expression {expression!r}: {variable} has no field {field!r} "
                    f"(its schema lists only {shown})"
                )
    return problems


def _command_places(command: Any, where: str) -> list[tuple[Any, str]]:
    """(value, path) of every expression of a command: guards, emitted data, reply."""
    places: list[tuple[Any, str]] = []
    for i, guard in enumerate(command.guards or []):
        places.append((_wrapped(guard.rule), f"{where}.guards[{i}].rule"))
        if guard.message_expression is not None:
            places.append(
                (_wrapped(guard.message_expression), f"{where}.guards[{i}].messageExpression")
            )
    places += [(e.data, f"{where}.emit[{i}].data") for i, e in enumerate(command.emit or [])]
    places.append((command.reply, f"{where}.reply"))
    return places


def _boolean_keys(entity_type: EntityTypeSpec) -> list[validate.Problem]:
    """YAML 1.1 booleans where the definition names fields: its schemas, and every
    free-form value (emitted data, replies, events' `set`: `validate.free_form_values`)."""
    problems = validate.schema_boolean_keys(entity_type.state_schema, "spec.stateSchema")
    for name, command in entity_type.commands.items():
        if command.input_schema is not None:
            where = f"spec.commands.{name}.inputSchema"
            problems += validate.schema_boolean_keys(command.input_schema, where)
    return problems + validate.model_boolean_keys(entity_type, "spec")


def status_state(state: Any, limit: int = STATUS_STATE_LIMIT) -> tuple[Any, bool]:
    """The state as status shows it, and whether it was truncated to fit `limit` bytes.

    A large state keeps the top-level fields that fit, in order, and drops the others:
    what remains is still true, and `stateTruncated` says that it is not all.
    """
    if _size(state) <= limit:
        return state, False
    if not isinstance(state, dict):
        return None, True
    kept: dict[str, Any] = {}
    budget = limit - 2
    for key, value in state.items():
        cost = _size({key: value}) - 1
        if cost <= budget:
            kept[key] = value
            budget -= cost
    return kept, True


def project_status(
    snapshot: Snapshot,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] | None,
    now: str,
) -> dict[str, Any]:
    """An Entity's status from its snapshot: small, whatever the state's size."""
    state, truncated = status_state(snapshot.state)
    status = EntityStatus(
        phase="Ready",
        state=state,
        state_truncated=truncated,
        version=snapshot.version,
        last_event=snapshot.last_event,
        message=None,
        observed_generation=generation,
        conditions=[
            updated_condition(
                "Ready",
                "True",
                "StateLoaded",
                f"version {snapshot.version}",
                generation,
                previous_conditions,
                now,
            )
        ],
    )
    return status.to_status()


def _guard_message(guard: Any, context: Mapping[str, Any]) -> str:
    if guard.message_expression is not None:
        try:
            text = expressions.render(_wrapped(guard.message_expression), context)
            return text if isinstance(text, str) else json.dumps(text)
        except expressions.ExpressionError as e:
            return f"guard failed (its messageExpression failed too: {e.problem})"
    return str(guard.message or "guard failed")


def _wrapped(source: str) -> str:
    return source if source.lstrip().startswith("${") else "${" + source + "}"


def _compile(value: Any, where: str, names: Sequence[str]) -> list[str]:
    try:
        expressions.check_names(value, names, where)
    except expressions.ExpressionError as e:
        return [str(e)]
    return []


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def status_merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning the fields of `new` in `old` status into `new`'s.

    Fields of `old` that `new` does not mention (e.g. kopf's own) are left alone; inside
    the fields `new` sets, keys that disappeared are nulled, so that a state that lost a
    key does not keep it in status.
    """
    before = old or {}
    return {key: _merge_patch(before.get(key), value) for key, value in new.items()}


def _merge_patch(old: Any, new: Any) -> Any:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = _merge_patch(old.get(key), value)
    return patch
