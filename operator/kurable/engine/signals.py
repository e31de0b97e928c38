"""Signals sent as annotations: which annotation is a new send, which a redelivery.

A user sends signal NAME to a run by writing the annotation `kurable.dev/signal.NAME`
with a JSON payload (`kubectl annotate workflow/x kurable.dev/signal.APPROVE='{"ok":true}'`).
The operator consumes each send:

1. it journals a `SignalReceived` record (name, payload);
2. then it removes the annotation with one JSON patch that `test`s the annotation still
   holds the text it read (a rewrite in between is not lost: the patch fails, and the new
   text is a new send) and, in the same patch, sets `kurable.dev/signals-consumed` to the
   journal seq of the last signal it has consumed.

The operator observes the object many times (every watch event, every resync), and it
may die between 1 and 2. So on every observation, an annotation `signal.NAME=payload` is a
*redelivery* (its send is journaled already, only its removal did not land: remove it
now) iff the journal holds a SignalReceived from an annotation with that name and payload
and a seq above the consumed marker; otherwise it is a *new send* (journal it). A
deliberate resend after the previous send was consumed is thus a new signal, and the
same send observed any number of times, across crashes, is journaled once.

Writing the same text again while the previous send is still on the object is no second
send (the object does not change); neither is a remove-and-rewrite of the same text in the
milliseconds between 1 and 2 (nothing on the object tells the two writes apart).

The endpoint sends a signal the same way, writing with the annotation (in the same patch)
`kurable.dev/signal-endpoint.NAME`, whose value is the SHA-256 of the request's
Idempotency-Key (empty without one). The operator journals such a send with
`source: "endpoint"` and that `idempotencyKey` (journal format 2), and removes both
annotations together; a resend of the request can then tell from the object or the
journal whether its first send arrived.

Everything here is pure: annotations and journaled signals in, decisions and JSON patch
operations out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import records, sizes
from .journal import Signal
from .messages import one_line

SIGNAL_PREFIX = "kurable.dev/signal."
"""Annotations `kurable.dev/signal.NAME: <JSON>` are signals to the run."""
CONSUMED_ANNOTATION = "kurable.dev/signals-consumed"
"""Operator-owned: the journal seq of the last signal whose annotation was removed."""
ENDPOINT_PREFIX = "kurable.dev/signal-endpoint."
"""`kurable.dev/signal-endpoint.NAME: <sha256 of the Idempotency-Key, or empty>`: the
endpoint sent the signal NAME beside it."""
ANNOTATION_SOURCE = "annotation"
"""`SignalReceived.source` of a signal sent as an annotation (absent means the same)."""
ENDPOINT_SOURCE = "endpoint"
"""`SignalReceived.source` of a signal sent through the endpoint."""
ANNOTATION_SOURCES = (None, ANNOTATION_SOURCE, ENDPOINT_SOURCE)
"""Sources whose sends arrive as annotations (all of them, today)."""


@dataclass(frozen=True)
class Arrival:
    """A new send: journal it (then remove its annotation)."""

    key: str
    name: str
    text: str
    payload: Any
    source: str | None = None
    """ENDPOINT_SOURCE when the endpoint sent it, else None (an annotation)."""
    idempotency_key: str | None = None
    """The SHA-256 of the endpoint request's Idempotency-Key, if it had one."""


@dataclass(frozen=True)
class Redelivery:
    """An annotation whose send is journaled (at `seq`) but not yet removed."""

    key: str
    text: str
    seq: int
    companion: tuple[str, str] | None = None
    """The endpoint's annotation beside it (key, text), removed with it."""


@dataclass(frozen=True)
class Unreadable:
    """A signal annotation whose text is not JSON: remove it and say why."""

    key: str
    text: str
    problem: str
    companion: tuple[str, str] | None = None


@dataclass(frozen=True)
class Intake:
    """What to do with a run's signal annotations, in annotation key order."""

    arrivals: tuple[Arrival, ...] = ()
    redeliveries: tuple[Redelivery, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()
    consumed_through: int = -1
    """The consumed marker the object carries (-1: none)."""

    @property
    def idle(self) -> bool:
        """No signal annotation on the object."""
        return not (self.arrivals or self.redeliveries or self.unreadable)


def canonical(payload: Any) -> str:
    """The payload as compared: JSON with sorted keys and no spaces."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def consumed_through(annotations: Mapping[str, str]) -> int:
    """The consumed marker: the seq in `kurable.dev/signals-consumed`, -1 when absent or
    not a number (then every journaled annotation send still counts as not removed)."""
    raw = annotations.get(CONSUMED_ANNOTATION, "")
    try:
        return int(raw)
    except ValueError:
        return -1


def intake(
    annotations: Mapping[str, str],
    journaled: Iterable[Signal],
    *,
    max_payload_bytes: int | None = None,
) -> Intake:
    """Sort the object's signal annotations into new sends, redeliveries and unreadable
    ones (see the module docstring for the rule). A payload over `max_payload_bytes`
    (bytes of canonical JSON, kurable.engine.sizes) is unreadable: never journaled."""
    through = consumed_through(annotations)
    # Journaled sends whose annotation may still be on the object, by what the annotation
    # shows: an endpoint send (with its key's hash) or a plain annotation.
    unremoved: dict[tuple[str, str, str | None], int] = {}
    for s in journaled:
        if s.seq > through and s.source in ANNOTATION_SOURCES:
            via = (s.key or "") if s.source == ENDPOINT_SOURCE else None
            unremoved[(s.name, canonical(s.payload), via)] = s.seq
    arrivals: list[Arrival] = []
    redeliveries: list[Redelivery] = []
    unreadable: list[Unreadable] = []
    for key, text in sorted(annotations.items()):
        if not key.startswith(SIGNAL_PREFIX):
            continue
        name = key[len(SIGNAL_PREFIX) :]
        via = annotations.get(ENDPOINT_PREFIX + name)
        companion = (ENDPOINT_PREFIX + name, via) if via is not None else None
        try:
            payload = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            unreadable.append(Unreadable(key, text, not_json(text), companion))
            continue
        if max_payload_bytes is not None:
            problem = sizes.size_problem(
                payload, max_payload_bytes, f"the payload of signal {name}"
            )
            if problem is not None:
                unreadable.append(Unreadable(key, text, problem, companion))
                continue
        text_key = canonical(payload)
        seq = unremoved.get((name, text_key, via))
        if seq is None and via is not None:
            # An endpoint send journaled without its source (a journal of format 1).
            seq = unremoved.get((name, text_key, None))
        if seq is None:
            source = ENDPOINT_SOURCE if via is not None else None
            arrivals.append(Arrival(key, name, text, payload, source, via or None))
        else:
            redeliveries.append(Redelivery(key, text, seq, companion))
    return Intake(tuple(arrivals), tuple(redeliveries), tuple(unreadable), through)


def signal_record(arrival: Arrival, format_version: int) -> records.SignalReceived:
    """The SignalReceived record of a new send, in the journal's `format_version`: its
    source and Idempotency-Key hash only from format 2 on (records.py)."""
    if arrival.source is None or format_version < records.ENDPOINT_SIGNALS_VERSION:
        return records.SignalReceived(name=arrival.name, payload=arrival.payload)
    if arrival.idempotency_key is None:
        return records.SignalReceived(
            name=arrival.name, payload=arrival.payload, source=ENDPOINT_SOURCE
        )
    return records.SignalReceived(
        name=arrival.name,
        payload=arrival.payload,
        source=ENDPOINT_SOURCE,
        idempotency_key=arrival.idempotency_key,
    )


def not_json(text: str) -> str:
    """Why a signal's text was refused, and what to send instead."""
    return (
        f"the payload {one_line(text, 60)!r} is not JSON; send a JSON value "
        """(e.g. '{"ok":true}', or '"yes"' for a string), or an empty value for no payload"""
    )


def _pointer(key: str) -> str:
    """The JSON pointer (RFC 6901) of an annotation."""
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def consumption_patch(taken: Intake) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that removes the redelivered and unreadable annotations
    of `taken`, each only if it still holds the text read, and moves the consumed marker
    to the highest seq removed. Empty when there is nothing to remove.

    Arrivals are not removed: journal them first, then take the intake again (they are
    redeliveries then)."""
    ops: list[dict[str, Any]] = []
    removed: list[tuple[str, str]] = []
    shown: list[tuple[str, str, tuple[str, str] | None]] = [
        (r.key, r.text, r.companion) for r in taken.redeliveries
    ]
    shown += [(u.key, u.text, u.companion) for u in taken.unreadable]
    for key, text, companion in shown:
        removed.append((key, text))
        if companion is not None:
            removed.append(companion)
    for key, text in removed:
        ops.append({"op": "test", "path": _pointer(key), "value": text})
        ops.append({"op": "remove", "path": _pointer(key)})
    through = max([taken.consumed_through, *(r.seq for r in taken.redeliveries)])
    if taken.redeliveries and through != taken.consumed_through:
        ops.append({"op": "add", "path": _pointer(CONSUMED_ANNOTATION), "value": str(through)})
    return ops
