"""Benchmark: N live workflows waiting on a signal, per operator.

    .venv/bin/python bench/scale.py [--runs 1000,3000,10000] [--idle 30] [--signalled 100]

For each N, on a fresh local control plane with one operator (`--executor-id bench-0`):
the time to create N Workflows whose one step waits for the signal GO (16 creates in
flight, in-process client) and until all are Running (seen by one watch); how many
owner keys (`<prefix>workflows/<uid>/owner`, the runs' holds, counted while the executor
they name is live) exist once all are
Running and after the idle window; the operator's RSS; the operator's and the API
server's CPU over `--idle` seconds at rest; after a SIGKILL of the operator and a
restart under the same executor id, the time until every run is held again by the new
incarnation (its owner key names it); then the time for `--signalled` runs to finish
after their signals. Figures, never pass/fail. `--profile FILE` samples the restarted
operator with py-spy from its start until every run is held again (the raw stacks in
FILE, the summary of bench/hotspots.py on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from hotspots import summarise
from kube import Kube, bounded, children, cpu_seconds, percentile, rss_mb
from peers import start_profiler

from kurable.api import crd
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

PREFIX = "/kurable/"
SIGNAL = "kurable.dev/signal.GO"


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": "w", "wait": {"signal": "GO"}}]},
    }


async def owners(endpoint: str) -> dict[str, str]:
    """run uid -> the live executor incarnation holding it: its owner key names an
    incarnation whose executor key (`executors/<slot>`, on its lease) still holds it."""
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        live = {
            kv.value.decode()
            for kv in await etcd.get_prefix(f"{PREFIX}executors/".encode())
            if "/" not in kv.key.decode().removeprefix(f"{PREFIX}executors/")
        }
        held = {}
        # One listing per first hex digit of the uid: a single one of 10,000 runs' keys and
        # journals exceeds the client's 4 MiB response limit.
        for digit in "0123456789abcdef":
            for kv in await etcd.get_prefix(f"{PREFIX}workflows/{digit}".encode()):
                if kv.key.decode().endswith("/owner") and kv.value.decode() in live:
                    held[kv.key.decode().split("/")[-2]] = kv.value.decode()
        return held
    finally:
        await etcd.close()


class Phases:
    """The phase of every Workflow, kept by one watch."""

    def __init__(self) -> None:
        self.phase: dict[str, str] = {}
        self.succeeded: dict[str, float] = {}  # name -> when Succeeded was first seen
        self.changed = asyncio.Event()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.phase.pop(name, None)
        else:
            self.phase[name] = (obj.get("status") or {}).get("phase") or ""
            if self.phase[name] == "Succeeded":
                self.succeeded.setdefault(name, time.monotonic())
        self.changed.set()

    def count(self, phase: str, names: list[str] | None = None) -> int:
        if names is None:
            return sum(1 for p in self.phase.values() if p == phase)
        return sum(1 for n in names if self.phase.get(n) == phase)

    async def until(
        self, phase: str, count: int, limit: float, names: list[str] | None = None
    ) -> float:
        """Seconds until `count` Workflows (of `names`) are in `phase`; NaN on timeout."""
        started = time.monotonic()
        while self.count(phase, names) < count:
            left = limit - (time.monotonic() - started)
            if left <= 0:
                return float("nan")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return time.monotonic() - started


async def held_again(
    endpoint: str, before: dict[str, str], total: int, limit: float
) -> tuple[float, int]:
    """Seconds until every run's owner key names another incarnation than `before`."""
    started = time.monotonic()
    moved = 0
    while time.monotonic() - started < limit:
        held = await owners(endpoint)
        moved = sum(1 for uid, who in held.items() if who != before.get(uid))
        if moved >= total:
            return time.monotonic() - started, moved
        await asyncio.sleep(0.2)
    return float("nan"), moved


class Lines(list[str]):
    """Report lines, printed as they come (a long run shows its progress)."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)


async def one_scale(cp: ControlPlane, work: Path, n: int, args: argparse.Namespace) -> list[str]:
    lines = Lines()
    lines.append(f"N = {n}")
    extra = ["--executor-id", "bench-0"]
    api_pid = children("kube-apiserver")
    operator = OperatorProcess(cp.env(), work / f"operator-{n}-a.log", extra_args=extra).start()
    assert operator.process is not None
    await asyncio.sleep(2)
    lines.append(f"  operator RSS at 0 runs          {rss_mb(operator.process.pid):8.0f} MB")
    phases = Phases()
    names = [f"wait-{i:05d}" for i in range(n)]
    async with Kube(cp.kubeconfig) as kube:
        ready = asyncio.Event()
        watch = asyncio.create_task(kube.watch("workflows", phases.on_event, ready))
        await ready.wait()
        started = time.monotonic()

        async def create(i: int) -> None:
            await kube.create("workflows", manifest(names[i]))

        await bounded(n, 16, create)
        created = time.monotonic() - started
        running = await phases.until("Running", n, args.timeout) + created
        running = max(running, created)
        lines.append(f"  created                         {created:8.1f} s")
        lines.append(
            f"  all Running                     {running:8.1f} s after the first create"
            f" ({phases.count('Running')} of {n})"
        )
        held = await owners(cp.etcd_endpoint)
        lines.append(f"  held (owner keys) when Running  {len(held):8d}")
        await asyncio.sleep(5)
        op_cpu, api_cpu = cpu_seconds(operator.process.pid), cpu_seconds(api_pid)
        await asyncio.sleep(args.idle)
        op_cpu = cpu_seconds(operator.process.pid) - op_cpu
        api_cpu = cpu_seconds(api_pid) - api_cpu
        held = await owners(cp.etcd_endpoint)
        lines.append(f"  operator RSS at rest            {rss_mb(operator.process.pid):8.0f} MB")
        lines.append(
            f"  idle CPU over {args.idle:.0f} s              operator {op_cpu / args.idle:6.1%}"
            f", API server {api_cpu / args.idle:6.1%} of a core"
        )
        lines.append(f"  held (owner keys) after idle    {len(held):8d} of {n}")

        operator.kill()
        operator.stop()
        restarted = time.monotonic()
        second = OperatorProcess(cp.env(), work / f"operator-{n}-b.log", extra_args=extra)
        second.start(wait=False)
        assert second.process is not None
        profiler = None
        if args.profile:
            profiler = start_profiler(second.process.pid, Path(f"{args.profile}.{n}"))
        back, moved = await held_again(cp.etcd_endpoint, held, n, args.timeout)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
            print(f"# restart profile, N = {n} ({args.profile}.{n})")
            print(summarise(Path(f"{args.profile}.{n}")))
        lines.append(
            f"  all held again after SIGKILL    {back:8.1f} s after the restart"
            f" ({moved} of {n} by the new incarnation)"
        )
        since = time.monotonic() - restarted
        if since < 5:
            await asyncio.sleep(5 - since)
        lines.append(f"  operator RSS after restart      {rss_mb(second.process.pid):8.0f} MB")

        chosen = names[: args.signalled]
        sent: dict[str, float] = {}

        async def send(i: int) -> None:
            sent[chosen[i]] = time.monotonic()
            for attempt in range(5):  # a busy API server may drop the connection
                try:
                    await kube.merge_patch(
                        "workflows", chosen[i], {"metadata": {"annotations": {SIGNAL: "{}"}}}
                    )
                    return
                except aiohttp.ClientError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1)

        first = time.monotonic()
        await bounded(len(chosen), 16, send)
        last = time.monotonic()
        finished_after = await phases.until("Succeeded", len(chosen), args.timeout, chosen)
        lines.append(
            f"  {len(chosen)} signalled runs finished     {finished_after:8.1f} s after the last"
            f" signal ({last - first:.1f} s to send them;"
            f" {phases.count('Succeeded', chosen)} Succeeded)"
        )
        waits = [phases.succeeded[n] - sent[n] for n in chosen if n in phases.succeeded]
        lines.append(
            f"  signal -> Succeeded per run     p50 {percentile(waits, 0.5):.2f} s,"
            f" p99 {percentile(waits, 0.99):.2f} s"
        )
        watch.cancel()
        second.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1000", help="comma-separated N, e.g. 1000,3000,10000")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds at rest measured")
    parser.add_argument("--signalled", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="per wait, seconds")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the restart into FILE.N")
    args = parser.parse_args()
    for n in (int(x) for x in args.runs.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            with ControlPlane(crds=crd.write_all(work / "crds")) as cp:
                asyncio.run(one_scale(cp, work, n, args))


if __name__ == "__main__":
    main()
