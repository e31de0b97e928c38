"""Entities, decided purely: a command against a state gives events, a new state and a reply.

No I/O here. `decide` runs one command of an EntityType through its steps:

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

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kurable.api.v1alpha1 import EntityStatus, EntityTypeSpec

from . import expressions, schema, sizes, validate
from .conditions import updated_condition

RejectionReason = Literal[
    "UnknownCommand", "InvalidInput", "GuardFailed", "InvalidState", "HandlerError", "ValueTooLarge"
]
REJECTION_REASONS: tuple[RejectionReason, ...] = (
    "UnknownCommand",
    "InvalidInput",
    "GuardFailed",
    "InvalidState",
    "HandlerError",
    "ValueTooLarge",
)
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
        raise CommandRejected("HandlerError", f"{where} answered {answer!r}, not an object")
    if answer.get("error"):
        raise CommandRejected("HandlerError", f"{where} refused: {answer['error']}")
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


def definition_problems(entity_type: EntityTypeSpec) -> list[str]:
    """Everything wrong with an EntityType, each naming the command or field to fix."""
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
            )
            if guard.message_expression is not None:
                problems += _compile(
                    _wrapped(guard.message_expression), f"{where}.guards[{index}].messageExpression"
                )
        for index, emitted in enumerate(command.emit or []):
            if emitted.type not in entity_type.events:
                declared = ", ".join(sorted(entity_type.events)) or "none"
                problems.append(
                    f"{where}.emit[{index}].type: event type {emitted.type!r} has no handler "
                    f"under spec.events (declared: {declared})"
                )
            problems += _compile(emitted.data, f"{where}.emit[{index}].data")
        problems += _compile(command.reply, f"{where}.reply")
    for event_type, handler in entity_type.events.items():
        problems += _compile(handler.set, f"spec.events.{event_type}.set")
    if "snapshot_every" in entity_type.model_fields_set:
        problems.append(
            "spec.snapshotEvery: does nothing in this version (the snapshot always holds "
            "the current state, written with every event); remove it"
        )
    return problems + [str(p) for p in _boolean_keys(entity_type)]


def _boolean_keys(entity_type: EntityTypeSpec) -> list[validate.Problem]:
    """YAML 1.1 booleans where the definition names fields (see `validate.boolean_keys`)."""
    problems = validate.schema_boolean_keys(entity_type.state_schema, "spec.stateSchema")
    for name, command in entity_type.commands.items():
        if command.input_schema is not None:
            where = f"spec.commands.{name}.inputSchema"
            problems += validate.schema_boolean_keys(command.input_schema, where)
    for event_type, handler in entity_type.events.items():
        problems += validate.boolean_keys(handler.set, f"spec.events.{event_type}.set")
    return problems


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


def _compile(value: Any, where: str) -> list[str]:
    try:
        expressions.check(value, where)
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
