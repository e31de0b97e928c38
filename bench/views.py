"""Benchmark: a View's materialization rate, and its query latency on 100,000 rows with and
without an index, in one run.

    .venv/bin/python bench/views.py --rows 100000 --queries 300

Against the etcd of a local control plane (no operator, no endpoint: the cost of the
materializer, `kurable.executor.views`, itself):

1. writes `--rows` entity events to a wallet type's stream, one entity each, 64 per etcd
   transaction (as commands of a batch commit), with the state each carries;
2. materializes two Views of those rows from scratch, one with an index on `balance` and
   one without, timing each from start to caught up (events/s: stream read, CEL columns,
   SQLite writes, offsets);
3. runs `--queries` range queries on each (`balance BETWEEN :lo AND :hi ORDER BY balance
   LIMIT 10`, random bounds) through `Views.query` (the worker-thread hop included) and
   prints p50/p99.

Timings belong here, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aetcd

from kurable.api import crd
from kurable.engine.views import plan
from kurable.executor.views import Views
from kurable.store import keys
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane

PREFIX = "/kurable-bench-views/"
NAMESPACE = "bench"
PER_TXN = 64


def spec(indexed: bool) -> dict[str, Any]:
    return {
        "source": {"entityType": "wallet"},
        "where": "${ state.balance > 0 }",
        "columns": {
            "owner": {"type": "string", "value": "${ entity.name }"},
            "balance": {"type": "integer", "value": "${ state.balance }"},
            "tier": {"type": "string", "value": "${ state.balance >= 1000 ? 'gold' : 'plain' }"},
        },
        "indexes": [["balance"]] if indexed else [],
        "queries": {
            "range": {
                "sql": "SELECT owner, balance FROM wallets WHERE balance BETWEEN :lo AND :hi "
                "ORDER BY balance LIMIT 10",
                "params": {"lo": {"type": "integer"}, "hi": {"type": "integer"}},
            }
        },
    }


async def write_events(etcd: aetcd.Client, rows: int) -> float:
    """Put one event per entity into the type's stream; return the seconds it took."""
    started = time.perf_counter()
    tx = etcd.transactions
    for first in range(0, rows, PER_TXN):
        puts = []
        for i in range(first, min(rows, first + PER_TXN)):
            uid = f"uid-{i:06d}"
            value = {
                "type": "Deposited",
                "data": {"amount": i + 1},
                "version": 1,
                "id": f"{uid}/1",
                "entity": {"namespace": NAMESPACE, "name": f"w{i:06d}", "uid": uid},
                "state": {"balance": random.randint(1, 1_000_000)},
            }
            key = keys.type_event(PREFIX, NAMESPACE, "wallet", uid, 1)
            puts.append(tx.put(key.encode(), json.dumps(value).encode()))
        await etcd.transaction(compare=[], success=puts, failure=[])
    return time.perf_counter() - started


async def materialize(views: Views, name: str, indexed: bool) -> tuple[float, Any]:
    view = plan(NAMESPACE, name, spec(indexed))
    started = time.perf_counter()
    replica = await views.serve(view)
    await replica.current.built.wait()
    return time.perf_counter() - started, view


async def latencies(views: Views, view: Any, queries: int) -> list[float]:
    out = []
    for _ in range(queries):
        lo = random.randint(1, 1_000_000)
        params = {"lo": lo, "hi": lo + 5_000}
        started = time.perf_counter()
        await views.query(view, "range", params)
        out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def run(endpoint: str, rows: int, queries: int) -> None:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        await etcd.delete_prefix(PREFIX.encode())
        wrote = await write_events(etcd, rows)
        print(f"wrote {rows} events in {wrote:.1f}s ({rows / wrote:.0f} events/s into etcd)")
        for indexed in (True, False):
            with tempfile.TemporaryDirectory() as state:
                views = Views(etcd, PREFIX, Path(state))
                try:
                    seconds, view = await materialize(views, "wallets", indexed)
                    count = await views.state(NAMESPACE, "wallets")
                    assert count is not None and count.rows == rows, count
                    took = await latencies(views, view, queries)
                finally:
                    await views.close()
            label = "with an index on balance" if indexed else "without an index"
            print(
                f"{label}: materialized {rows} events in {seconds:.1f}s "
                f"({rows / seconds:.0f} events/s); query p50 {pct(took, 50):.2f} ms, "
                f"p99 {pct(took, 99):.2f} ms over {queries} queries"
            )
        await etcd.delete_prefix(PREFIX.encode())
    finally:
        await etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    random.seed(12)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(crds=crd.write_all(Path(tmp) / "crds")) as cp,
    ):
        asyncio.run(run(cp.etcd_endpoint, args.rows, args.queries))


if __name__ == "__main__":
    main()
