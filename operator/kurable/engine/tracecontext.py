"""W3C trace context for runs: parsing `traceparent`, and the ids of a run's spans.

A run's trace is derived from durable facts only (its uid, its journaled `traceparent`,
the step and attempt), so that any replica, before or after a restart, names the same
trace and the same spans: the run's span and each attempt's span have ids computed
here, not drawn at random. A run started without a `traceparent` gets a trace id derived
from its uid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

TRACEPARENT_ANNOTATION = "kurable.dev/traceparent"
"""The annotation on a Workflow that carries the `traceparent` of the request that
started it (set by the endpoint; read into WorkflowStarted)."""

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class TraceParent:
    """A parsed `traceparent`: 128-bit trace id, 64-bit parent span id, flags."""

    trace_id: int
    span_id: int
    flags: int = 1

    def header(self) -> str:
        """The `traceparent` header value (version 00)."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(text: str | None) -> TraceParent | None:
    """The W3C `traceparent` in `text`, or None when absent or malformed (version ff,
    all-zero ids and wrong lengths are malformed; a newer version's extra fields are
    not read)."""
    if not text:
        return None
    text = text.strip().lower()
    if len(text) > 55 and text[:2] != "00":
        text = text[:55]  # a future version: the first four fields keep their meaning
    match = _TRACEPARENT.match(text)
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, int(match.group(4), 16))


def _id(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    value = int.from_bytes(digest[: bits // 8], "big")
    return value or 1


def run_trace_id(uid: str, traceparent: str | None) -> int:
    """The run's trace: the journaled `traceparent`'s trace, else one derived from `uid`."""
    parent = parse_traceparent(traceparent)
    return parent.trace_id if parent is not None else _id(128, "trace", uid)


def run_span_id(uid: str) -> int:
    """The id of the span of the whole run."""
    return _id(64, "run", uid)


def attempt_span_id(uid: str, step: str, visit: int, attempt: int) -> int:
    """The id of the span of one attempt of one visit of a step (also a compensation's,
    `<step>:compensate`); an HTTP step sends it as the parent in its `traceparent`."""
    return _id(64, "attempt", uid, step, str(visit), str(attempt))
