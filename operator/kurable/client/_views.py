"""Querying Views through the endpoint (`GET /v1/namespaces/{ns}/views/{view}/queries/{q}`).

A function of its own, over the standard library's HTTP client, until the HTTP client of
the endpoint (kurable.client.Client) takes it as a method.

    rows = query_view("http://127.0.0.1:8080", token, "shop", "wallets", "richest", {"min": 10})
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any


class QueryFailed(Exception):
    """The endpoint refused or failed the query: `status` and its problem+json `detail`."""

    def __init__(self, status: int, detail: str, problem: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.detail = detail
        self.problem = dict(problem or {})
        super().__init__(f"{status}: {detail}")


def query_view(
    endpoint: str,
    token: str | None,
    namespace: str,
    view: str,
    query: str,
    params: Mapping[str, Any] | None = None,
    min_offset: int = 0,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Every row of `query` of View `view` (following the pages' continue tokens).

    `params` are the query's parameters (sent as text; the endpoint converts and checks
    them); `min_offset` (an entity command's `offset`) makes the endpoint answer only once
    the View includes that command. Raises QueryFailed with the endpoint's problem."""
    ns, name, named = (urllib.parse.quote(p, safe="") for p in (namespace, view, query))
    base = f"{endpoint.rstrip('/')}/v1/namespaces/{ns}/views/{name}/queries/{named}"
    fields = {k: _text(v) for k, v in (params or {}).items()}
    if min_offset:
        fields["minOffset"] = str(min_offset)
    rows: list[dict[str, Any]] = []
    token_next: str | None = None
    while True:
        page_fields = {**fields, **({"continue": token_next} if token_next else {})}
        url = f"{base}?{urllib.parse.urlencode(page_fields)}" if page_fields else base
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                page = json.loads(reply.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                problem = json.loads(text)
            except ValueError:
                problem = {"detail": text}
            raise QueryFailed(e.code, str(problem.get("detail", text)), problem) from None
        rows.extend(page["items"])
        token_next = page.get("continue")
        if not token_next:
            return rows


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)
