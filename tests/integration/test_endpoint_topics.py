"""Publishing through the endpoint and the CLI: once per Idempotency-Key, checked against
the Topic's messageSchema, authorised by `create` on `topics/publish`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurable.testing import ControlPlane, EndpointProcess

from .conftest import apply
from .endpoint_http import admin_token, call, grant, service_account_token
from .test_consumers import messages

pytestmark = pytest.mark.integration

ORDERS = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "Topic",
    "metadata": {"name": "orders"},
    "spec": {
        "messageSchema": {
            "type": "object",
            "properties": {"total": {"type": "integer", "minimum": 0}},
            "required": ["total"],
        }
    },
}


@pytest.fixture(scope="module")
def endpoint(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EndpointProcess]:
    log: Path = tmp_path_factory.mktemp("endpoint") / "endpoint.log"
    with EndpointProcess(control_plane.env(), log) as process:
        yield process


def test_a_message_is_published_once_per_idempotency_key_and_checked_by_the_schema(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, ORDERS)
    token = admin_token(cp, namespace)
    url = f"{endpoint.url}/v1/namespaces/{namespace}/topics/orders/messages"
    body: dict[str, Any] = {"key": "o1", "data": {"total": 5}, "type": "OrderPlaced"}
    first = call(url, "POST", token, body, headers={"Idempotency-Key": "order-1"})
    again = call(url, "POST", token, body, headers={"Idempotency-Key": "order-1"})
    assert (first.status, again.status) == (201, 200), (first.text, again.text)
    assert first.body == {"id": "order-1", "offset": first.body["offset"], "duplicate": False}
    assert again.body == {**first.body, "duplicate": True}
    other = call(
        url, "POST", token, {**body, "data": {"total": 6}}, headers={"Idempotency-Key": "order-1"}
    )
    assert other.status == 409 and other.headers["content-type"] == "application/problem+json"

    bad = call(url, "POST", token, {"key": "o2", "data": {"total": -1}})
    assert bad.status == 422 and bad.headers["content-type"] == "application/problem+json"
    assert bad.body["errors"][0]["pointer"] == "/data/total", bad.body
    missing = call(
        f"{endpoint.url}/v1/namespaces/{namespace}/topics/nope/messages", "POST", token, body
    )
    assert missing.status == 404

    # Only `create` on topics/publish lets a caller publish.
    reader = service_account_token(cp, namespace, "reader")
    grant(
        cp,
        namespace,
        "reader",
        [{"apiGroups": ["kurable.dev"], "resources": ["topics"], "verbs": ["get"]}],
    )
    assert call(url, "POST", reader, body).status == 403
    publisher = service_account_token(cp, namespace, "publisher")
    grant(
        cp,
        namespace,
        "publisher",
        [{"apiGroups": ["kurable.dev"], "resources": ["topics/publish"], "verbs": ["create"]}],
    )
    assert call(url, "POST", publisher, {"key": "o3", "data": {"total": 1}}).status == 201

    # The CLI goes through the endpoint.
    cli = subprocess.run(
        [sys.executable, "-m", "kurable", "publish", "topic/orders", "-n", namespace,
         "--key", "o4", "--data", '{"total": 4}', "--id", "order-4"],
        env={**os.environ, "KURABLE_ENDPOINT": endpoint.url, "KURABLE_TOKEN": publisher},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["id"] == "order-4"
    refused = subprocess.run(
        [sys.executable, "-m", "kurable", "publish", "topic/orders", "-n", namespace,
         "--data", '{"total": -4}', "--endpoint", endpoint.url, "--token", publisher],
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "422" in refused.stderr and "total" in refused.stderr

    stored = messages(cp, namespace, "orders")
    assert [(m["key"], m["data"]["total"]) for m in stored] == [("o1", 5), ("o3", 1), ("o4", 4)]
    assert stored[0]["type"] == "OrderPlaced"
