"""The size rule for every value Kurable journals, and how a stored value is cut into chunks.

A value (a step's output, a signal's payload, a run's input, a child's output, an entity
event's data, a command's reply) is measured as its canonical JSON encoding in UTF-8
bytes: compact separators, keys in their given order, non-ASCII characters as they are
(not `\\uXXXX`-escaped). It may be at most `max_value_bytes` (OperatorSettings,
`--max-value-bytes`, default `DEFAULT_MAX_VALUE_BYTES`). The rule is checked before a
value is written, so a value over it is refused once, with a message that says how big it
is, the limit and the setting that changes it, and never reaches etcd.

Why 1 MiB: etcd refuses any request over its `--max-request-bytes` (1.5 MiB by default)
with "request is too large", and Kubernetes' own objects stop at the same 1.5 MiB. A value
of 1 MiB leaves room for the record around it and keeps one record readable in one etcd
response; a larger limit needs a larger `--max-request-bytes` on the operator's etcd only
for entity commands (journal records are stored in chunks, see `chunks`).

Stored values above `CHUNK_BYTES` are cut into chunks of at most that many bytes, each
written by its own etcd request, so that no request comes near etcd's limit whatever the
setting (kurable.store.journal).
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
"""The default limit on one journaled value: 1 MiB of canonical JSON."""
CHUNK_BYTES = 256 * 1024
"""A stored record larger than this (bytes) is written as chunks of at most this size:
a sixth of etcd's default request limit, so a chunk's request never nears it."""
LIMIT_SETTING = "--max-value-bytes ($KURABLE_MAX_VALUE_BYTES, chart value operator.maxValueBytes)"
"""Where a user changes the limit; named in every refusal."""


def canonical_json(value: Any) -> bytes:
    """The canonical JSON encoding of `value` (UTF-8, compact); raises TypeError for a value
    JSON cannot encode."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encoded_size(value: Any) -> int:
    """Bytes of `value`'s canonical JSON encoding."""
    return len(canonical_json(value))


def size_problem(value: Any, limit: int, what: str) -> str | None:
    """None when `value` fits in `limit` bytes, else one sentence for people: what it is,
    how big, the limit and the setting that changes it. `what` names the value, e.g.
    `the output of step fetch`."""
    size = encoded_size(value)
    if size <= limit:
        return None
    shown, shown_limit = _human_pair(size, limit)
    return (
        f"{what} is {shown} ({size} bytes of JSON), over the limit of {shown_limit} "
        f"({limit} bytes) on one journaled value; make it smaller (store large data elsewhere "
        f"and pass a reference) or raise the limit with {LIMIT_SETTING}"
    )


def chunks(payload: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """`payload` cut into pieces of at most `size` bytes, in order (one piece when it fits;
    one empty piece for an empty payload). `b"".join(chunks(p)) == p`."""
    if size < 1:
        raise ValueError(f"a chunk size must be at least 1 byte, got {size}")
    return [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]


def _human_pair(size: int, limit: int) -> tuple[str, str]:
    """`size` and `limit` in binary units, with as many decimals as it takes for two
    different numbers to read differently (1.05 MiB over 1.00 MiB, never 1.0 over 1.0)."""
    for decimals in range(1, 4):
        pair = _human(size, decimals), _human(limit, decimals)
        if pair[0] != pair[1]:
            return pair
    return f"{size} B", f"{limit} B"


def _human(size: int, decimals: int = 1) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.{decimals}f} MiB"
    if size >= 1024:
        return f"{size / 1024:.{decimals}f} KiB"
    return f"{size} B"
