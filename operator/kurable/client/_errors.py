"""The endpoint's problem details (RFC 9457) as typed exceptions.

Every error answer of the endpoint is `application/problem+json` with a `type` ending in
the problem's kind (`.../problems/forbidden`); `problem_error` turns one into the
`EndpointError` subclass for that kind or status, so callers catch what they can handle:

| status | kind                       | exception          |
|--------|----------------------------|--------------------|
| 400    | malformed-json, invalid-…  | InvalidRequest     |
| 401    | unauthenticated            | Unauthenticated    |
| 403    | forbidden                  | Forbidden          |
| 404    | not-found                  | NotFound           |
| 409    | conflict                   | Conflict           |
| 413    | body-too-large             | BodyTooLarge       |
| 422    | command-rejected           | CommandRejected    |
| 422    | invalid-request            | InvalidRequest     |
| 503    | busy                       | EntityBusy         |
| 502-504| unavailable, …             | Unavailable        |

Anything else is a plain EndpointError (its `status` and `kind` tell).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

PROBLEM_TYPE_BASE = "https://kurable.dev/problems/"


class ClientError(Exception):
    """The client cannot send a request: no endpoint URL, or no usable credentials."""


class EndpointError(Exception):
    """An error answer of the endpoint.

    `status` is the HTTP status, `kind` the problem's kind (the last part of its `type`,
    e.g. `forbidden`), `detail` what went wrong and what to do, `problem` the whole
    problem document (extension members such as `errors`, `verb`, `reason`)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        kind = str(problem.get("type") or "")
        self.kind = kind.rsplit("/", 1)[-1] if kind else f"http-{status}"
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or self.title or f"HTTP {status}")
        super().__init__(self.detail)

    @property
    def message(self) -> str:
        """The problem's detail."""
        return self.detail

    @property
    def errors(self) -> list[dict[str, Any]]:
        """`{pointer, detail}` per invalid field of the body (JSON Pointers), for bad input."""
        errors = self.problem.get("errors")
        return list(errors) if isinstance(errors, list) else []


class InvalidRequest(EndpointError):
    """400/422: the request's body or parameters are wrong (`errors` names the fields)."""


class BodyTooLarge(InvalidRequest):
    """413: the body is over the endpoint's limit (`--max-body-bytes`)."""


class Unauthenticated(EndpointError):
    """401: no token, or a token the API server does not accept."""


class Forbidden(EndpointError):
    """403: RBAC does not allow it; `verb`, `resource` and `namespace` say what was asked."""

    @property
    def verb(self) -> str:
        return str(self.problem.get("verb") or "")

    @property
    def resource(self) -> str:
        return str(self.problem.get("resource") or "")

    @property
    def namespace(self) -> str:
        return str(self.problem.get("namespace") or "")


class NotFound(EndpointError, LookupError):
    """404: no such run, Entity, EntityType or Schedule (or route)."""


EntityNotFound = NotFound
"""The name the entity client has always raised for a missing Entity."""


class Conflict(EndpointError):
    """409: an Idempotency-Key (command id) reused for another request; nothing applied."""

    @property
    def differs(self) -> tuple[str, ...]:
        """What differs from the first request with that key (`command`, `input`)."""
        differs = self.problem.get("differs")
        return tuple(str(d) for d in differs) if isinstance(differs, list) else ()


CommandConflict = Conflict


class CommandRejected(EndpointError):
    """422: a guard or a schema refused the command; nothing changed. `reason` names the
    rule (`GuardFailed`, `InputInvalid`, `StateInvalid`, `ValueTooLarge`...)."""

    @property
    def reason(self) -> str:
        return str(self.problem.get("reason") or "")


class Unavailable(EndpointError):
    """502/503/504: etcd, the API server or a command handler did not answer; nothing was
    applied. Send the same request again (with the same Idempotency-Key) after
    `retry_after` seconds."""

    @property
    def retry_after(self) -> float | None:
        """The Retry-After the endpoint gave, in seconds (None if it gave none)."""
        value = self.problem.get("retryAfter")
        return float(value) if isinstance(value, int | float) else None


class EntityBusy(Unavailable):
    """503 `busy`: the entity (or the run's pending signal) is busy; send it again."""


_BY_KIND: dict[str, type[EndpointError]] = {
    "command-rejected": CommandRejected,
    "busy": EntityBusy,
    "body-too-large": BodyTooLarge,
    "malformed-json": InvalidRequest,
    "invalid-request": InvalidRequest,
}
_BY_STATUS: dict[int, type[EndpointError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BodyTooLarge,
    422: InvalidRequest,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def problem_error(
    status: int, content_type: str, body: bytes, retry_after: str | None = None
) -> EndpointError:
    """The exception for an error answer: its problem document when the body is one
    (or any JSON object), else a problem made of the status and the start of the body."""
    problem: dict[str, Any] = {}
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            problem = parsed
    if not problem:
        text = body.decode(errors="replace").strip()
        problem = {"detail": f"HTTP {status}" + (f": {text[:200]}" if text else "")}
    if retry_after is not None and "retryAfter" not in problem:
        with contextlib.suppress(ValueError):  # an HTTP date: rare for 503, not parsed
            problem["retryAfter"] = float(retry_after)
    kind = str(problem.get("type") or "").rsplit("/", 1)[-1]
    cls = _BY_KIND.get(kind) or _BY_STATUS.get(status, EndpointError)
    if cls is EntityBusy and status != 503:
        cls = Unavailable if status >= 500 else EndpointError
    return cls(status, problem)
