"""kurable.client without a server: problems become typed errors, credentials are found
as kubectl finds them, requests carry what the endpoint expects, SSE is parsed."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kurable.client import (
    BodyTooLarge,
    Client,
    ClientError,
    CommandConflict,
    CommandRejected,
    EndpointError,
    EntityBusy,
    Forbidden,
    InvalidRequest,
    Kubeconfig,
    NotFound,
    TokenSource,
    Unauthenticated,
    Unavailable,
    problem_error,
)
from kurable.client._client import _EventParser

PROBLEM = "application/problem+json"


def problem(status: int, kind: str, detail: str = "d", **extra: Any) -> bytes:
    body = {"type": f"https://kurable.dev/problems/{kind}", "title": kind, "status": status}
    return json.dumps({**body, "detail": detail, **extra}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "malformed-json", InvalidRequest),
        (401, "unauthenticated", Unauthenticated),
        (403, "forbidden", Forbidden),
        (404, "not-found", NotFound),
        (409, "conflict", CommandConflict),
        (413, "body-too-large", BodyTooLarge),
        (422, "command-rejected", CommandRejected),
        (422, "invalid-request", InvalidRequest),
        (503, "busy", EntityBusy),
        (503, "unavailable", Unavailable),
        (500, "internal-error", EndpointError),
    ],
)
def test_each_problem_kind_raises_its_own_error(
    status: int, kind: str, expected: type[EndpointError]
) -> None:
    error = problem_error(status, PROBLEM, problem(status, kind))
    assert type(error) is expected
    assert (error.status, error.kind, error.detail) == (status, kind, "d")


def test_a_rejection_carries_the_rule_and_a_denial_what_was_asked() -> None:
    rejected = problem_error(422, PROBLEM, problem(422, "command-rejected", "no", reason="Guard"))
    assert isinstance(rejected, CommandRejected)
    assert (rejected.reason, rejected.message) == ("Guard", "no")
    denied = problem_error(
        403, PROBLEM, problem(403, "forbidden", verb="create", resource="entities/command")
    )
    assert isinstance(denied, Forbidden)
    assert (denied.verb, denied.resource) == ("create", "entities/command")


def test_retry_after_comes_from_the_header_and_a_non_problem_body_is_kept_short() -> None:
    error = problem_error(503, "text/html", b"<html>" + b"x" * 1000, retry_after="2")
    assert isinstance(error, Unavailable)
    assert error.retry_after == 2.0
    assert error.detail.startswith("HTTP 503: <html>") and len(error.detail) < 230


def test_no_endpoint_is_a_client_error_naming_the_flag_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KURABLE_ENDPOINT", raising=False)
    with pytest.raises(ClientError, match=r"--endpoint.*KURABLE_ENDPOINT"):
        Client()


def kubeconfig(tmp_path: Path, user: dict[str, Any], namespace: str | None = "shop") -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "me"}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "dev", "context": context}],
        "users": [{"name": "me", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_token_argument_wins_over_the_environment_and_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Kubeconfig.load(str(kubeconfig(tmp_path, {"token": "from-file"})))
    monkeypatch.setenv("KURABLE_TOKEN", "from-env")
    assert TokenSource("from-arg", config).token() == "from-arg"
    assert TokenSource(None, config).token() == "from-env"
    monkeypatch.delenv("KURABLE_TOKEN")
    assert TokenSource(None, config).token() == "from-file"
    assert config.namespace == "shop"


def test_a_token_file_is_read_relative_to_the_kubeconfig_at_each_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KURABLE_TOKEN", raising=False)
    (tmp_path / "token").write_text("one\n")
    source = TokenSource(None, Kubeconfig.load(str(kubeconfig(tmp_path, {"tokenFile": "token"}))))
    assert source.token() == "one"
    (tmp_path / "token").write_text("two\n")
    assert source.token() == "two"


def plugin(tmp_path: Path, expires: str | None) -> Path:
    """An exec credential plugin that counts its runs and echoes its env and exec info."""
    script = tmp_path / "plugin.py"
    status: dict[str, Any] = {}
    if expires:
        status["expirationTimestamp"] = expires
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, sys\n"
        "count = pathlib.Path(__file__).with_name('runs')\n"
        "n = int(count.read_text()) + 1 if count.exists() else 1\n"
        "count.write_text(str(n))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False, info\n"
        "assert sys.stdin is None or sys.stdin.read() == ''\n"
        f"status = {status!r}\n"
        "status['token'] = f\"{os.environ['GREETING']}-{sys.argv[1]}-{n}\"\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',"
        " 'status': status}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def exec_user(script: Path) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": f"./{script.name}",
            "args": ["arg"],
            "env": [{"name": "GREETING", "value": "hi"}],
            "interactiveMode": "Never",
        }
    }


def test_an_exec_plugin_runs_once_while_its_token_lasts_and_again_after_renew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KURABLE_TOKEN", raising=False)
    script = plugin(tmp_path, "2999-01-01T00:00:00Z")
    source = TokenSource(None, Kubeconfig.load(str(kubeconfig(tmp_path, exec_user(script)))))
    assert source.runs_plugin
    assert source.token() == "hi-arg-1"
    assert source.token() == "hi-arg-1"
    assert source.renew()
    assert source.token() == "hi-arg-2"


def test_an_expired_plugin_token_is_renewed_and_a_failing_plugin_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KURABLE_TOKEN", raising=False)
    script = plugin(tmp_path, "2000-01-01T00:00:00Z")
    source = TokenSource(None, Kubeconfig.load(str(kubeconfig(tmp_path, exec_user(script)))))
    assert [source.token(), source.token()] == ["hi-arg-1", "hi-arg-2"]
    broken = exec_user(script)
    broken["exec"]["env"] = []  # no GREETING: the plugin fails
    failing = TokenSource(None, Kubeconfig.load(str(kubeconfig(tmp_path, broken))))
    with pytest.raises(ClientError, match=r"(?s)plugin.*exited 1.*GREETING"):
        failing.token()


def test_requests_carry_the_token_the_idempotency_key_and_json_and_401_renews_a_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KURABLE_TOKEN", raising=False)
    script = plugin(tmp_path, None)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["authorization"] == "Bearer hi-arg-1":
            return httpx.Response(401, content=problem(401, "unauthenticated"))
        return httpx.Response(200, json={"reply": 90, "version": 3})

    client = Client(
        "http://endpoint:1/",
        kubeconfig=str(kubeconfig(tmp_path, exec_user(script))),
        transport=httpx.MockTransport(answer),
    )
    with client:
        assert client.send_command(None, "alice", "withdraw", {"amount": 10}, "order-7") == 90
    assert [r.headers["authorization"] for r in seen] == ["Bearer hi-arg-1", "Bearer hi-arg-2"]
    last = seen[-1]
    assert str(last.url) == "http://endpoint:1/v1/namespaces/shop/entities/alice/commands/withdraw"
    assert last.headers["idempotency-key"] == "order-7"
    assert json.loads(last.content) == {"input": {"amount": 10}}


def test_a_problem_answer_raises_and_a_start_with_wait_extends_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KURABLE_TOKEN", "t")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST" and request.url.path.endswith("/workflows"):
            return httpx.Response(200, json={"name": "r", "phase": "Succeeded", "output": 6})
        return httpx.Response(403, content=problem(403, "forbidden", "may not"))

    with Client("http://e", namespace="ns", transport=httpx.MockTransport(answer)) as client:
        run = client.start(None, "sum", {"n": 3}, idempotency_key="k", wait=30)
        assert run["output"] == 6
        with pytest.raises(Forbidden, match="may not"):
            client.signal(None, "r", "go", {"x": 1})
    start = seen[0]
    assert start.url.params["wait"] == "30s"
    assert start.extensions["timeout"]["read"] == 90.0
    assert json.loads(start.content) == {"templateRef": {"name": "sum"}, "input": {"n": 3}}
    assert start.headers["idempotency-key"] == "k"


def test_server_sent_events_are_parsed_per_the_format() -> None:
    parser = _EventParser()
    lines = [": waiting", "", "id: 3", "event: StepCompleted", 'data: {"seq":', "data: 3}", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [(e.id, e.type, e.data) for e in events] == [("3", "StepCompleted", {"seq": 3})]


def test_the_async_client_uses_aiohttp_unless_the_environment_names_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from httpx_aiohttp import AiohttpTransport

    from kurable.client import AsyncClient

    monkeypatch.setenv("KURABLE_TOKEN", "t")
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    for name in (*names, *(n.lower() for n in names)):
        monkeypatch.delenv(name, raising=False)

    def on_aiohttp() -> bool:
        return isinstance(AsyncClient("https://kurable.example").http._transport, AiohttpTransport)

    assert on_aiohttp()
    for name in ("https_proxy", "HTTP_PROXY", "ALL_PROXY"):
        with monkeypatch.context() as env:
            env.setenv(name, "http://proxy.example:3128")
            env.setenv("NO_PROXY", "kurable.example")  # httpx's own transport applies it
            assert not on_aiohttp(), name


async def test_the_async_client_raises_httpx_errors_for_a_refused_or_dropped_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import socket

    from kurable.client import AsyncClient

    monkeypatch.setenv("KURABLE_TOKEN", "t")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with AsyncClient(f"http://127.0.0.1:{port}") as refused:
        with pytest.raises(httpx.ConnectError):
            await refused.request("GET", "/healthz")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, AsyncClient(f"http://127.0.0.1:{port}") as dropped:
        with pytest.raises(httpx.RemoteProtocolError):
            await dropped.request("GET", "/healthz")
