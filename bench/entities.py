"""Benchmark: entity commands through `execute_command` on a hot entity and on many.

    .venv/bin/python bench/entities.py --commands 2000 --concurrency 16 --entities 64

Four runs against the etcd of a local control plane (no operator, no API server in
the path: this is the cost of one exactly-once command, not of status projection):

- hot, sequential: one sender, N commands to one entity, one after the other;
- hot, one process: C senders sharing one etcd client, N commands to one entity, as
  in the process that owns the entity (they queue in its per-entity queue);
- hot, several processes: C senders, N commands to one entity; half the senders share
  one etcd client (they queue), half have their own (each its own queue: they race in
  etcd and retry on a lost version compare), as when clients and an operator collide;
- many, concurrent: C senders, N commands spread over M entities, one client.

Prints commands/s, p50/p99 command latency and their ratio for each, and the etcd floor
of the same run: the p50 of a one-put transaction with a compare, as in bench/chain.py.
Timings belong here, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from pathlib import Path

import aetcd
import yaml
from floor import etcd_floor  # bench/ is the script directory

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.executor.commands import execute_command
from kurable.store.entities import EntityRef, load_snapshot
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/kurable-bench/"
# The EntityType as senders get it from the API server: its status says Valid for its
# generation, so a command does not check the whole definition again (a parsed spec
# would be: ~20 ms of CEL compiling and schema checks per command on this machine type).
WALLET = {
    **yaml.safe_load((ROOT / "examples" / "transfer" / "00-wallet.yaml").read_text()),
    "metadata": {"name": "wallet", "namespace": "bench", "generation": 1},
    "status": {"phase": "Valid", "observedGeneration": 1},
}
EntityTypeSpec.model_validate(WALLET["spec"])  # the example still parses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wallet(name: str) -> EntityRef:
    return EntityRef("bench", name, str(uuid.uuid4()), "wallet", {"balance": 0})


async def send(
    clients: list[aetcd.Client],
    entities: list[EntityRef],
    commands: int,
    concurrency: int,
) -> tuple[float, list[float]]:
    """`commands` deposits by `concurrency` senders; sender i uses client i mod len(clients)
    and sends to entity k mod len(entities) for its k-th share. Returns (seconds, latencies)."""
    latencies: list[float] = []
    counter = itertools.count()

    async def sender(index: int) -> None:
        etcd = clients[index % len(clients)]
        while (n := next(counter)) < commands:
            entity = entities[n % len(entities)]
            start = time.perf_counter()
            await execute_command(
                etcd, PREFIX, entity, WALLET, "deposit", {"amount": 1}, f"bench/{entity.name}/{n}"
            )
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(concurrency)))
    return time.perf_counter() - started, latencies


async def check(etcd: aetcd.Client, entities: list[EntityRef], commands: int) -> None:
    """Every command applied once: the balances add up to the number of deposits."""
    total = 0
    for entity in entities:
        snapshot = await load_snapshot(etcd, PREFIX, entity)
        assert snapshot is not None
        total += snapshot.state["balance"]
    assert total == commands, f"{total} != {commands}"


async def bench(endpoint: str, commands: int, concurrency: int, entities: int) -> None:
    config = EtcdConfig(endpoints=endpoint, prefix=PREFIX)
    own = [await connect(config) for _ in range(max(1, concurrency // 2))]
    shared = own[0]
    try:
        floor = await etcd_floor(shared)
        hot = [wallet("hot-seq")]
        runs = [("hot entity, 1 sender", hot, [shared], 1)]
        runs.append(
            (
                f"hot entity, {concurrency} senders, 1 process",
                [wallet("hot-one")],
                [shared],
                concurrency,
            )
        )
        runs.append(
            (
                f"hot entity, {concurrency} senders, {len(own)} clients",
                [wallet("hot-conc")],
                [shared] * (concurrency - len(own)) + own,
                concurrency,
            )
        )
        many = [wallet(f"many-{i}") for i in range(entities)]
        runs.append((f"{entities} entities, {concurrency} senders", many, [shared], concurrency))
        print(f"commands={commands} concurrency={concurrency} entities={entities}")
        print(f"{'':40} {'cmd/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} {'p50/etcd':>9}")
        for label, targets, clients, senders in runs:
            elapsed, latencies = await send(clients, targets, commands, senders)
            await check(shared, targets, commands)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(
                f"{label:40} {commands / elapsed:9.1f} {p50 * 1000:8.2f} {p99 * 1000:8.2f}"
                f" {p99 / p50:8.1f} {p50 / floor:8.2f}x"
            )
        print(f"{'etcd txn p50 (floor)':40} {'':9} {floor * 1000:8.2f}")
        await shared.delete_prefix(PREFIX.encode())
    finally:
        for etcd in own:
            await etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000, help="commands per run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent senders")
    parser.add_argument("--entities", type=int, default=64, help="entities in the last run")
    args = parser.parse_args()
    with ControlPlane() as cp:
        asyncio.run(bench(cp.etcd_endpoint, args.commands, args.concurrency, args.entities))


if __name__ == "__main__":
    main()
