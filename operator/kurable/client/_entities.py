"""Sending commands to Entities from Python: `AsyncClient` and its blocking twin `Client`.

A command is executed where it is sent: the client reads the Entity and its
EntityType from the API server (so Kubernetes RBAC decides who may read them),
runs `kurable.executor.commands.execute_command` against the operator's etcd
(`EtcdConfig.from_env()`, as the operator), and then projects the new state into
the Entity's status. A client that dies between the commit and the status patch
leaves status behind; the operator's resync puts it right.

    from kurable.client import Client

    with Client.from_kubeconfig() as kurable:
        balance = kurable.send_command("shop", "alice", "withdraw", {"amount": 10}, "order-7")
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import aetcd
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE, GROUP, VERSION
from kurable.engine.entities import Snapshot
from kurable.executor.commands import (
    CommandResult,
    execute_command,
    http_handler,
    status_projector,
)
from kurable.store import entities as store
from kurable.store.entities import EntityRef
from kurable.store.journal import EtcdConfig, connect

T = TypeVar("T")

# kubernetes_asyncio writes a kubeconfig's inline certificates to temp files that it
# shares process-wide by content, and publishes a file's name before writing it: a
# second thread loading the same kubeconfig meanwhile gets an empty CA file (TLS setup
# fails with "no certificate or crl found"). Blocking Clients made in several threads
# therefore load their kubeconfig one at a time.
_KUBECONFIG_LOCK = threading.Lock()


class EntityNotFound(LookupError):
    """The Entity (or its EntityType) does not exist, or is being deleted."""


class AsyncClient:
    """Commands and reads for Entities, on asyncio."""

    def __init__(
        self,
        api: k8s.ApiClient,
        etcd: aetcd.Client,
        prefix: str,
        default_namespace: str = "default",
    ) -> None:
        self.api = api
        self.etcd = etcd
        self.prefix = prefix
        self.default_namespace = default_namespace

    @classmethod
    async def from_kubeconfig(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        etcd: EtcdConfig | None = None,
    ) -> AsyncClient:
        """Connect with a kubeconfig ($KUBECONFIG by default) and the operator's etcd config."""
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
        contexts, active = k8s_config.list_kube_config_contexts(config_file=path)
        if context is not None:
            active = next((c for c in contexts if c.get("name") == context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
        config = etcd or EtcdConfig.from_env()
        api = k8s.ApiClient(configuration)
        try:
            etcd_client = await connect(config, request_timeout=10)
        except BaseException:
            await api.close()
            raise
        return cls(api, etcd_client, config.prefix, namespace)

    async def close(self) -> None:
        """Close both connections."""
        await self.api.close()
        await self.etcd.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send_command(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> Any:
        """Send `command` to Entity `entity` and return its reply.

        Raises CommandRejected (state unchanged) or EntityNotFound. Without a
        `command_id` a fresh one is made, so a retry of this call may apply twice:
        pass an id derived from the caller's own durable state to get exactly once.
        """
        result = await self.execute(namespace, entity, command, input, command_id)
        return result.reply

    async def execute(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> CommandResult:
        """Like `send_command`, returning the whole CommandResult (version, duplicate...)."""
        namespace = namespace or self.default_namespace
        obj = await self._get(ENTITY.plural, namespace, entity, "Entity")
        if obj["metadata"].get("deletionTimestamp"):
            raise EntityNotFound(f"Entity {entity!r} in namespace {namespace!r} is being deleted")
        ref = EntityRef.from_object(obj)
        entity_type = await self._get(ENTITY_TYPE.plural, namespace, ref.type, "EntityType")
        return await execute_command(
            self.etcd,
            self.prefix,
            ref,
            entity_type,
            command,
            input,
            command_id or f"client/{uuid.uuid4()}",
            on_committed=self._project,
            ask=http_handler(),
        )

    async def get_state(self, namespace: str | None, entity: str) -> Snapshot:
        """The entity's current state and version, from etcd (never truncated)."""
        ref = await self._ref(namespace, entity)
        snapshot = await store.load_snapshot(self.etcd, self.prefix, ref)
        if snapshot is None:
            raise EntityNotFound(f"Entity {entity!r} has no state yet (not initialized)")
        return snapshot

    async def history(self, namespace: str | None, entity: str) -> list[dict[str, Any]]:
        """The entity's event log, oldest first: `{type, data, commandId, at, version}` each."""
        return await store.load_events(self.etcd, self.prefix, await self._ref(namespace, entity))

    async def _ref(self, namespace: str | None, entity: str) -> EntityRef:
        namespace = namespace or self.default_namespace
        return EntityRef.from_object(await self._get(ENTITY.plural, namespace, entity, "Entity"))

    async def _project(self, ref: EntityRef, result: CommandResult) -> None:
        await status_projector(self.api)(ref, result)

    async def _get(self, plural: str, namespace: str, name: str, kind: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = await k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except k8s.ApiException as e:
            if e.status == 404:
                raise EntityNotFound(
                    f"{kind} {name!r} not found in namespace {namespace!r}"
                ) from None
            raise
        return obj


class Client:
    """The blocking twin of AsyncClient (for scripts and the CLI; not inside an event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inner: AsyncClient) -> None:
        self._loop = loop
        self._inner = inner

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        etcd: EtcdConfig | None = None,
    ) -> Client:
        """Connect with a kubeconfig ($KUBECONFIG by default) and the operator's etcd config."""
        loop = asyncio.new_event_loop()
        try:
            with _KUBECONFIG_LOCK:
                inner = loop.run_until_complete(
                    AsyncClient.from_kubeconfig(kubeconfig, context, etcd)
                )
        except BaseException:
            loop.close()
            raise
        return cls(loop, inner)

    @property
    def default_namespace(self) -> str:
        """The kubeconfig context's namespace (or `default`)."""
        return self._inner.default_namespace

    def send_command(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> Any:
        """Send `command` to Entity `entity` and return its reply (see AsyncClient)."""
        return self._run(self._inner.send_command(namespace, entity, command, input, command_id))

    def execute(
        self,
        namespace: str | None,
        entity: str,
        command: str,
        input: Any = None,
        command_id: str | None = None,
    ) -> CommandResult:
        """Send `command` and return the whole CommandResult."""
        return self._run(self._inner.execute(namespace, entity, command, input, command_id))

    def get_state(self, namespace: str | None, entity: str) -> Snapshot:
        """The entity's current state and version, from etcd."""
        return self._run(self._inner.get_state(namespace, entity))

    def history(self, namespace: str | None, entity: str) -> list[dict[str, Any]]:
        """The entity's event log, oldest first."""
        return self._run(self._inner.history(namespace, entity))

    def close(self) -> None:
        """Close the connections and the private event loop."""
        try:
            self._run(self._inner.close())
        finally:
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)
