"""Benchmark: entity commands through the endpoint next to the same commands in-process.

    .venv/bin/python bench/endpoint.py --commands 200 --concurrency 8 --rounds 3

On a local control plane (no operator; the EntityType's status is set Valid as the
operator would): a wallet EntityType and Entity, the endpoint as a
real process (`kurable endpoint`), and a ServiceAccount token bound to cluster-admin.
Each run sends deposits to one entity:

- in-process: the path the endpoint wraps, called directly in this process (read the
  Entity and its EntityType from the API server, `execute_command` against etcd, project
  status), as the endpoint's route does;
- endpoint: `kurable.client.AsyncClient.execute`, i.e. `POST /v1/namespaces/bench/
  entities/alice/commands/deposit` with the token (its TokenReview cached after the first
  request; the SubjectAccessReview as the endpoint does it: cached per attributes for
  `--access-cache-seconds`, see kurable.endpoint._auth).

Two endpoints run side by side: one as deployed (allowed SubjectAccessReview answers
cached, `--access-cache-seconds` 10) and one asking the API server at every request
(`--access-cache-seconds 0`, how the endpoint first shipped). One sender, each command
sent through every path in turn (so that a drift of the machine or of the entity over the
run weighs on all paths alike); then `--concurrency` senders, path after path, in
`--rounds` interleaved rounds. Prints commands/s, p50 and p99 latency, and the p50 each
endpoint adds: the difference of the p50s and, for one sender, the median of the
differences between each command and its in-process neighbour (paired). The HTTP floor row
is a `GET /healthz` through the same client (what any request costs).
Timings belong here, never in pass/fail tests. `--profile FILE` samples the cached
endpoint with py-spy (`pip install py-spy`) during its runs (with one sender, the whole
alternating phase) and writes the share of samples per function (inclusive, from py-spy's
collapsed stacks) to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client as k8s
from prometheus_client import parser as prometheus_parser

from kurable.api import crd
from kurable.cli._dev import admin_token
from kurable.client import AsyncClient
from kurable.executor.commands import execute_command, http_handler, status_projector
from kurable.executor.runtime import _kubernetes_client as kubernetes_client
from kurable.store.entities import EntityRef
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, EndpointProcess

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
FLOOR = "HTTP floor (GET /healthz)"
"""The client, uvicorn and FastAPI alone: no auth, no API server, no etcd."""
Send = Callable[[int], Awaitable[None]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(send: Send, commands: int, concurrency: int, latencies: list[float]) -> float:
    """Seconds `commands` sends by `concurrency` senders take; each latency appended."""
    counter = itertools.count()

    async def sender() -> None:
        while (n := next(counter)) < commands:
            start = time.perf_counter()
            await send(n)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started


async def alternate(senders: dict[str, Send], commands: int, offset: int) -> dict[str, list[float]]:
    """One sender: command n goes through every path in turn (the order rotated each
    time), so that all paths see the same machine and the same entity at each step;
    each path's latencies, in sending order."""
    labels = list(senders)
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    for n in range(commands):
        for i in range(len(labels)):
            label = labels[(n + i) % len(labels)]
            start = time.perf_counter()
            await senders[label](offset + n)
            latencies[label].append(time.perf_counter() - start)
    return latencies


COMMAND_ROUTE = "/v1/namespaces/{namespace}/entities/{name}/commands/{command}"


async def server_seconds(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    """The endpoint's own account of its command requests (its latency histogram's sum,
    seconds, and count), read from its /metrics."""
    async with session.get(f"{url}/metrics") as reply:
        text = await reply.text()
    found = {"sum": 0.0, "count": 0.0}
    for family in prometheus_parser.text_string_to_metric_families(text):
        if family.name != "kurable_endpoint_request_duration_seconds":
            continue
        for sample in family.samples:
            kind = sample.name.rpartition("_")[2]
            if kind in found and sample.labels.get("route") == COMMAND_ROUTE:
                found[kind] += sample.value
    return found["sum"], int(found["count"])


def shifted(send: Send, offset: int, n: int) -> Awaitable[None]:
    """`send` with its command number moved by `offset` (fresh ids in every round)."""
    return send(offset + n)


async def bench(
    cp: ControlPlane,
    urls: dict[str, str],
    token: str,
    commands: int,
    concurrency: int,
    rounds: int,
    profile: Callable[[], Any] | None = None,
) -> None:
    """Each of `rounds` rounds sends `commands` commands in-process and through each
    endpoint in `urls` (label -> URL), one after the other, so that all see the same
    machine; the figures pool every round's latencies."""
    run = uuid.uuid4().hex[:6]
    # The endpoint's own client factory (and its settings), so that both paths talk to the
    # API server alike.
    api = await kubernetes_client(30.0, str(cp.kubeconfig))
    custom = k8s.CustomObjectsApi(api)
    config = EtcdConfig(endpoints=cp.etcd_endpoint)
    etcd = await connect(config)
    clients = {label: AsyncClient(url, token) for label, url in urls.items()}

    async with aiohttp.ClientSession() as session:
        ask = http_handler(session)

        async def in_process(n: int) -> None:
            obj = await custom.get_namespaced_custom_object(
                "kurable.dev", "v1alpha1", NAMESPACE, "entities", "alice"
            )
            ref = EntityRef.from_object(obj)
            entity_type = await custom.get_namespaced_custom_object(
                "kurable.dev", "v1alpha1", NAMESPACE, "entitytypes", ref.type
            )
            await execute_command(
                etcd, config.prefix, ref, entity_type, "deposit", {"amount": 1},
                f"in/{run}/{n}", on_committed=status_projector(api, known=obj), ask=ask,
            )  # fmt: skip

        def through(label: str, client: AsyncClient) -> Send:
            async def send(n: int) -> None:
                await client.execute(
                    NAMESPACE, "alice", "deposit", {"amount": 1}, f"{label}/{run}/{n}"
                )

            return send

        floor_client = next(iter(clients.values()))

        async def http_floor(n: int) -> None:
            await floor_client.request("GET", "/healthz")

        senders: dict[str, Send] = {"in-process": in_process}
        senders.update({label: through(label, c) for label, c in clients.items()})
        senders[FLOOR] = http_floor
        for send in senders.values():
            await send(-1)  # warm: connections open, the token's review cached
        print(f"commands={commands} x {rounds} rounds (one entity)")
        print(f"{'':40} {'cmd/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8}")
        for width in (1, concurrency):
            latencies: dict[str, list[float]] = {label: [] for label in senders}
            seconds = dict.fromkeys(senders, 0.0)
            paired: dict[str, list[float]] = {label: [] for label in senders}
            inside = dict.fromkeys(senders, 0.0)
            inside_count = dict.fromkeys(senders, 0)
            for r in range(rounds):
                offset = (width * rounds + r) * commands
                if width == 1:
                    sampler = profile() if profile else None
                    before = {u: await server_seconds(session, u) for u in urls.values()}
                    got = await alternate(senders, commands, offset)
                    for label, url in urls.items():
                        (s0, n0), (s1, n1) = before[url], await server_seconds(session, url)
                        inside[label] += s1 - s0
                        inside_count[label] += n1 - n0
                    if sampler is not None:
                        sampler.send_signal(signal.SIGINT)
                        sampler.wait(30)
                    for label, values in got.items():
                        latencies[label] += values
                        seconds[label] += sum(values)
                        beside = got["in-process"]
                        paired[label] += [a - b for a, b in zip(values, beside, strict=True)]
                    continue
                for label, send in senders.items():
                    sampler = profile() if profile and label != "in-process" else None
                    seconds[label] += await measure(
                        functools.partial(shifted, send, offset), commands, width, latencies[label]
                    )
                    if sampler is not None:
                        sampler.send_signal(signal.SIGINT)
                        sampler.wait(30)
            base = percentile(latencies["in-process"], 0.5)
            for label, values in latencies.items():
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                rate = len(values) / seconds[label]
                name = f"{label}, {width} sender{'s' if width > 1 else ''}"
                added = "" if label in ("in-process", FLOOR) else f"{(p50 - base) * 1000:8.2f}"
                if added and paired[label]:
                    added += f"  (paired: {percentile(paired[label], 0.5) * 1000:.2f})"
                print(f"{name:40} {rate:8.1f} {p50 * 1000:8.2f} {p99 * 1000:8.2f} {added}")
            if width == 1:
                mean = sum(latencies["in-process"]) / len(latencies["in-process"])
                print(f"  mean in-process {mean * 1000:.2f} ms; inside each endpoint (its own")
                print("  histogram: from the request to the end of the answer, mean):", end="")
                for label, n in inside_count.items():
                    if n:
                        print(f" {label} {inside[label] / n * 1000:.2f} ms;", end="")
                print()
    for client in clients.values():
        await client.close()
    await etcd.close()
    await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=500, help="commands per run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent senders")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the endpoints into FILE")
    args = parser.parse_args()
    if args.profile and PY_SPY is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    with ControlPlane() as cp:
        cp.install_crds(crd.write_all(cp.state_dir / "crds"))
        cp.kubectl("create", "namespace", NAMESPACE)
        wallet = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())
        entity = {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Entity",
            "metadata": {"name": "alice"},
            "spec": {"type": "wallet", "initialState": {"balance": 0}},
        }
        cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(wallet))
        cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(entity))
        # As the operator would mark it once checked (none runs here): a Valid type's
        # definition is not checked again at every command, on either path.
        valid = {"status": {"phase": "Valid", "observedGeneration": 1}}
        cp.kubectl(
            "patch", "-n", NAMESPACE, "entitytype/wallet", "--subresource=status",
            "--type=merge", "-p", json.dumps(valid),
        )  # fmt: skip
        token = admin_token(cp)
        log = cp.state_dir / "endpoint.log"
        uncached = cp.state_dir / "endpoint-uncached.log"
        with (
            EndpointProcess(cp.env(), log) as endpoint,
            EndpointProcess(cp.env(), uncached, extra_args=["--access-cache-seconds", "0"]) as old,
        ):
            profile = None
            if args.profile:
                pids = [p.process.pid for p in (endpoint, old) if p.process]
                profile = functools.partial(py_spy, pids[0], Path(args.profile))
            urls = {"endpoint (SAR cached)": endpoint.url, "endpoint (SAR per request)": old.url}
            asyncio.run(
                bench(cp, urls, token, args.commands, args.concurrency, args.rounds, profile)
            )
            if args.profile:
                summarize(Path(args.profile))


PY_SPY = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (appending collapsed stacks to `out`) until SIGINT."""
    part = out.with_suffix(f".{time.monotonic_ns()}.raw")
    return subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "-o", str(part), "-r", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize(out: Path) -> None:
    """The share of samples in which each function is on the stack (inclusive), top 40."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for part in sorted(out.parent.glob(out.stem + ".*.raw")):
        for line in part.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            for frame in set(stack.split(";")):
                inclusive[frame] += n
    lines = [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(40)]
    out.write_text(f"{total} samples\n" + "\n".join(lines) + "\n")
    print(f"profile: {out}")


if __name__ == "__main__":
    main()
