"""Benchmark: N workflows x K `set` steps at concurrency C on the local control plane.

    .venv/bin/python bench/chain.py --workflows 50 --steps 20 --concurrency 10

Prints workflows/s, the step latency p50/p99 (time between consecutive step commits,
from the journal), etcd writes per step (journal records, and all etcd revisions,
which include the API server's status writes), and the raw etcd transaction p50
measured in the same run, so that the step/etcd ratio is reported. Timings belong
here, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from floor import etcd_floor  # bench/ is the script directory

from kurable.api import crd
from kurable.engine.journal import Record, parse_time
from kurable.store.journal import EtcdConfig, Journal, connect
from kurable.testing import ControlPlane, OperatorProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def manifest(name: str, steps: int) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "input": {"seed": 1},
            "steps": [
                {"name": f"s{i}", "set": {f"v{i}": f"${{ input.seed + {i} }}"}}
                for i in range(steps)
            ],
        },
    }


async def measure_floor(endpoint: str) -> float:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        return await etcd_floor(etcd)
    finally:
        await etcd.close()


async def read_journals(endpoint: str, uids: list[str]) -> tuple[list[list[Record]], int]:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        journal = Journal(etcd, "/kurable/")
        out = [(await journal.load(uid))[0] for uid in uids]
        revision = int((await etcd.status()).raft_index)
        return out, revision
    finally:
        await etcd.close()


async def revision(endpoint: str) -> int:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        result = await etcd.get_prefix(b"/kurable-bench-none/")
        return int(result.header.revision)
    finally:
        await etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(crds=crd.write_all(Path(tmp) / "crds")) as cp,
        OperatorProcess(cp.env(), Path(tmp) / "operator.log"),
    ):
        floor = asyncio.run(measure_floor(cp.etcd_endpoint))
        rev_before = asyncio.run(revision(cp.etcd_endpoint))
        names = [f"chain-{i:04d}" for i in range(args.workflows)]
        started = time.monotonic()
        pending = list(names)
        running: list[str] = []
        done: list[str] = []
        while pending or running:
            while pending and len(running) < args.concurrency:
                name = pending.pop(0)
                cp.kubectl("create", "-f", "-", input=json.dumps(manifest(name, args.steps)))
                running.append(name)
            listing = json.loads(cp.kubectl("get", "workflows", "-o", "json").stdout)
            phases = {
                i["metadata"]["name"]: (i.get("status") or {}).get("phase")
                for i in listing["items"]
            }
            for name in list(running):
                if phases.get(name) in ("Succeeded", "Failed", "Invalid"):
                    assert phases[name] == "Succeeded", f"{name} ended {phases[name]}"
                    running.remove(name)
                    done.append(name)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        listing = json.loads(cp.kubectl("get", "workflows", "-o", "json").stdout)
        uids = [i["metadata"]["uid"] for i in listing["items"]]
        journals, _ = asyncio.run(read_journals(cp.etcd_endpoint, uids))
        rev_after = asyncio.run(revision(cp.etcd_endpoint))

    latencies = []
    records = 0
    for journal in journals:
        records += len(journal)
        commits = [parse_time(r.at) for r in journal if r.type == "StepCompleted"]
        latencies += [(b - a).total_seconds() for a, b in itertools.pairwise(commits)]
    total_steps = args.workflows * args.steps
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"workflows={args.workflows} steps={args.steps} concurrency={args.concurrency}")
    print(f"workflows/s            {args.workflows / elapsed:8.2f}  ({elapsed:.1f}s in all)")
    print(f"step latency p50       {p50 * 1000:8.2f} ms")
    print(f"step latency p99       {p99 * 1000:8.2f} ms")
    print(f"journal records/step   {records / total_steps:8.2f}")
    print(
        f"etcd revisions/step    {(rev_after - rev_before) / total_steps:8.2f}"
        "  (journal + fencing + API server status writes)"
    )
    print(f"etcd txn p50 (floor)   {floor * 1000:8.2f} ms")
    print(f"step p50 / etcd p50    {p50 / floor:8.2f}x")


if __name__ == "__main__":
    main()
