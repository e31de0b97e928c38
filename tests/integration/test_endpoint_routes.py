"""Every route of the endpoint on the real control plane, with a real operator."""

from __future__ import annotations

import json
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get, journal
from .endpoint_http import admin_token, call

pytestmark = pytest.mark.integration

WALLET: dict[str, Any] = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())

THREE_STEPS = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "three"},
    "spec": {
        "steps": [
            {"name": "a", "set": {"x": "${ input.n + 1 }"}},
            {"name": "b", "set": {"y": "${ vars.x * 2 }"}},
            {"name": "c", "set": {"z": "${ vars.y + 3 }"}},
        ],
        "output": {"z": "${ vars.z }"},
    },
}

APPROVAL = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "approval"},
    "spec": {
        "steps": [
            {"name": "approve", "wait": {"signal": "APPROVE", "timeout": "1h"}},
            {"name": "done", "set": {"by": "${ steps.approve.output.by }"}},
        ],
        "output": {"by": "${ vars.by }"},
    },
}


@pytest.fixture(scope="module")
def endpoint(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EndpointProcess]:
    log: Path = tmp_path_factory.mktemp("endpoint") / "endpoint.log"
    with EndpointProcess(control_plane.env(), log) as process:
        yield process


@pytest.fixture
def token(control_plane: ControlPlane, namespace: str) -> str:
    return admin_token(control_plane, namespace)


def v1(endpoint: EndpointProcess, namespace: str, path: str) -> str:
    return f"{endpoint.url}/v1/namespaces/{namespace}/{path}"


def wallet(cp: ControlPlane, namespace: str, name: str, balance: int = 100) -> None:
    apply(cp, namespace, WALLET)
    apply(
        cp,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Entity",
            "metadata": {"name": name},
            "spec": {"type": "wallet", "initialState": {"balance": balance}},
        },
    )


# -- entities ------------------------------------------------------------------------


def start_approval(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str, token: str
) -> dict[str, Any]:
    """Apply the approval template and start a run of it through the endpoint (it waits
    for its APPROVE signal); the run as the endpoint answered."""
    apply(control_plane, namespace, APPROVAL)
    run: dict[str, Any] = call(
        v1(endpoint, namespace, "workflows"),
        "POST",
        token,
        body={"templateRef": {"name": "approval"}},
    ).body
    return run


def test_a_command_applies_once_per_key_and_a_reused_key_is_409(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    wallet(control_plane, namespace, "alice")
    url = v1(endpoint, namespace, "entities/alice/commands/withdraw")
    key = {"Idempotency-Key": "order-7"}
    first = call(url, "POST", token, body={"input": {"amount": 30}}, headers=key)
    again = call(url, "POST", token, body={"input": {"amount": 30}}, headers=key)
    other = call(url, "POST", token, body={"input": {"amount": 31}}, headers=key)
    offset = first.body.get("offset")
    assert isinstance(offset, int) and offset > 0  # the etcd revision of the commit
    assert (first.status, first.body) == (
        200,
        {"reply": 70, "version": 1, "duplicate": False, "offset": offset},
    )
    # A resend answers with the original commit's offset.
    assert (again.status, again.body) == (
        200,
        {"reply": 70, "version": 1, "duplicate": True, "offset": offset},
    )
    assert other.status == 409
    assert other.body["differs"] == ["input"]
    state = call(v1(endpoint, namespace, "entities/alice"), token=token)
    assert (state.body["state"], state.body["version"]) == ({"balance": 70}, 1)


def test_a_guard_or_schema_rejection_is_422_with_the_rules_message(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    wallet(control_plane, namespace, "alice", balance=5)
    url = v1(endpoint, namespace, "entities/alice/commands/withdraw")
    guarded = call(url, "POST", token, body={"input": {"amount": 10}})
    assert guarded.status == 422
    assert guarded.body["detail"].endswith("insufficient funds: 5 < 10")
    assert guarded.body["reason"] == "GuardFailed"
    schema = call(url, "POST", token, body={"input": {"amount": 0}})
    assert schema.status == 422
    assert "amount" in schema.body["detail"]
    state = call(v1(endpoint, namespace, "entities/alice"), token=token)
    assert state.body["version"] == 0


def test_an_unknown_entity_is_404(endpoint: EndpointProcess, namespace: str, token: str) -> None:
    answer = call(
        v1(endpoint, namespace, "entities/nobody/commands/deposit"),
        "POST",
        token,
        body={"input": {"amount": 1}},
    )
    assert answer.status == 404
    assert "nobody" in answer.body["detail"]
    assert call(v1(endpoint, namespace, "entities/nobody"), token=token).status == 404


def test_the_event_log_comes_in_pages(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    wallet(control_plane, namespace, "alice")
    url = v1(endpoint, namespace, "entities/alice/commands/deposit")
    for amount in range(1, 6):
        assert call(url, "POST", token, body={"input": {"amount": amount}}).status == 200
    events = v1(endpoint, namespace, "entities/alice/events")
    seen: list[dict[str, Any]] = []
    token_ = ""
    pages = 0
    while True:
        page = call(f"{events}?limit=2&continue={token_}", token=token).body
        seen += page["items"]
        pages += 1
        if page["continue"] is None:
            break
        token_ = page["continue"]
    assert pages == 3
    assert [e["version"] for e in seen] == [1, 2, 3, 4, 5]
    assert [e["data"]["amount"] for e in seen] == [1, 2, 3, 4, 5]


# -- workflows: start, wait, read ------------------------------------------------------


def test_start_is_idempotent_by_key_and_a_reused_key_with_another_body_is_409(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    apply(control_plane, namespace, THREE_STEPS)
    url = v1(endpoint, namespace, "workflows")
    body = {"templateRef": {"name": "three"}, "input": {"n": 1}}
    key = {"Idempotency-Key": "request-1"}
    first = call(url, "POST", token, body=body, headers=key)
    second = call(url, "POST", token, body=body, headers=key)
    assert (first.status, second.status) == (201, 200)
    assert first.body["name"] == second.body["name"]
    assert first.body["uid"] == second.body["uid"]
    assert first.headers["location"] == f"/v1/namespaces/{namespace}/workflows/request-1"
    other = call(url, "POST", token, body={**body, "input": {"n": 2}}, headers=key)
    assert other.status == 409
    runs = json.loads(
        control_plane.kubectl("get", "workflows", "-n", namespace, "-o", "json").stdout
    )
    assert [r["metadata"]["name"] for r in runs["items"]] == ["request-1"]


def test_wait_returns_the_output_of_a_three_step_run(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    apply(control_plane, namespace, THREE_STEPS)
    answer = call(
        v1(endpoint, namespace, "workflows?wait=60s"),
        "POST",
        token,
        body={"templateRef": {"name": "three"}, "input": {"n": 1}},
    )
    assert answer.status == 201
    assert (answer.body["phase"], answer.body["output"]) == ("Succeeded", {"z": 7})
    assert [s["name"] for s in answer.body["steps"]] == ["a", "b", "c"]


def test_wait_that_runs_out_is_202_with_the_run_so_far(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    apply(control_plane, namespace, APPROVAL)
    answer = call(
        v1(endpoint, namespace, "workflows?wait=1s"),
        "POST",
        token,
        body={"templateRef": {"name": "approval"}},
    )
    assert answer.status == 202
    assert answer.body["phase"] not in ("Succeeded", "Failed")


def test_runs_are_read_listed_filtered_and_paged(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    apply(control_plane, namespace, THREE_STEPS)
    apply(control_plane, namespace, APPROVAL)
    url = v1(endpoint, namespace, "workflows")
    for n in range(3):
        started = call(
            f"{url}?wait=60s",
            "POST",
            token,
            body={"templateRef": {"name": "three"}, "input": {"n": n}, "labels": {"batch": "b1"}},
        )
        assert started.body["phase"] == "Succeeded"
    call(url, "POST", token, body={"templateRef": {"name": "approval"}, "name": "waiting"})
    one = call(f"{url}/waiting", token=token)
    assert (one.status, one.body["template"]) == (200, "approval")
    labelled = call(f"{url}?labelSelector=batch%3Db1", token=token).body["items"]
    assert len(labelled) == 3
    assert {r["template"] for r in call(f"{url}?template=approval", token=token).body["items"]} == {
        "approval"
    }
    succeeded = call(f"{url}?phase=Succeeded", token=token).body["items"]
    assert len(succeeded) == 3
    names: list[str] = []
    page: dict[str, Any] = {"continue": ""}
    while page["continue"] is not None:
        page = call(f"{url}?limit=2&continue={page['continue']}", token=token).body
        names += [r["name"] for r in page["items"]]
    assert len(names) == 4
    assert len(set(names)) == 4
    assert call(f"{url}/nothing", token=token).status == 404


def test_history_is_the_journal_in_pages(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    apply(control_plane, namespace, THREE_STEPS)
    run = call(
        v1(endpoint, namespace, "workflows?wait=60s"),
        "POST",
        token,
        body={"templateRef": {"name": "three"}, "input": {"n": 1}},
    ).body
    url = v1(endpoint, namespace, f"workflows/{run['name']}/history")
    records: list[dict[str, Any]] = []
    page: dict[str, Any] = {"continue": ""}
    while page["continue"] is not None:
        page = call(f"{url}?limit=3&continue={page['continue']}", token=token).body
        records += page["items"]
    assert records == [r.to_json() for r in journal(control_plane, run["uid"])]
    assert records[-1]["type"] == "WorkflowFinished"


def read_events(
    url: str, token: str, last_event_id: str | None, stop_after: int | None
) -> list[tuple[int, str, dict[str, Any]]]:
    """Read SSE events (id, event, data); disconnect after `stop_after` of them."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    if last_event_id is not None:
        request.add_header("Last-Event-ID", last_event_id)
    got: list[tuple[int, str, dict[str, Any]]] = []
    with urllib.request.urlopen(request, timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line == "":
                if "id" in fields:
                    got.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if stop_after is not None and len(got) >= stop_after:
                        return got
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return got


def test_events_resume_after_a_disconnect_without_a_lost_or_repeated_record(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    run = start_approval(control_plane, endpoint, namespace, token)
    url = v1(endpoint, namespace, f"workflows/{run['name']}/events")
    first = read_events(url, token, None, stop_after=2)  # the run waits: 2 records at least
    signal = threading.Timer(
        1.0,
        lambda: call(
            v1(endpoint, namespace, f"workflows/{run['name']}/signals/APPROVE"),
            "POST",
            token,
            body={"by": "carol"},
        ),
    )
    signal.start()
    rest = read_events(url, token, str(first[-1][0]), stop_after=None)
    signal.join()
    seqs = [seq for seq, _, _ in first + rest]
    full = journal(control_plane, run["uid"])
    assert seqs == [r.seq for r in full]
    assert [data for _, _, data in first + rest] == [r.to_json() for r in full]
    assert rest[-1][1] == "WorkflowFinished"


# -- signal and control ----------------------------------------------------------------


def test_a_signal_resent_with_the_same_key_is_received_once(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    run = start_approval(control_plane, endpoint, namespace, token)
    url = v1(endpoint, namespace, f"workflows/{run['name']}/signals/APPROVE")
    key = {"Idempotency-Key": f"approve-{secrets.token_hex(2)}"}
    first = call(url, "POST", token, body={"by": "dave"}, headers=key)
    assert (first.status, first.body["duplicate"]) == (202, False)
    finished = eventually(
        lambda: call(v1(endpoint, namespace, f"workflows/{run['name']}"), token=token).body,
        lambda r: r["phase"] == "Succeeded",
        120,  # one failure in a run of 24 endpoint tests on a loaded machine: patience
        "the run to finish",
    )
    assert finished["output"] == {"by": "dave"}
    again = call(url, "POST", token, body={"by": "dave"}, headers=key)
    assert (again.status, again.body["duplicate"]) == (202, True)
    other = call(url, "POST", token, body={"by": "eve"}, headers=key)
    assert other.status == 409
    received = [r for r in journal(control_plane, run["uid"]) if r.type == "SignalReceived"]
    assert len(received) == 1
    annotations = (
        get(control_plane, namespace, f"workflow/{run['name']}")["metadata"].get("annotations")
        or {}
    )
    assert "kurable.dev/signal.APPROVE" not in annotations


def test_suspend_resume_and_cancel_patch_the_spec(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    token: str,
) -> None:
    run = start_approval(control_plane, endpoint, namespace, token)
    base = v1(endpoint, namespace, f"workflows/{run['name']}")
    suspended = call(f"{base}/suspend", "POST", token)
    assert (suspended.status, suspended.body["suspend"]) == (200, True)
    resumed = call(f"{base}/resume", "POST", token)
    assert resumed.body["suspend"] is False
    cancelled = call(f"{base}/cancel", "POST", token)
    assert cancelled.body["cancel"] is True
    eventually(
        lambda: call(base, token=token).body["phase"],
        lambda phase: phase == "Cancelled",
        60,
        "the run to be cancelled",
    )
    assert call(v1(endpoint, namespace, "workflows/nothing/cancel"), "POST", token).status == 404
