"""Integration fixtures: the real control plane (kurable.testing) plus a real operator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kurable.client import AsyncClient, Client
from kurable.engine.journal import Record
from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess

T = TypeVar("T")


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator per test process, watching the `test-*` namespaces."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(control_plane.env(), log, namespaces=["test-*"])
    process.start()
    try:
        yield process
    finally:
        process.stop()


class Door:
    """The endpoint every test process shares (the operator's etcd prefix) and a token of
    a cluster-admin ServiceAccount for it: how tests command entities and start runs, as
    users do (the CLI and the Python client go through the endpoint only)."""

    def __init__(self, cp: ControlPlane, endpoint: EndpointProcess, token: str) -> None:
        self.cp = cp
        self.endpoint = endpoint
        self.url = endpoint.url
        self.token = token

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, self.token, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        return AsyncClient(self.url, self.token, **kwargs)

    def env(self) -> dict[str, str]:
        """The control plane's environment plus KURABLE_ENDPOINT and KURABLE_TOKEN."""
        return {**self.cp.env(), "KURABLE_ENDPOINT": self.url, "KURABLE_TOKEN": self.token}


@pytest.fixture(scope="session")
def door(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """One endpoint per test process (see Door)."""
    from kurable.cli._dev import admin_token

    log = tmp_path_factory.mktemp("door") / "endpoint.log"
    with EndpointProcess(control_plane.env(), log) as process:
        yield Door(control_plane, process, admin_token(control_plane))


def apply(cp: ControlPlane, namespace: str, manifest: str | dict[str, Any] | Path) -> str:
    """`kubectl apply` a manifest (YAML text, a dict, or a file) into `namespace`."""
    if isinstance(manifest, Path):
        text = manifest.read_text()
    elif isinstance(manifest, dict):
        text = json.dumps(manifest)  # not YAML: YAML 1.1 reads a key `n` as false
    else:
        text = manifest
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=text).stdout


def workflow(name: str, **spec: Any) -> dict[str, Any]:
    """A Workflow manifest named `name` with `spec`."""
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }


def refused(cp: ControlPlane, namespace: str, manifest: str) -> str:
    """Apply a manifest that must be refused; return the API server's message."""
    result = cp.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert result.returncode != 0, f"the API server accepted:\n{manifest}"
    return result.stderr


def get(cp: ControlPlane, namespace: str, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cp.kubectl("get", "-n", namespace, ref, "-o", "json").stdout)
    return out


def eventually(
    probe: Callable[[], T], until: Callable[[T], bool], timeout: float = 60.0, what: str = ""
) -> T:
    """Poll `probe` until `until(value)`; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not until(value):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {value}")
        time.sleep(0.2)
        value = probe()
    return value


def wait_phase(
    cp: ControlPlane, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 60.0
) -> dict[str, Any]:
    """Wait until workflow `name` is in one of `phases`; return it."""
    return eventually(
        lambda: get(cp, namespace, f"workflow/{name}"),
        lambda wf: (wf.get("status") or {}).get("phase") in phases,
        timeout,
        f"workflow/{name} to reach {phases}",
    )


def journal(cp: ControlPlane, uid: str, prefix: str = "/kurable/") -> list[Record]:
    """The run's journal, read straight from etcd."""
    import asyncio

    from kurable.store.journal import EtcdConfig, Journal, connect

    async def load() -> list[Record]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=prefix))
        try:
            records, _ = await Journal(etcd, prefix).load(uid)
            return records
        finally:
            await etcd.close()

    return asyncio.run(load())


def journal_revisions(cp: ControlPlane, uid: str, prefix: str = "/kurable/") -> list[int]:
    """The etcd revision each of the run's journal records was committed at."""
    import asyncio

    from kurable.store import keys
    from kurable.store.journal import EtcdConfig, connect

    async def read() -> list[int]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=prefix))
        try:
            listing = await etcd.get_prefix(keys.journal(prefix, uid).encode())
            return [int(kv.mod_revision) for kv in listing]
        finally:
            await etcd.close()

    return asyncio.run(read())


class Isolated:
    """A namespace, an etcd prefix and operators of its own, so that killing or pausing
    them harms no other test."""

    def __init__(self, cp: ControlPlane, logs: Path, name: str) -> None:
        import secrets

        from kubernetes import client

        self.cp = cp
        self.logs = logs
        self.namespace = f"{name}-{secrets.token_hex(4)}"
        self.prefix = f"/kurable-{self.namespace}/"
        with cp.api_client() as api:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
            )

    def operator(
        self, executor: str, *extra: str, env: dict[str, str] | None = None
    ) -> OperatorProcess:
        """An operator for this namespace; the same `executor` id for two processes
        means one container restarted in its pod (it takes its runs over at once).
        `env` replaces the control plane's (e.g. a kubeconfig through a proxy)."""
        return OperatorProcess(
            env if env is not None else self.cp.env(),
            self.logs / f"{executor}.log",
            namespaces=[self.namespace],
            etcd_prefix=self.prefix,
            extra_args=["--executor-id", executor, *extra],
        )


@pytest.fixture
def isolated(
    control_plane: ControlPlane, tmp_path: Path, request: pytest.FixtureRequest
) -> Isolated:
    """See `Isolated`; named after the test module."""
    return Isolated(control_plane, tmp_path, request.module.__name__.rsplit("_", 1)[-1][:20])
