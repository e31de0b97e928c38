"""The etcd floor every benchmark compares against: the latency of the transaction
shape that a journal commit and an entity command are built on."""

from __future__ import annotations

import statistics
import time

import aetcd


async def etcd_floor(etcd: aetcd.Client, samples: int = 500) -> float:
    """p50 of a one-put transaction with a create-revision compare (a journal commit's shape)."""
    tx = etcd.transactions
    latencies = []
    for i in range(samples):
        key = f"/bench-floor/{i:08d}".encode()
        start = time.perf_counter()
        await etcd.transaction(
            compare=[tx.create(key) == 0], success=[tx.put(key, b"x" * 200)], failure=[]
        )
        latencies.append(time.perf_counter() - start)
    await etcd.delete_prefix(b"/bench-floor/")
    return statistics.median(latencies)
