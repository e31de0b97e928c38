"""What every loop of the executor shares: etcd, the fence, the Kubernetes client, an
HTTP session and wake-up events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aetcd
import aiohttp
import yarl
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from kurable.api.v1alpha1 import GROUP, VERSION, ResourceKind
from kurable.store.journal import Fence, Journal, connect

from .settings import OperatorSettings
from .shards import Shards
from .views import Views

log = logging.getLogger(__name__)

REPORTING_COMPONENT = "kurable-operator"
"""The component that Kurable's Events report (`kubectl describe`'s `From`); the
instance is the operator's pod (OperatorSettings.reporting_instance)."""

LIST_CHUNK = 500
"""Objects per page when listing (a large namespace is listed in several requests)."""

EventQueue = Callable[[Mapping[str, Any], str, str, str], bool]
"""Queues a Kubernetes Event (object, type, reason, message) through the framework that
runs the executor (kopf's batched poster); False when it cannot here (outside the
framework's handlers), and the Event is then posted directly."""


@dataclass
class Runtime:
    """The operator's connections, made at startup and closed at cleanup."""

    etcd: aetcd.Client
    fence: Fence
    journal: Journal
    api: k8s.ApiClient
    http: aiohttp.ClientSession
    shards: Shards
    """The replicas sharing the runs: `shards.owns(uid)` says whether this one drives it."""
    wakeups: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    """Fire-and-forget requests (Events posted outside kopf's handlers)."""
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    """What the runtime was opened with; the loops read their timings from it."""
    event_queue: EventQueue | None = None
    """Set by the framework binding (kurable.handlers); None: post every Event directly."""
    views: Views | None = None
    """The Views this process materializes for `view` steps (under `settings.state_dir`)."""

    @classmethod
    async def open(
        cls, settings: OperatorSettings, event_queue: EventQueue | None = None
    ) -> Runtime:
        """Connect to etcd (and take this executor's lease) and to the API server."""
        config = settings.etcd
        etcd = await connect(config)
        fence = Fence(
            etcd,
            config.prefix,
            ttl=settings.lease_ttl,
            executor=settings.executor_id,
            config=config,
        )
        await fence.start()
        # With kopf's peering one replica is active: it drives every run.
        shards = Shards(etcd, config.prefix, fence.executor, enabled=settings.peering is None)
        await shards.start()
        api = await _kubernetes_client(settings.api_timeout)
        log.info("executor %s on etcd %s prefix %s", fence.id, config.describe(), config.prefix)
        return cls(
            etcd=etcd,
            fence=fence,
            journal=Journal(etcd, config.prefix),
            api=api,
            http=aiohttp.ClientSession(),
            shards=shards,
            settings=settings,
            event_queue=event_queue,
            views=Views(etcd, config.prefix, settings.state_dir),
        )

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.views is not None:
            await self.views.close()
        await self.shards.stop()
        await self.fence.stop()
        await self.http.close()
        await self.api.close()
        await self.etcd.close()

    def wakeup(self, uid: str) -> asyncio.Event:
        """A new event set whenever run `uid` (or a child of it) changes; `unsubscribe`
        it when done. Each waiter has its own, so that clearing one loses no wake-up."""
        event = asyncio.Event()
        self.wakeups.setdefault(uid, set()).add(event)
        return event

    def unsubscribe(self, uid: str, event: asyncio.Event) -> None:
        events = self.wakeups.get(uid)
        if events is not None:
            events.discard(event)
            if not events:
                del self.wakeups[uid]

    def wake(self, uid: str) -> None:
        """Wake everything waiting on run `uid`."""
        for event in self.wakeups.get(uid, ()):
            event.set()

    @property
    def prefix(self) -> str:
        """The operator's etcd key prefix."""
        return self.journal.prefix

    async def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        """One object of ours, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, name
            )
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def delete(
        self, kind: ResourceKind, namespace: str, name: str, uid: str | None = None
    ) -> None:
        """Delete one object of ours (gone already is fine); with `uid`, only that
        object (one recreated under the same name meanwhile is kept)."""
        options: Any = {}
        if uid is not None:
            options = {"preconditions": {"uid": uid}}
        try:
            await k8s.CustomObjectsApi(self.api).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, name, body=options
            )
        except k8s.ApiException as e:
            if e.status == 409 and uid is not None:
                return  # another object by that name now
            if e.status != 404:
                raise

    async def patch_status(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """Merge-patch the status subresource (never the spec: GitOps sees no drift).

        With `resource_version`, the patch applies only to that version of the object
        (the API server answers 409 Conflict otherwise).
        """
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        await k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            kind.plural,
            name,
            body,
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
        )

    async def patch_json(
        self, kind: ResourceKind, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply a JSON patch (RFC 6902) to an object of ours; return the patched object.

        Used on metadata (consuming signal annotations), and on the spec of the child
        runs the operator created itself (cancelling them), never on a user's spec. A failed
        `test` operation answers 422 (the object changed meanwhile).
        """
        obj: dict[str, Any] = await k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            kind.plural,
            name,
            operations,
            _content_type="application/json-patch+json",  # type: ignore[call-arg]
        )
        return obj

    async def list_objects(
        self, kind: ResourceKind, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ours of one kind in a namespace (None: in all namespaces),
        optionally only those matching `label_selector` (`key=value,...`), listed in pages
        of LIST_CHUNK."""
        items: list[dict[str, Any]] = []
        async for page in self.list_pages(kind, namespace, label_selector):
            items.extend(page)
        return items

    async def list_pages(
        self, kind: ResourceKind, namespace: str | None, label_selector: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """`list_objects` one page (LIST_CHUNK objects at most) at a time, so that a caller
        that keeps little of each object never holds them all."""
        api = k8s.CustomObjectsApi(self.api)
        token: str | None = None
        while True:
            page: dict[str, Any] = {"limit": LIST_CHUNK}
            if label_selector is not None:
                page["label_selector"] = label_selector
            if token:
                page["_continue"] = token
            if namespace is None:
                listed = await api.list_cluster_custom_object(GROUP, VERSION, kind.plural, **page)
            else:
                listed = await api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, **page
                )
            yield listed.get("items", [])
            token = (listed.get("metadata") or {}).get("continue")
            if not token:
                return

    async def list_namespaces(self) -> list[str]:
        """The names of all namespaces."""
        listed = await k8s.CoreV1Api(self.api).list_namespace()
        return [ns.metadata.name for ns in listed.items]

    def post_event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `obj` in the background, as kopf.info/warn do; for
        code that runs outside kopf's handlers, where kopf's event queue is unknown."""
        task = asyncio.create_task(self._post_event(obj, type_, reason, message))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _post_event(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        now = datetime.now(UTC).isoformat()
        event: Any = {  # the client takes a plain dict as it is
            "metadata": {"namespace": namespace, "generateName": "kurable-event-"},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self.settings.reporting_instance,
            "source": {"component": REPORTING_COMPONENT},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now,
            "action": "Action?",
        }
        try:
            await k8s.CoreV1Api(self.api).create_namespaced_event(namespace, event)
        except Exception as e:  # an Event is a courtesy: never let it fail a run
            log.warning("could not post event %s for %s: %s", reason, meta.get("name"), e)


async def _kubernetes_client(
    request_timeout: float, kubeconfig: str | None = None
) -> k8s.ApiClient:
    """A client from `kubeconfig` when given, else from the in-cluster service account,
    else from $KUBECONFIG or ~/.kube/config."""
    configuration = k8s.Configuration()
    if kubeconfig is not None:
        await k8s_config.load_kube_config(kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(client_configuration=configuration)
    api = k8s.ApiClient(configuration)
    _default_timeout(api, request_timeout)
    _without_environment_lookups(api)
    return api


def _without_environment_lookups(api: k8s.ApiClient) -> None:
    """Give `api` a session that does not consult the environment per request, unless the
    environment names a proxy for the API server.

    kubernetes_asyncio opens its aiohttp session with `trust_env=True`, so every request
    looks for ~/.netrc and for proxy variables on a worker thread: two thread hops per
    request, on a busy operator thousands per second, each waiting for the GIL. The API
    server needs neither (its requests carry their own credentials; a kubeconfig's
    `proxy-url` is passed per request), so only a proxy named by HTTPS_PROXY / NO_PROXY
    (aiohttp's own rule, `get_env_proxy_for_url`) keeps the lookups.
    """
    rest = api.rest_client
    try:
        aiohttp.helpers.get_env_proxy_for_url(yarl.URL(api.configuration.host or ""))
        return
    except LookupError:
        pass
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # the new session owns the connector; the old one closes nothing
    # kubernetes_asyncio's read buffer: a watch event of a large object exceeds aiohttp's.
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=2**21
    )


def _default_timeout(api: k8s.ApiClient, seconds: float) -> None:
    """Give every request of `api` a timeout unless it names its own.

    kubernetes_asyncio waits forever by default, and it reuses keep-alive connections:
    a request sent on a pooled connection that went silent (a half-dead TCP connection,
    a frozen proxy) would hang its caller for good. With a limit on connecting and on
    each read, such a request fails after `seconds`, aiohttp drops that
    connection, and the caller's retry opens a new one. A long listing that keeps
    sending is not cut short.
    """
    rest = api.rest_client
    request: Callable[..., Awaitable[Any]] = rest.request
    default = aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds)

    async def request_with_timeout(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return await request(*args, _request_timeout=_request_timeout or default, **kwargs)

    rest.request = request_with_timeout  # type: ignore[method-assign]
