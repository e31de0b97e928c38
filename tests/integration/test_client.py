"""kurable.client and the CLI through a real endpoint process: the auth sources a client
finds ($KURABLE_TOKEN, a kubeconfig's static token, an exec credential plugin), typed
errors for refusals, and `kurable start --wait` / `signal` / `history`."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.client import Client, Event, Forbidden, Unauthenticated
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Door, apply, wait_phase
from .endpoint_http import admin_token, service_account_token
from .test_endpoint_routes import APPROVAL, THREE_STEPS
from .test_entities import transfer_example

pytestmark = pytest.mark.integration


def kurable(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kurable", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def kubeconfig(path: Path, namespace: str, user: dict[str, Any]) -> Path:
    """A kubeconfig whose current context is `namespace` and whose user is `user` (the
    cluster entry is never contacted: the client only takes the user and namespace)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [
            {"name": "test", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
        ],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def exec_plugin(tmp_path: Path, token_file: Path) -> dict[str, Any]:
    """The kubeconfig `exec` of a credential plugin that prints the token in `token_file`
    as an ExecCredential (and counts its runs in `runs`)."""
    script = tmp_path / "kurable-credential"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "runs = pathlib.Path(sys.argv[2])\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n"
        "token = pathlib.Path(sys.argv[1]).read_text().strip()\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',"
        " 'status': {'token': token}}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(script),
            "args": [str(token_file), str(tmp_path / "runs")],
            "interactiveMode": "Never",
        }
    }


def test_the_client_authenticates_with_each_source_and_refusals_are_typed(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    door: Door,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transfer_example(control_plane, namespace)
    allowed = admin_token(control_plane, namespace)
    no_role = service_account_token(control_plane, namespace)
    monkeypatch.delenv("KURABLE_TOKEN", raising=False)
    monkeypatch.delenv("KURABLE_ENDPOINT", raising=False)

    # $KURABLE_TOKEN wins over the kubeconfig's user (here one without a Role).
    denied_user = kubeconfig(tmp_path / "denied", namespace, {"token": no_role})
    env = {"KURABLE_ENDPOINT": door.url, "KURABLE_TOKEN": allowed, "KUBECONFIG": str(denied_user)}
    done = kurable(env, "command", "entity/alice", "withdraw", "--input", '{"amount":1}')
    assert (done.returncode, done.stdout.strip()) == (0, "99"), done.stderr

    # Without it, the kubeconfig's user is used, and its context's namespace.
    env.pop("KURABLE_TOKEN")
    refused = kurable(env, "command", "entity/alice", "withdraw", "--input", '{"amount":1}')
    assert refused.returncode == 2
    assert "may not create entities/command.kurable.dev" in refused.stderr
    assert f"in namespace {namespace}" in refused.stderr
    with Client(door.url, kubeconfig=str(denied_user)) as client, pytest.raises(Forbidden) as no:
        client.send_command(None, "alice", "withdraw", {"amount": 1})
    assert (no.value.verb, no.value.resource, no.value.namespace) == (
        "create",
        "entities/command",
        namespace,
    )

    static = kubeconfig(tmp_path / "static", namespace, {"token": allowed})
    with Client(door.url, kubeconfig=str(static)) as client:
        assert client.send_command(None, "alice", "withdraw", {"amount": 1}) == 98
        assert client.get_state(None, "alice").state == {"balance": 98}

    token_file = tmp_path / "token"
    token_file.write_text("forged.not-a-token")
    plugin = kubeconfig(tmp_path / "exec", namespace, exec_plugin(tmp_path, token_file))
    with Client(door.url, kubeconfig=str(plugin)) as client:
        with pytest.raises(Unauthenticated, match="does not accept this token"):
            client.get_state(None, "alice")
        # A 401 ran the plugin again (kubectl does too); a new token is then used.
        assert (tmp_path / "runs").read_text() == "2"
        token_file.write_text(allowed)
        assert client.send_command(None, "alice", "withdraw", {"amount": 1}) == 97
        assert (tmp_path / "runs").read_text() == "3"
        assert client.get_state(None, "alice").version == 3
        assert (tmp_path / "runs").read_text() == "3"  # its token is kept while it works


def test_start_wait_prints_a_three_step_runs_output_and_signal_and_history_go_through_the_endpoint(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, THREE_STEPS)
    apply(control_plane, namespace, APPROVAL)
    env = door.env()
    args = ("start", "three", "--input", '{"n": 1}', "--wait", "--timeout", "60", "--id", "k-1")
    done = kurable(env, *args, "-n", namespace)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["phase"], run["output"]) == ("Succeeded", {"z": 7})
    again = kurable(env, *args, "-n", namespace)
    assert json.loads(again.stdout)["name"] == run["name"]  # the same key: the same run
    other = kurable(env, "start", "three", "--input", '{"n": 2}', "--id", "k-1", "-n", namespace)
    assert other.returncode == 3 and "conflict" in other.stderr

    history = kurable(env, "history", f"workflow/{run['name']}", "-n", namespace, "-o", "json")
    assert history.returncode == 0, history.stderr
    records = json.loads(history.stdout)
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert records[-1]["type"] == "WorkflowFinished"

    started = kurable(env, "start", "approval", "--name", "ask", "-n", namespace)
    assert started.returncode == 0, started.stderr
    sent = kurable(
        env, "signal", "workflow/ask", "APPROVE", "--payload", '{"by": "ann"}', "--id", "s-1",
        "-n", namespace,
    )  # fmt: skip
    assert (sent.returncode, json.loads(sent.stdout)) == (
        0,
        {"signal": "APPROVE", "duplicate": False},
    )
    finished = wait_phase(control_plane, namespace, "ask", ("Succeeded",))
    assert finished["status"]["output"] == {"by": "ann"}
    with door.client() as client:
        events = list(client.run_events(namespace, "ask"))
        assert [e.id for e in events] == [str(n) for n in range(len(events))]
        assert events[-1].type == "WorkflowFinished"
        [received] = [e.data for e in events if e.type == "SignalReceived"]
        assert received["data"]["source"] == "endpoint"
        rest = list(client.run_events(namespace, "ask", last_event_id=events[1].id))
        assert rest == events[2:]

    async def streamed() -> tuple[list[Event], list[Event]]:
        # The async client's stream goes through aiohttp's pool (httpx-aiohttp).
        async with door.async_client() as client:
            whole = [e async for e in client.run_events(namespace, "ask")]
            rest = [e async for e in client.run_events(namespace, "ask", events[1].id)]
            return whole, rest

    assert asyncio.run(streamed()) == (events, events[2:])
