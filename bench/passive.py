"""Benchmark: per-run cost of driving, with an in-process client and a watch.

    .venv/bin/python bench/passive.py --runs 20 --waiting 1000

1. `--runs` Workflows of 3 `set` steps, one at a time: latency from create to
   `Succeeded` seen by a watch (p50, p99), and the API-server writes each run caused
   after the user's create (the object's resourceVersion changes seen by the watch,
   plus the Events posted about it).
2. `--waiting` Workflows that wait on a signal: the operator's RSS once all are
   `Running`, against its RSS before (MB, and KB per waiting run), and the liveness
   probe's report (runs driven by a task, runs passive).

Timings belong here, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch

from kurable.api import crd
from kurable.testing import ControlPlane, OperatorProcess

NS = "default"
TERMINAL = ("Succeeded", "Failed", "Invalid", "Cancelled")


def chain(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": f"s{i}", "set": {f"v{i}": i}} for i in range(3)]},
    }


def waiter(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": "hold", "wait": {"signal": "go"}}]},
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return dict(json.loads(r.read() or b"{}"))
    except Exception as e:
        return {"error": str(e)}


class Watcher:
    """Every Workflow event and Event of the namespace, as they arrive."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.versions: dict[str, list[str]] = {}
        self.phases: dict[str, str | None] = {}
        self.events: dict[str, list[str]] = {}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._objects()), asyncio.create_task(self._events())]

    async def _objects(self) -> None:
        while True:
            try:
                await self._watch_objects()
            except Exception as e:  # a dropped or expired watch: list and watch again
                print(f"(watch restarted: {type(e).__name__})")

    async def _watch_objects(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while True:
            async with watch.Watch().stream(
                custom.list_namespaced_custom_object,
                "kurable.dev",
                "v1alpha1",
                NS,
                "workflows",
                timeout_seconds=300,
            ) as stream:
                async for event in stream:
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    rv = obj["metadata"]["resourceVersion"]
                    seen = self.versions.setdefault(name, [])
                    if rv not in seen:
                        seen.append(rv)
                    self.phases[name] = (obj.get("status") or {}).get("phase")
                    self.changed.set()

    async def _events(self) -> None:
        while True:
            try:
                await self._watch_events()
            except Exception as e:
                print(f"(event watch restarted: {type(e).__name__})")

    async def _watch_events(self) -> None:
        core = client.CoreV1Api(self.api)
        while True:
            async with watch.Watch().stream(
                core.list_namespaced_event, NS, timeout_seconds=300
            ) as stream:
                async for event in stream:
                    if event["type"] != "ADDED":
                        continue
                    obj = event["object"]
                    involved = obj.involved_object
                    if involved.kind == "Workflow":
                        self.events.setdefault(involved.name, []).append(obj.reason)

    async def until(self, name: str, phases: tuple[str, ...]) -> None:
        while self.phases.get(name) not in phases:
            self.changed.clear()
            await self.changed.wait()


async def bench(cp: ControlPlane, operator: OperatorProcess, runs: int, waiting: int) -> None:
    await config.load_kube_config(config_file=str(cp.kubeconfig))
    api = client.ApiClient()
    custom = client.CustomObjectsApi(api)
    watcher = Watcher(api)
    watcher.start()
    await asyncio.sleep(1)
    latencies: list[float] = []
    for i in range(runs + 3):  # 3 warm-up runs
        name = f"chain-{i:04d}"
        started = time.monotonic()
        await custom.create_namespaced_custom_object(
            "kurable.dev", "v1alpha1", NS, "workflows", chain(name)
        )
        await watcher.until(name, TERMINAL)
        if i >= 3:
            latencies.append(time.monotonic() - started)
    await asyncio.sleep(3)  # late writes (coalesced status patches, Events) land
    writes = []
    for i in range(3, runs + 3):
        name = f"chain-{i:04d}"
        writes.append(len(watcher.versions[name]) - 1 + len(watcher.events.get(name, [])))
    latencies.sort()
    example = "chain-0003"
    print(f"3-step run latency p50 {latencies[len(latencies) // 2] * 1000:7.1f} ms")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"3-step run latency p99 {p99 * 1000:7.1f} ms")
    print(
        f"API writes per run after create {sum(writes) / len(writes):.2f} "
        f"(e.g. {example}: {len(watcher.versions[example]) - 1} object writes, "
        f"Events {watcher.events.get(example)})"
    )
    if waiting:
        assert operator.process is not None
        pid = operator.process.pid
        before = rss_mb(pid)
        print(f"operator RSS before the waiting runs {before:.0f} MB", flush=True)
        names = [f"wait-{i:05d}" for i in range(waiting)]
        sem = asyncio.Semaphore(16)

        async def create(name: str) -> None:
            async with sem:
                await custom.create_namespaced_custom_object(
                    "kurable.dev", "v1alpha1", NS, "workflows", waiter(name)
                )

        t0 = time.monotonic()
        await asyncio.gather(*(create(n) for n in names))
        for n in names:
            await watcher.until(n, ("Running",))
        print(f"{waiting} waiting runs all Running in {time.monotonic() - t0:.1f}s")
        await asyncio.sleep(10)
        after = rss_mb(pid)
        print(
            f"operator RSS {before:.0f} MB -> {after:.0f} MB with {waiting} waiting runs "
            f"({(after - before) * 1024 / waiting:.1f} KB per run)"
        )
        print(f"probe {probe(operator.health_port)}")
    for task in watcher.tasks:
        task.cancel()
    await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=1000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(crds=crd.write_all(Path(tmp) / "crds")) as cp,
        OperatorProcess(cp.env(), Path(tmp) / "operator.log") as operator,
    ):
        asyncio.run(bench(cp, operator, args.runs, args.waiting))


if __name__ == "__main__":
    main()
