"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the endpoint answers is a `Problem`: `type` (a URI naming the kind of
problem), `title` (the kind in words), `status`, `detail` (this occurrence, saying what
to fix) and `instance` (the request's path). Bad input adds `errors`: one
`{pointer, detail}` per problem, `pointer` a JSON Pointer (RFC 6901) into the body, as
in RFC 9457's own example.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://kurable.dev/problems/"
"""Problem types are `TYPE_BASE + <kind>`, e.g. `.../problems/forbidden`."""

TITLES: dict[str, str] = {
    "malformed-json": "The body is not JSON",
    "invalid-request": "The request does not match its schema",
    "body-too-large": "The body is too large",
    "unauthenticated": "Authentication required",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "conflict": "Idempotency key reused for a different request",
    "command-rejected": "The command was rejected",
    "unavailable": "A backing service is unavailable",
    "busy": "The entity is busy",
    "invalid-schedule": "The Schedule is invalid",
    "tick-skipped": "The schedule's concurrency policy skipped the run",
    "method-not-allowed": "Method not allowed",
    "unsupported-media-type": "Unsupported media type",
}


class Problem(Exception):
    """An error answered as problem details; raise it from a route."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str) -> dict[str, Any]:
        """The problem document for the request at path `instance`."""
        out: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": TITLES.get(self.kind, self.kind.replace("-", " ").capitalize()),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extra)
        return out

    def encode(self, instance: str) -> bytes:
        """The problem document as UTF-8 JSON."""
        return json.dumps(self.body(instance), separators=(",", ":")).encode()


def pointer(path: Iterable[str | int]) -> str:
    """A JSON Pointer (RFC 6901) for `path`: `("input", "amount")` -> `/input/amount`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def malformed_json(error: json.JSONDecodeError) -> Problem:
    """400 for a body that does not parse; the pointer is the document (`""`), the detail
    the parser's message with its line and column."""
    detail = f"{error.msg} at line {error.lineno} column {error.colno} (char {error.pos})"
    return Problem(
        400,
        "malformed-json",
        f"the body is not JSON: {detail}; send a JSON document",
        errors=[{"pointer": "", "detail": detail, "line": error.lineno, "column": error.colno}],
    )


def invalid(errors: Sequence[Mapping[str, Any]]) -> Problem:
    """422 for a body that parses but does not fit the route's schema; `errors` are
    pydantic's (`loc` tuples), shown as JSON Pointers into the body."""
    shown = [{"pointer": pointer(_body_path(e.get("loc", ()))), "detail": e["msg"]} for e in errors]
    first = shown[0] if shown else {"pointer": "", "detail": "invalid"}
    where = first["pointer"] or "the body"
    more = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
    return Problem(422, "invalid-request", f"{where}: {first['detail']}{more}", errors=shown)


def _body_path(loc: Sequence[Any]) -> list[str | int]:
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return [p for p in parts if isinstance(p, str | int)]
