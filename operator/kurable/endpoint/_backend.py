"""The connections one endpoint process shares between requests, and their failures.

`Backend` holds the endpoint's own Kubernetes client (its ServiceAccount), the operator's
etcd client and the Gatekeeper. `outage()` turns a backing service that does not answer
into 503 + Retry-After: a request that fails so has changed nothing it could not repeat
(entity commands and journal reads are atomic in etcd; object writes are single requests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import GROUP, VERSION
from kurable.executor.runtime import _kubernetes_client as kubernetes_client
from kurable.executor.views import Views
from kurable.store.etcd import EtcdAuthError, EtcdClient

from ._auth import API_ERRORS, Gatekeeper, unavailable
from ._problems import Problem
from ._settings import EndpointSettings


@dataclass
class Backend:
    """What the routes use; made by `open_backend` at startup, closed at shutdown."""

    settings: EndpointSettings
    api: k8s.ApiClient
    etcd: aetcd.Client
    gate: Gatekeeper
    session: aiohttp.ClientSession
    """For entity commands' HTTP handlers."""
    views: Views
    """The Views this process materializes (under `settings.state_dir`) and queries."""

    @property
    def prefix(self) -> str:
        return self.settings.etcd.prefix

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A kurable.dev object, None when it does not exist."""
        with outage():
            try:
                obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name
                )
            except k8s.ApiException as e:
                if e.status == 404:
                    return None
                raise
        return obj

    async def close(self) -> None:
        await self.views.close()
        await self.session.close()
        await self.api.close()
        await self.etcd.close()


async def open_backend(settings: EndpointSettings) -> Backend:
    """Connect to the API server (in-cluster, else $KUBECONFIG) and to etcd.

    etcd need not be up yet: its client connects lazily (TLS, authentication and failover
    across the endpoints as kurable.store.etcd says), and `/readyz` says when it
    answers."""
    # The operator's way: in-cluster ServiceAccount, else $KUBECONFIG, and a timeout on
    # every request so that a silent keep-alive connection cannot hang a request.
    api = await kubernetes_client(settings.api_timeout)
    etcd = EtcdClient(settings.etcd, timeout=settings.etcd_timeout)
    gate = Gatekeeper(
        api,
        token_ttl=settings.token_ttl,
        access_ttl=settings.access_ttl,
        allow_anonymous=settings.allow_anonymous,
    )
    views = Views(etcd, settings.etcd.prefix, settings.state_dir)
    return Backend(settings, api, etcd, gate, aiohttp.ClientSession(), views)


ETCD_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    EtcdAuthError,
)


@contextlib.contextmanager
def outage() -> Iterator[None]:
    """Raise Problem 503 (Retry-After) for etcd or the API server not answering."""
    try:
        yield
    except ETCD_ERRORS as e:
        raise unavailable("etcd", e) from None
    except k8s.ApiException as e:
        if e.status >= 500 or e.status == 429:
            raise unavailable("the API server", e) from None
        raise
    except API_ERRORS as e:
        raise unavailable("the API server", e) from None


__all__ = ["Backend", "Problem", "open_backend", "outage"]
