"""What the Kurable benches share: an in-process async client for the local API server
(aiohttp with the admin kubeconfig's certificates, one watch instead of polling), the
API server's and etcd's own counters, and CPU and memory read from /proc.

No `kubectl` process per request: the benches measure Kurable, not their driver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import ssl
import statistics
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

GROUP = "kurable.dev"
VERSION = "v1alpha1"
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ssl_context(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    """The server URL and a TLS context with the client certificate of `kubeconfig`
    (the first cluster and user; certificates embedded as *-data)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(cert, key)
    return cluster["server"], context


class Kube:
    """A raw JSON client for the custom resources of one namespace.

    Errors of the API server raise `aiohttp.ClientResponseError` with its status."""

    def __init__(self, kubeconfig: Path, namespace: str = "default", limit: int = 64) -> None:
        self.server, self._ssl = ssl_context(kubeconfig)
        self.namespace = namespace
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._limit)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Kube in `async with`"
        return self._session

    def url(self, plural: str, name: str = "", sub: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return self.server + path

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.url(plural), json=body) as reply:
            reply.raise_for_status()
            result: dict[str, Any] = await reply.json()
            return result

    async def merge_patch(
        self, plural: str, name: str, body: dict[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(
            self.url(plural, name, sub), data=json.dumps(body), headers=headers
        ) as reply:
            reply.raise_for_status()
            result: dict[str, Any] = await reply.json()
            return result

    async def list(self, plural: str) -> dict[str, Any]:
        async with self.session.get(self.url(plural)) as reply:
            reply.raise_for_status()
            result: dict[str, Any] = await reply.json()
            return result

    async def delete_all(self, plural: str) -> None:
        async with self.session.delete(self.url(plural)) as reply:
            reply.raise_for_status()

    async def watch(
        self,
        plural: str,
        on_event: Callable[[str, dict[str, Any]], None],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Call `on_event(type, object)` for every object listed now ("ADDED") and every
        change after, for ever: one watch, resumed from the last resource version when the
        server closes it, and re-listed (every object "ADDED" again) when the connection
        fails or the version expired, so a busy API server cannot leave the view stale."""
        version = ""
        while True:
            try:
                if not version:
                    listing = await self.list(plural)
                    for item in listing["items"]:
                        on_event("ADDED", item)
                    version = listing["metadata"]["resourceVersion"]
                    if ready is not None:
                        ready.set()
                params = {
                    "watch": "1",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "300",
                }
                async with self.session.get(
                    self.url(plural), params=params, timeout=aiohttp.ClientTimeout(total=None)
                ) as reply:
                    reply.raise_for_status()
                    async for line in reply.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone: the version expired
                            version = ""
                            break
                        version = obj["metadata"].get("resourceVersion", version)
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], obj)
            except (aiohttp.ClientError, TimeoutError):
                version = ""
                await asyncio.sleep(1)

    async def metrics(self) -> str:
        async with self.session.get(self.server + "/metrics") as reply:
            reply.raise_for_status()
            return await reply.text()


_REQUEST = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_requests(metrics: str) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total summed by (verb, resource, subresource)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for labels, value in _REQUEST.findall(metrics):
        found = dict(_LABEL.findall(labels))
        key = (found.get("verb", ""), found.get("resource", ""), found.get("subresource", ""))
        counts[key] += int(float(value))
    return counts


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def writes(
    before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]]
) -> dict[str, int]:
    """Write requests between two `api_requests` readings: {"PATCH workflows/status": n}."""
    out: dict[str, int] = {}
    for key, value in (after - before).items():
        verb, resource, sub = key
        if verb in WRITE_VERBS and value:
            label = f"{verb} {resource}" + (f"/{sub}" if sub else "")
            out[label] = out.get(label, 0) + value
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


async def etcd_counters(session: aiohttp.ClientSession, endpoint: str) -> dict[str, float]:
    """etcd's write counters: {"put": n, "txn": n, "delete": n, "range": n}."""
    async with session.get(f"http://{endpoint}/metrics") as reply:
        text = await reply.text()
    out = {}
    for name in ("put", "txn", "delete", "range"):
        found = re.search(rf"^etcd_mvcc_{name}_total(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
        out[name] = float(found.group(1)) if found else float("nan")
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (seconds), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(name: str, parent: int | None = None) -> int:
    """The pid of the child process of `parent` (default: this one) whose command name
    starts with `name` (the control plane's etcd and kube-apiserver)."""
    parent = os.getpid() if parent is None else parent
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and comm.startswith(name[:15]):
            return int(entry.name)
    raise LookupError(f"no child process {name!r} of {parent}")


class CPU:
    """CPU seconds of named processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.used = {k: cpu_seconds(p) - self._start[k] for k, p in self.pids.items()}
        return self.used


async def bounded(count: int, concurrency: int, work: Callable[[int], Awaitable[None]]) -> None:
    """Run `work(i)` for i in range(count), at most `concurrency` at once."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
