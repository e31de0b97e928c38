"""API errors reach users as one line: the API server's own message."""

from __future__ import annotations

import json

from kubernetes_asyncio import client as k8s

from kurable.executor.errors import MESSAGE_LIMIT, api_error_message, describe_error

STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'Workflow.kurable.dev "x" is invalid: metadata.labels: Invalid value: "ppp": '
    "must be no more than 63 characters",
    "reason": "Invalid",
    "code": 422,
}


def _error(status: int, reason: str, body: str) -> k8s.ApiException:
    e = k8s.ApiException(status=status, reason=reason)
    e.body = body
    return e


def test_a_422_reads_as_the_status_message_on_one_line() -> None:
    e = _error(422, "Unprocessable Entity", json.dumps(STATUS, indent=2))
    assert "\n" in str(e)  # what users saw before
    assert api_error_message(e) == f"422 Unprocessable Entity: {STATUS['message']}"
    assert describe_error(e) == f"Kubernetes API: 422 Unprocessable Entity: {STATUS['message']}"


def test_a_body_that_is_not_a_status_is_shown_as_one_line() -> None:
    assert api_error_message(_error(502, "Bad Gateway", "<html>\n oops\n</html>")) == (
        "502 Bad Gateway: <html> oops </html>"
    )
    assert (
        api_error_message(_error(500, "Internal Server Error", "")) == "500 Internal Server Error"
    )


def test_other_errors_are_one_line_and_bounded() -> None:
    assert describe_error(ValueError("a\nb")) == "ValueError: a b"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert len(describe_error(RuntimeError("x" * 5000))) == MESSAGE_LIMIT
