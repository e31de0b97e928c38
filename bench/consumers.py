"""Benchmark: messages end to end through a Consumer (publish -> action committed).

    .venv/bin/python bench/consumers.py --messages 1000 --keys 8 --concurrency 8
    .venv/bin/python bench/consumers.py --messages 300 --rate 20   (latency below saturation)

A local control plane and one operator; a Topic, an EntityType whose `append` command
records a number, one Entity per key, and a Consumer applying each message to the entity
of its key (`concurrency` keys at once, each key in order). N messages are published
straight into the topic's log in etcd (the endpoint's cost is bench/endpoint.py's), as
fast as one client can, stamped with their publish time. Afterwards the entities' event
logs give, for each message, when its command committed (the event's `at`; its command
id names the message).

Prints messages/s end to end (N over first publish -> last commit), p50/p99 delivery
latency (publish -> command committed), and the etcd floor of the same run: the p50 of a
one-put transaction with a compare (bench/floor.py). Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floor import etcd_floor  # bench/ is the script directory

from kurable.api import crd
from kurable.engine.journal import parse_time
from kurable.store import topics
from kurable.store.entities import EntityRef, load_events
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

PREFIX = "/kurable/"
NAMESPACE = "default"

TALLY = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "EntityType",
    "metadata": {"name": "tally"},
    "spec": {
        "stateSchema": {"type": "object", "properties": {"last": {"type": "integer"}}},
        "commands": {"append": {"emit": [{"type": "Appended", "data": {"n": "${ input.n }"}}]}},
        "events": {"Appended": {"set": {"last": "${ event.n }"}}},
    },
}


def manifests(keys: int, concurrency: int) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [TALLY]
    objects += [
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Entity",
            "metadata": {"name": f"tally-{k}"},
            "spec": {"type": "tally", "initialState": {"last": -1}},
        }
        for k in range(keys)
    ]
    objects.append(
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": "bench"},
            "spec": {},
        }
    )
    objects.append(
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Consumer",
            "metadata": {"name": "bench"},
            "spec": {
                "source": {"topic": "bench"},
                "action": {
                    "entity": {
                        "name": "${ 'tally-' + message.key }",
                        "command": "append",
                        "input": {"n": "${ event.n }"},
                    }
                },
                "concurrency": concurrency,
            },
        }
    )
    return objects


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def publish(endpoint: str, count: int, keys: int, rate: float) -> dict[str, datetime]:
    """Publish `count` messages round-robin over the keys (`rate` per second, 0: as fast
    as one client can); their publish times by id."""
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    sent = {}
    start = time.monotonic()
    try:
        for i in range(count):
            if rate > 0:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            at = now()
            message = topics.message(
                f"m-{i}", str(i % keys), {"n": i}, type="Tick", source="bench", time=at
            )
            await topics.publish(etcd, PREFIX, NAMESPACE, "bench", message)
            sent[f"m-{i}"] = parse_time(at)
    finally:
        await etcd.close()
    return sent


async def floor(endpoint: str) -> float:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        return await etcd_floor(etcd)
    finally:
        await etcd.close()


async def committed(endpoint: str, entities: list[dict[str, Any]]) -> dict[str, datetime]:
    """When each message's command committed, by message id."""
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    found = {}
    try:
        for obj in entities:
            for event in await load_events(etcd, PREFIX, EntityRef.from_object(obj)):
                found[event["commandId"].rsplit("/", 1)[-1]] = parse_time(event["at"])
    finally:
        await etcd.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s published (0: a burst)")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(crds=crd.write_all(Path(tmp) / "crds")) as cp,
        OperatorProcess(cp.env(), Path(tmp) / "operator.log") as operator,
    ):
        base = asyncio.run(floor(cp.etcd_endpoint))
        for manifest in manifests(args.keys, args.concurrency):
            cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the consumer has taken its offset
            out = json.loads(cp.kubectl("get", "consumer/bench", "-o", "json").stdout)
            if ((out.get("status") or {}).get("conditions") or []) and "offset" in out["status"]:
                break
            time.sleep(0.2)
        sent = asyncio.run(publish(cp.etcd_endpoint, args.messages, args.keys, args.rate))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = json.loads(cp.kubectl("get", "consumer/bench", "-o", "json").stdout)["status"]
            if status.get("processed") == args.messages and status.get("lag") == 0:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"not consumed in time: {status}\n{operator.log_tail()}")
        entities = json.loads(cp.kubectl("get", "entities", "-o", "json").stdout)["items"]
        done = asyncio.run(committed(cp.etcd_endpoint, entities))

    assert set(done) == set(sent), f"{len(set(sent) - set(done))} messages never committed"
    latencies = [(done[i] - sent[i]).total_seconds() for i in sent]
    elapsed = (max(done.values()) - min(sent.values())).total_seconds()
    publish_s = (max(sent.values()) - min(sent.values())).total_seconds()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"messages={args.messages} keys={args.keys} concurrency={args.concurrency} "
        f"rate={args.rate or 'burst'}"
    )
    print(f"published/s            {args.messages / max(publish_s, 1e-9):8.1f}")
    print(f"messages/s end to end  {args.messages / elapsed:8.1f}  ({elapsed:.1f}s in all)")
    print(f"delivery p50           {p50 * 1000:8.1f} ms  (publish -> command committed)")
    print(f"delivery p99           {p99 * 1000:8.1f} ms")
    print(f"etcd txn p50 (floor)   {base * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
