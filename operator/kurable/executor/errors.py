"""Errors of the outside world as one readable line, for status, Events and step errors.

The Kubernetes client's ApiException prints as a multi-line dump (status, reason, every
response header, the raw body). What a user needs is the API server's own sentence: the
`message` of the Status object in the body, e.g. `Workflow.kurable.dev "x" is invalid:
metadata.labels: Invalid value: "...": must be no more than 63 characters`.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client as k8s

MESSAGE_LIMIT = 1024
"""The longest message returned (a status message or Event must stay small)."""


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def api_error_message(error: k8s.ApiException) -> str:
    """The API server's answer in one line: `<code> <reason>: <Status message>`, or the
    code and reason alone when the body is not a Status object."""
    body: Any = error.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    message = ""
    if isinstance(body, str) and body.strip():
        try:
            status = json.loads(body)
        except json.JSONDecodeError:
            message = body
        else:
            if isinstance(status, dict):
                message = str(status.get("message") or "")
    head = f"{error.status} {error.reason or ''}".strip()
    return _one_line(f"{head}: {message}" if message else head)


def describe_error(error: BaseException) -> str:
    """Any exception in one line: an API error as api_error_message says, anything else
    as `<type>: <text>`."""
    if isinstance(error, k8s.ApiException):
        return _one_line(f"Kubernetes API: {api_error_message(error)}")
    text = str(error)
    return _one_line(f"{type(error).__name__}: {text}" if text else type(error).__name__)
