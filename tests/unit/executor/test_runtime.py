"""The operator's and the endpoint's Kubernetes client: no per-request environment
lookups unless the environment names a proxy for the API server."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client as k8s

from kurable.executor.runtime import _without_environment_lookups

PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


async def session_trusts_env(host: str) -> bool:
    api = k8s.ApiClient(k8s.Configuration(host=host))
    try:
        _without_environment_lookups(api)
        return bool(api.rest_client.pool_manager.trust_env)
    finally:
        await api.close()


async def test_the_session_consults_the_environment_only_for_a_proxied_api_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    assert not await session_trusts_env("https://10.0.0.1:6443")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert await session_trusts_env("https://10.0.0.1:6443")
    monkeypatch.setenv("no_proxy", "10.0.0.1")
    assert not await session_trusts_env("https://10.0.0.1:6443")


async def test_the_new_session_keeps_the_connector_and_the_old_one_closes_nothing() -> None:
    api = k8s.ApiClient(k8s.Configuration(host="https://10.0.0.1:6443"))
    old = api.rest_client.pool_manager
    connector = old.connector
    _without_environment_lookups(api)
    assert api.rest_client.pool_manager.connector is connector
    await old.close()
    assert not connector.closed
    await api.close()
    assert connector.closed
