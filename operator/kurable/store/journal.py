"""The workflow journal in etcd, with the fencing that makes a stale executor harmless.

Commit protocol (DESIGN.md): the executor holds the run's `owner` key, attached to
its etcd lease; a record is appended by one transaction that succeeds only if the
record's slot is still empty *and* the owner key still names this executor. A paused
or partitioned executor whose lease expired finds its commits refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import aetcd

from kurable.engine.journal import Record
from kurable.engine.sizes import CHUNK_BYTES, canonical_json, chunks

from . import keys

log = logging.getLogger(__name__)


class Fenced(Exception):
    """This executor no longer holds the run; another one (or nobody) does."""


class SlotTaken(Exception):
    """The record's slot was written meanwhile: reload the journal and decide again."""


@dataclass(frozen=True)
class EtcdConfig:
    """Where the operator's etcd is and which prefix is ours."""

    endpoints: str = "127.0.0.1:2379"
    """Comma-separated host:port (or http://host:port) list; the first reachable is used."""
    prefix: str = keys.DEFAULT_PREFIX

    @classmethod
    def from_env(cls) -> EtcdConfig:
        """KURABLE_ETCD_ENDPOINTS and KURABLE_ETCD_PREFIX, with the defaults above."""
        return cls(
            endpoints=os.environ.get("KURABLE_ETCD_ENDPOINTS", cls.endpoints),
            prefix=keys.normalize_prefix(os.environ.get("KURABLE_ETCD_PREFIX", cls.prefix)),
        )

    def first_endpoint(self) -> tuple[str, int]:
        first = self.endpoints.split(",")[0].strip()
        first = first.split("://", 1)[-1].rstrip("/")
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port or 2379)


async def connect(config: EtcdConfig, request_timeout: float = 10.0) -> aetcd.Client:
    """An open etcd client (the connection is checked with one request)."""
    host, port = config.first_endpoint()
    client = aetcd.Client(host=host, port=port, timeout=request_timeout)
    await client.connect()
    await client.status()
    return client


class Fence:
    """This executor's claim on runs: an etcd lease renewed while the process is alive."""

    def __init__(
        self, client: aetcd.Client, prefix: str, ttl: int = 10, executor: str | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        # `executor` names a slot that at most one live process holds (in Kubernetes:
        # the pod name). A new incarnation in the same slot (the container restarted)
        # takes the runs over at once instead of waiting for the dead one's lease.
        # Without a name every Fence is its own slot and waits for leases to expire.
        self.executor = executor or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.id = f"{self.executor}/{uuid.uuid4().hex[:8]}"
        self._lease: Any = None
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Grant the lease, announce the executor, and keep the lease alive."""
        await self._grant()
        self._keepalive = asyncio.create_task(self._keep_alive(), name="kurable-fence")

    async def stop(self) -> None:
        """Stop renewing and revoke: every claim of this executor ends at once."""
        if self._keepalive:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.revoke()

    async def _grant(self) -> None:
        self._lease = await self.client.lease(self.ttl)
        await self.client.put(
            keys.executor(self.prefix, self.id).encode(), b"alive", lease=self._lease
        )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                reply = await self._lease.refresh()
                if reply is None or reply.TTL <= 0:
                    # Expired (e.g. the process was paused): claims are gone; start over.
                    log.warning("executor lease expired; claims lost, granting a new lease")
                    await self._grant()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # etcd unreachable: keep trying, the lease may survive
                log.warning("could not renew executor lease: %s", e)

    async def claim(self, uid: str) -> str | None:
        """Take the run `uid`; return None when taken, else the holder's id."""
        owner = keys.owner(self.prefix, uid).encode()
        tx = self.client.transactions
        ok, _ = await self.client.transaction(
            compare=[tx.create(owner) == 0],
            success=[tx.put(owner, self.id.encode(), lease=self._lease)],
            failure=[tx.get(owner)],
        )
        if ok:
            return None
        current = await self.client.get(owner)
        holder = current.value.decode() if current else ""
        if holder == self.id:
            return None
        if holder.rpartition("/")[0] == self.executor:
            # A previous incarnation of this executor: it is gone, take over.
            ok, _ = await self.client.transaction(
                compare=[tx.value(owner) == holder.encode()],
                success=[tx.put(owner, self.id.encode(), lease=self._lease)],
                failure=[],
            )
            if ok:
                log.info("took run %s over from previous incarnation %s", uid, holder)
                return None
        return holder or "(released meanwhile)"

    async def holder(self, uid: str) -> str | None:
        """Who holds run `uid` now (an executor id), or None. The owner key lives on its
        holder's lease: while it exists, its holder is alive (or was, a lease TTL ago)."""
        current = await self.client.get(keys.owner(self.prefix, uid).encode())
        return current.value.decode() if current else None

    async def release(self, uid: str) -> None:
        """Give the run up (only if this executor still holds it)."""
        owner = keys.owner(self.prefix, uid).encode()
        tx = self.client.transactions
        await self.client.transaction(
            compare=[tx.value(owner) == self.id.encode()], success=[tx.delete(owner)], failure=[]
        )


CHUNKED = "chunked"
"""The one key of a journal slot that holds a reference to its record's chunks:
`{"chunked": {seq, token, count, bytes}}`. A record's own JSON never has this key."""


LOAD_BATCH = 8
"""Records per read request when loading a journal: a record stored whole is at most
`CHUNK_BYTES` (256 KiB), so a batch stays far under the client's 4 MiB response limit."""


class Journal:
    """Reading and appending journal records of runs."""

    def __init__(self, client: aetcd.Client, prefix: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.client = client
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        """Records larger than this (bytes of JSON) are stored in chunks of this size."""

    async def load(self, uid: str) -> tuple[list[Record], int]:
        """All records of a run, in order, and the etcd revision they were read at.

        Read in batches (the keys first, then at most `LOAD_BATCH` records per request),
        so that a long journal never exceeds the client's 4 MiB response limit; a record
        stored in chunks is reassembled from them. Raises ValueError when a chunked
        record's chunks are missing or do not add up."""
        listing = await self.client.get_prefix(
            keys.journal(self.prefix, uid).encode(),
            sort_order="ascend",
            sort_target="key",
            keys_only=True,
        )
        revision = int(listing.header.revision)
        slots = [kv.key for kv in listing]
        records = []
        for start in range(0, len(slots), LOAD_BATCH):
            batch = slots[start : start + LOAD_BATCH]
            # Records are immutable once committed: reading them after the listing is safe.
            result = await self.client.get_range(
                batch[0], batch[-1] + b"\0", sort_order="ascend", sort_target="key"
            )
            for kv in result:
                raw = json.loads(kv.value)
                if isinstance(raw, dict) and CHUNKED in raw:
                    raw = json.loads(await self._reassemble(uid, raw[CHUNKED]))
                records.append(Record.from_json(raw))
        return records, revision

    async def append(self, uid: str, record: Record, fence: Fence) -> int:
        """Commit `record` if its slot is empty and `fence` holds the run; return the revision.

        A record whose JSON exceeds `chunk_bytes` is first written as chunks under
        `keys.journal_chunks` (one etcd request each), then committed as a reference to
        them, so that no request nears etcd's `--max-request-bytes`. Chunks of a commit
        that fails stay behind unreferenced (harmless) until `forget`."""
        slot = keys.journal_record(self.prefix, uid, record.seq).encode()
        owner = keys.owner(self.prefix, uid).encode()
        tx = self.client.transactions
        payload = canonical_json(record.to_json())  # the bytes the size rule measures
        if len(payload) > self.chunk_bytes:
            payload = await self._write_chunks(uid, record.seq, payload)
        ok, responses = await self.client.transaction(
            compare=[tx.create(slot) == 0, tx.value(owner) == fence.id.encode()],
            success=[tx.put(slot, payload)],
            failure=[],
        )
        if ok:
            return int(responses[0].response_put.header.revision)
        current = await self.client.get(owner)
        if current is None or current.value.decode() != fence.id:
            raise Fenced(f"run {uid} is no longer held by {fence.id}")
        raise SlotTaken(f"journal slot {record.seq} of run {uid} is taken")

    async def _write_chunks(self, uid: str, seq: int, payload: bytes) -> bytes:
        """Write `payload` as chunks of this commit attempt; return the reference record."""
        # Each attempt has its own token: an executor that lost the slot to another one
        # never overwrites (or is overwritten by) the other's chunks.
        token = uuid.uuid4().hex[:12]
        pieces = chunks(payload, self.chunk_bytes)
        for index, piece in enumerate(pieces):
            await self.client.put(
                keys.journal_chunk(self.prefix, uid, seq, token, index).encode(), piece
            )
        reference = {"seq": seq, "token": token, "count": len(pieces), "bytes": len(payload)}
        return json.dumps({CHUNKED: reference}, separators=(",", ":")).encode()

    async def _reassemble(self, uid: str, reference: dict[str, Any]) -> bytes:
        seq, token = int(reference["seq"]), str(reference["token"])
        pieces = []
        for index in range(int(reference["count"])):  # one by one: each under 4 MiB
            piece = await self.client.get(
                keys.journal_chunk(self.prefix, uid, seq, token, index).encode()
            )
            if piece is None:
                raise ValueError(f"journal record {seq} of run {uid}: chunk {index} is missing")
            pieces.append(piece.value)
        payload = b"".join(pieces)
        if len(payload) != reference["bytes"]:
            raise ValueError(
                f"journal record {seq} of run {uid}: its chunks hold {len(payload)} bytes, "
                f"the record says {reference['bytes']}"
            )
        return payload

    async def forget(self, uid: str) -> int:
        """Delete everything of a run; return how many keys went."""
        result = await self.client.delete_prefix(keys.workflow(self.prefix, uid).encode())
        return int(getattr(result, "deleted", 0))
