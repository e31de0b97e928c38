"""The chaos suite's messaging load: a topic fed throughout the faults and a consumer
applying each message to an entity of its key (concurrency 3, keys in parallel).

Invariants checked at the end: every message's effect exactly once (each entity holds
each of its key's messages once), none lost (all of them), per-key order kept (in the
order published)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from kurable.store import topics as store
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane

KEYS = ("k0", "k1", "k2", "k3")

TALLY = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "EntityType",
    "metadata": {"name": "tally"},
    "spec": {
        "stateSchema": {
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
        },
        "commands": {"append": {"emit": [{"type": "Appended", "data": {"n": "${ input.n }"}}]}},
        "events": {"Appended": {"set": {"items": "${ state.items + [event.n] }"}}},
    },
}


def manifests() -> list[dict[str, Any]]:
    """The type, one entity per key, the topic and the consumer."""
    objects: list[dict[str, Any]] = [TALLY]
    for key in KEYS:
        objects.append(
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Entity",
                "metadata": {"name": f"tally-{key}"},
                "spec": {"type": "tally", "initialState": {"items": []}},
            }
        )
    objects.append(
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": "feed"},
            "spec": {},
        }
    )
    objects.append(
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Consumer",
            "metadata": {"name": "tally"},
            "spec": {
                "source": {"topic": "feed"},
                "action": {
                    "entity": {
                        "name": "${ 'tally-' + message.key }",
                        "command": "append",
                        "input": {"n": "${ event.n }"},
                    }
                },
                "concurrency": 3,
                "retry": {"maxAttempts": 1000, "backoff": {"initial": "200ms", "max": "2s"}},
                "onFailure": "block",
            },
        }
    )
    return objects


def plan(count: int) -> list[tuple[str, str, int]]:
    """(message id, key, n): n counts up per key."""
    sent: list[tuple[str, str, int]] = []
    per_key = dict.fromkeys(KEYS, 0)
    for i in range(count):
        key = KEYS[(i * 7 + i // 3) % len(KEYS)]
        sent.append((f"feed-{i}", key, per_key[key]))
        per_key[key] += 1
    return sent


class Publisher(threading.Thread):
    """Publishes the messages spread over `window` seconds, retrying each one while etcd
    is down (the same id: a retry that had in fact landed adds nothing)."""

    def __init__(
        self, cp: ControlPlane, namespace: str, prefix: str, sent: list[Any], window: float
    ) -> None:
        super().__init__(daemon=True, name="chaos-publisher")
        self.cp, self.namespace, self.prefix = cp, namespace, prefix
        self.sent, self.window = sent, window
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as e:  # reported by the test
            self.error = e

    async def _publish(self) -> None:
        start = time.monotonic()
        gap = self.window / max(1, len(self.sent))
        for index, (id_, key, n) in enumerate(self.sent):
            await asyncio.sleep(max(0.0, start + index * gap - time.monotonic()))
            deadline = time.monotonic() + 120
            while True:
                try:
                    etcd = await connect(EtcdConfig(self.cp.etcd_endpoint, self.prefix), 5.0)
                    try:
                        message = store.message(
                            id_,
                            key,
                            {"n": n},
                            type="Tick",
                            source="chaos",
                            time="2026-01-01T00:00:00Z",
                        )
                        await store.publish(etcd, self.prefix, self.namespace, "feed", message)
                    finally:
                        await etcd.close()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)


def check(
    cp: ControlPlane, namespace: str, sent: list[tuple[str, str, int]], timeout: float
) -> str:
    """Wait until the consumer handled every message; assert the invariants; a summary."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "consumer/tally", "-n", namespace, "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            if status.get("processed") == len(sent) and status.get("lag") == 0:
                break
        time.sleep(1)
    expected = {key: [n for _, k, n in sent if k == key] for key in KEYS}
    items = {}
    for key in KEYS:
        obj = json.loads(
            cp.kubectl("get", f"entity/tally-{key}", "-n", namespace, "-o", "json").stdout
        )
        items[key] = ((obj.get("status") or {}).get("state") or {}).get("items")
    assert items == expected, f"consumer status {status}; entities {items}; expected {expected}"
    assert status.get("processed") == len(sent), status
    assert status.get("deadLettered") == 0, status
    failed = status.get("failed")
    return f"{len(sent)} messages, each applied once in key order ({failed} failed attempts)"
