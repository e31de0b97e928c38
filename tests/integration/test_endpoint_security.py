"""Who may do what through the endpoint: tokens checked by the API server, every request
authorised by Kubernetes RBAC, bad bodies refused before anything happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess
from kurable.testing._process import free_port as _free_port
from tests.conftest import ROOT

from .conftest import apply, eventually
from .endpoint_http import admin_token, call, grant, service_account_token

pytestmark = pytest.mark.integration

WALLET: dict[str, Any] = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())
LIMIT = 4096


@pytest.fixture(scope="module")
def endpoint(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EndpointProcess]:
    """The endpoint as a real process, with a small body limit to test it cheaply."""
    log: Path = tmp_path_factory.mktemp("endpoint") / "endpoint.log"
    process = EndpointProcess(control_plane.env(), log, extra_args=["--max-body-bytes", str(LIMIT)])
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wallets(cp: ControlPlane, namespace: str, *names: str) -> None:
    apply(cp, namespace, WALLET)
    for name in names:
        apply(
            cp,
            namespace,
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Entity",
                "metadata": {"name": name},
                "spec": {"type": "wallet", "initialState": {"balance": 100}},
            },
        )


def command_url(endpoint: EndpointProcess, namespace: str, entity: str, command: str) -> str:
    return f"{endpoint.url}/v1/namespaces/{namespace}/entities/{entity}/commands/{command}"


def test_health_readiness_openapi_and_docs_answer(endpoint: EndpointProcess) -> None:
    assert call(f"{endpoint.url}/healthz").status == 200
    ready = call(f"{endpoint.url}/readyz")
    assert (ready.status, ready.body["checks"]) == (200, {"apiServer": "ok", "etcd": "ok"})
    spec = call(f"{endpoint.url}/openapi.json").body
    assert "/v1/namespaces/{namespace}/entities/{name}/commands/{command}" in spec["paths"]
    assert "/v1/namespaces/{namespace}/workflows/{name}/signals/{signal}" in spec["paths"]
    docs = call(f"{endpoint.url}/docs")
    assert docs.status == 200
    assert "swagger" in docs.text.lower()


def test_no_token_is_401_problem_json(endpoint: EndpointProcess, namespace: str) -> None:
    answer = call(command_url(endpoint, namespace, "alice", "deposit"), "POST", body={})
    assert answer.status == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.body["status"] == 401
    assert answer.body["type"].endswith("/unauthenticated")
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_forged_token_is_401(endpoint: EndpointProcess, namespace: str) -> None:
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.Zm9yZ2Vk"
    answer = call(command_url(endpoint, namespace, "alice", "deposit"), "POST", forged, body={})
    assert answer.status == 401
    assert "does not accept this token" in answer.body["detail"]


def test_a_serviceaccount_without_a_role_is_403_naming_verb_resource_and_namespace(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    token = service_account_token(control_plane, namespace)
    answer = call(
        command_url(endpoint, namespace, "alice", "deposit"),
        "POST",
        token,
        body={"input": {"amount": 1}},
    )
    assert answer.status == 403
    detail = answer.body["detail"]
    assert "create entities/command.kurable.dev" in detail
    assert f"namespace {namespace}" in detail
    assert (answer.body["verb"], answer.body["resource"], answer.body["namespace"]) == (
        "create",
        "entities/command",
        namespace,
    )


def test_a_token_without_the_role_may_not_trigger_or_backfill_a_schedule(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    token = service_account_token(control_plane, namespace)
    base = f"{endpoint.url}/v1/namespaces/{namespace}/schedules/nightly"
    span = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    for path, body in (("trigger", None), ("backfill", span)):
        answer = call(f"{base}/{path}", "POST", token, body=body)
        assert answer.status == 403, answer.text
        assert 'create schedules/trigger.kurable.dev "nightly"' in answer.body["detail"]
        assert (answer.body["verb"], answer.body["resource"]) == ("create", "schedules/trigger")


def test_a_role_scoped_to_alice_commands_alice_and_not_bob(
    control_plane: ControlPlane,
    endpoint: EndpointProcess,
    operator: OperatorProcess,
    namespace: str,
) -> None:
    wallets(control_plane, namespace, "alice", "bob")
    account = "shopper"
    token = service_account_token(control_plane, namespace, account)
    grant(
        control_plane,
        namespace,
        account,
        [
            {
                "apiGroups": ["kurable.dev"],
                "resources": ["entities/command"],
                "resourceNames": ["alice"],
                "verbs": ["create"],
            }
        ],
    )
    alice = call(
        command_url(endpoint, namespace, "alice", "withdraw"),
        "POST",
        token,
        body={"input": {"amount": 10}},
        headers={"Idempotency-Key": "order-1"},
    )
    assert alice.status == 200, alice.text
    assert alice.body == {
        "reply": 90,
        "version": 1,
        "duplicate": False,
        "offset": alice.body["offset"],
    }
    bob = call(
        command_url(endpoint, namespace, "bob", "withdraw"),
        "POST",
        token,
        body={"input": {"amount": 10}},
    )
    assert bob.status == 403
    assert '"bob"' in bob.body["detail"]


def test_a_token_of_namespace_a_cannot_touch_namespace_b(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    other = f"{namespace}-b"
    control_plane.kubectl("create", "namespace", other)
    wallets(control_plane, other, "alice")
    token = admin_token(control_plane, namespace)  # may do everything, in its namespace
    answer = call(
        command_url(endpoint, other, "alice", "deposit"),
        "POST",
        token,
        body={"input": {"amount": 1}},
    )
    assert answer.status == 403
    assert f"namespace {other}" in answer.body["detail"]
    read = call(f"{endpoint.url}/v1/namespaces/{other}/entities/alice", token=token)
    assert read.status == 403


def test_malformed_json_is_400_with_its_position(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    token = admin_token(control_plane, namespace)
    answer = call(
        command_url(endpoint, namespace, "alice", "deposit"),
        "POST",
        token,
        raw=b'{"input": {"amount": 1,}}',
    )
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/problem+json"
    error = answer.body["errors"][0]
    assert (error["pointer"], error["line"], error["column"]) == ("", 1, 24)


def test_a_body_that_does_not_fit_the_schema_is_422_with_the_path(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    token = admin_token(control_plane, namespace)
    answer = call(
        f"{endpoint.url}/v1/namespaces/{namespace}/workflows",
        "POST",
        token,
        body={"templateRef": {"nam": "x"}},
    )
    assert answer.status == 422
    pointers = {e["pointer"] for e in answer.body["errors"]}
    assert "/templateRef/name" in pointers


def test_an_oversized_body_is_413_before_anything_happens(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    answer = call(
        command_url(endpoint, namespace, "alice", "deposit"),
        "POST",
        None,  # refused before authentication: the body is never read
        body={"input": {"pad": "x" * LIMIT}},
    )
    assert answer.status == 413
    assert answer.body["limit"] == LIMIT


def test_etcd_down_is_503_with_retry_after_and_not_ready(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    wallets(control_plane, namespace, "alice")
    token = admin_token(control_plane, namespace)
    dead = f"127.0.0.1:{_free_port()}"
    env = {**control_plane.env(), "KURABLE_ETCD_ENDPOINTS": dead}
    process = EndpointProcess(env, tmp_path / "endpoint.log").start(wait=False)
    try:
        eventually(lambda: _status(f"{process.url}/healthz"), lambda s: s == 200, 60, "healthz")
        ready = call(f"{process.url}/readyz")
        assert ready.status == 503
        assert ready.body["checks"]["apiServer"] == "ok"
        assert ready.body["checks"]["etcd"] != "ok"
        answer = call(f"{process.url}/v1/namespaces/{namespace}/entities/alice", token=token)
        assert answer.status == 503
        assert answer.headers["retry-after"]
        assert "etcd" in answer.body["detail"]
    finally:
        process.stop()


def test_api_server_down_is_503_with_retry_after(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    env = control_plane.env(server=f"https://127.0.0.1:{_free_port()}")
    process = EndpointProcess(env, tmp_path / "endpoint.log").start(wait=False)
    try:
        eventually(lambda: _status(f"{process.url}/healthz"), lambda s: s == 200, 60, "healthz")
        assert call(f"{process.url}/readyz").status == 503
        answer = call(f"{process.url}/v1/namespaces/{namespace}/entities/alice", token="any-token")
        assert answer.status == 503
        assert answer.headers["retry-after"]
        assert "API server" in answer.body["detail"]
    finally:
        process.stop()


def _status(url: str) -> int:
    try:
        return call(url, timeout=2).status
    except OSError:
        return 0
