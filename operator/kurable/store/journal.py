"""The workflow journal in etcd, with the fencing that makes a stale executor harmless.

Commit protocol (DESIGN.md): the executor holds the run's `owner` key, which names it,
and keeps its own `executors/<slot>` key alive on its etcd lease; a record is appended
by one transaction that succeeds only if the record's slot is still empty, the owner
key still names this executor *and* its executor key is still its own (the lease is
live). A paused or partitioned executor whose lease expired finds its commits refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
from aetcd import rpc

from kurable.engine.journal import Record
from kurable.engine.records import WorkflowStarted
from kurable.engine.run_changes import INLINE_TEMPLATE
from kurable.engine.sizes import CHUNK_BYTES, canonical_json, chunks

from . import keys
from .etcd import (
    EtcdAuthError,
    EtcdClient,
    EtcdTLSError,
    SyncChannel,
    TxnBatcher,
    raw_range,
    request_op,
)
from .etcd import EtcdConfig as EtcdConfig  # re-exported: where callers have found them
from .etcd import connect as connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunChange:
    """A phase change of a run, committed with its journal record (kurable.store.keys:
    `runs/<namespace>/<template>/changes/<uid>/<seq>`)."""

    namespace: str
    template: str
    """The templateRef name, or `-` for an inline definition."""
    value: dict[str, Any]
    """kurable.engine.run_changes.run_change's value."""


class Fenced(Exception):
    """This executor no longer holds the run; another one (or nobody) does."""


class SlotTaken(Exception):
    """The record's slot was written meanwhile: reload the journal and decide again."""


RENEWALS_PER_TTL = 5
"""The lease is renewed every `ttl / RENEWALS_PER_TTL` seconds (2 s of a 10 s lease): four
renewals in a row may fail (an etcd leader election, a slow disk) before the lease ends."""


class Fence:
    """This executor's hold on runs, per executor rather than per run.

    Two kinds of keys (kurable.store.keys):

    - `executors/<slot>`: on this executor's etcd lease, value = this incarnation's id
      (`<slot>/<random>`). While it exists with that value, this executor is alive; it is
      also the executor's membership for sharding (kurable.executor.shards).
    - `workflows/<uid>/owner`: a plain key (no lease), value = the id of the executor that
      holds the run. It is written once when a run is claimed and deleted when released.

    A journal commit compares *both*: the owner key names this incarnation and
    `executors/<slot>` still holds it. So an expired lease fences every commit at once
    (as before), while the holds themselves outlive it: when the lease is granted again,
    one put of `executors/<slot>` makes every run held again, with no per-run churn.
    Another executor takes a run over only when its holder's executor key is gone or
    names another incarnation (the holder is dead), in one transaction.

    The lease is granted and renewed by a dedicated thread with its own gRPC channel
    (`_Keeper`): however busy the operator's event loop is, renewal never queues behind
    its tasks. `ttl` is in seconds; the lease is renewed every `ttl / RENEWALS_PER_TTL`.

    Owner keys of a previous version (on that version's lease, valued `<slot>/<random>`
    with its executor key at `executors/<slot>/<random>`) are respected while that key
    lives and expire with their lease; nothing needs migrating.
    """

    def __init__(
        self,
        client: aetcd.Client,
        prefix: str,
        ttl: int = 10,
        executor: str | None = None,
        config: EtcdConfig | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        # `executor` names a slot that at most one live process holds (in Kubernetes:
        # the pod name). A new incarnation in the same slot (the container restarted)
        # takes the runs over at once instead of waiting for the dead one's lease.
        # Without a name every Fence is its own slot and waits for leases to expire.
        self.executor = executor or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        if "/" in self.executor:
            raise ValueError(f"an executor name may not contain '/': {self.executor!r}")
        self.id = f"{self.executor}/{uuid.uuid4().hex[:8]}"
        self.config = config or _config_of(client, prefix)
        self.alive = asyncio.Event()
        """Set while this executor's lease (and so its executor key) is live."""
        self.grants = 0
        """How many times the lease was granted (1 at start; more after it was lost)."""
        self._keeper: _Keeper | None = None
        self.claims = TxnBatcher(client)
        """Claims of runs sent together (see `claim`)."""

    @property
    def key(self) -> bytes:
        """This executor's key: `executors/<slot>`."""
        return keys.executor(self.prefix, self.executor).encode()

    async def start(self) -> None:
        """Grant the lease, put the executor key, and keep renewing from a dedicated
        thread. Raises the keeper's error when the first grant fails."""
        loop = asyncio.get_running_loop()
        self._keeper = _Keeper(self, loop)
        self._keeper.start()
        await asyncio.wrap_future(self._keeper.first_grant)

    async def stop(self) -> None:
        """Stop renewing and revoke: this executor is gone at once (its holds can be taken
        over, and every commit it would still try is refused)."""
        if self._keeper is not None:
            self._keeper.stopping.set()
            await asyncio.to_thread(self._keeper.join)
            self._keeper = None
        self.alive.clear()

    def _granted(self) -> None:
        self.grants += 1
        self.alive.set()

    def _lost(self) -> None:
        self.alive.clear()

    async def claim(self, uid: str) -> str | None:
        """Take the run `uid`; return None when this executor holds it now, else the id of
        the live executor that holds it.

        One transaction when nobody holds the run, this incarnation does, or a dead
        incarnation of this executor's own slot does (the usual case after a restart: a
        nested transaction takes it over, comparing the owner's value with the slot's
        range of ids); more only when another slot's holder must be looked up. Claims
        made together share that transaction (`claims`, a TxnBatcher): a restart's
        thousands of claims go in a few hundred requests."""
        owner = keys.owner(self.prefix, uid).encode()
        tx = self.client.transactions
        me = self.id.encode()
        slot = self.executor.encode()
        takeover = tx.txn(
            # An earlier incarnation of this slot: `<slot>/...`, not this one. A slot has
            # one live process at most, so while this one lives, that one is dead.
            compare=[
                tx.value(owner) > slot + b"/",
                tx.value(owner) < slot + b"0",  # "0" follows "/"
                tx.value(owner) != me,
                tx.value(self.key) == me,
            ],
            success=[tx.put(owner, me)],
            failure=[tx.get(owner)],
        )
        claim = tx.txn(
            compare=[tx.create(owner) == 0], success=[tx.put(owner, me)], failure=[takeover]
        )
        answer = (await self.claims.submit(owner, request_op(self.client, claim)))[0].response_txn
        if answer.succeeded:
            return None
        nested = answer.responses[0].response_txn
        if nested.succeeded:
            return None
        found = nested.responses[0].response_range.kvs
        current: str | None = bytes(found[0].value).decode() if found else None
        for _ in range(3):  # the holder may change under us: look again
            if current is None:
                ok, _ = await self.client.transaction(
                    compare=[tx.create(owner) == 0],
                    success=[tx.put(owner, me)],
                    failure=[],
                )
            else:
                if current == self.id:
                    return None
                dead = await self._dead_holder(current)
                if dead is None:
                    return current
                ok, _ = await self.client.transaction(
                    compare=[tx.value(owner) == current.encode(), *dead],
                    success=[tx.put(owner, me)],
                    failure=[],
                )
                if ok and current.partition("/")[0] != self.executor:
                    log.info("took run %s over from executor %s (gone)", uid, current)
            if ok:
                return None
            got = await self.client.get(owner)
            current = None if got is None else got.value.decode()
        return "(changing meanwhile)"

    async def _dead_holder(self, holder: str) -> list[Any] | None:
        """Comparisons that hold while executor `holder` (an id) stays dead; None when it
        is alive. Alive: its executor key holds that incarnation, or (a previous
        version's owner) its old-format key `executors/<id>` exists. An earlier
        incarnation of this executor's own slot is dead while this one lives (a slot has
        one live process at most): no read is needed."""
        tx = self.client.transactions
        slot = holder.partition("/")[0]
        key = keys.executor(self.prefix, slot).encode()
        old = keys.executor(self.prefix, holder).encode()
        if slot == self.executor:
            return [tx.value(key) == self.id.encode(), tx.create(old) == 0]
        live = await self.client.get(key)
        if live is not None and live.value.decode() == holder:
            return None
        if "/" in holder and await self.client.get(old) is not None:
            return None
        dead = [tx.create(old) == 0]
        if live is None:
            dead.append(tx.create(key) == 0)
        else:
            dead.append(tx.value(key) == live.value)
        return dead

    async def holder(self, uid: str) -> str | None:
        """The live executor holding run `uid` (its id), or None when nobody alive holds
        it (no owner key, or its executor's key is gone)."""
        current = await self.client.get(keys.owner(self.prefix, uid).encode())
        if current is None:
            return None
        holder: str = current.value.decode()
        if holder == self.id:
            return holder
        return None if await self._dead_holder(holder) is not None else holder

    async def release(self, uid: str, to: str | None = None) -> None:
        """Give the run up (only if this executor still holds it): with `to` (another
        executor's slot), hand it to that executor's live incarnation, which then holds
        it at once without claiming (its driver may be running already: a replica coming
        back from a pause); else, or when `to` is not alive, to nobody."""
        owner = keys.owner(self.prefix, uid).encode()
        tx = self.client.transactions
        if to is not None and to != self.executor:
            target = keys.executor(self.prefix, to).encode()
            live = await self.client.get(target)
            if live is not None:
                ok, _ = await self.client.transaction(
                    compare=[tx.value(owner) == self.id.encode(), tx.value(target) == live.value],
                    success=[tx.put(owner, live.value)],
                    failure=[],
                )
                if ok:
                    return
        await self.client.transaction(
            compare=[tx.value(owner) == self.id.encode()], success=[tx.delete(owner)], failure=[]
        )

    def fenced(self, uid: str) -> list[Any]:
        """The comparisons a commit for run `uid` makes: this executor holds the run and
        is alive (its executor key holds this incarnation)."""
        tx = self.client.transactions
        owner = keys.owner(self.prefix, uid).encode()
        return [tx.value(owner) == self.id.encode(), tx.value(self.key) == self.id.encode()]

    async def why_fenced(self, uid: str) -> str | None:
        """Why a commit for `uid` would be refused now; None when it would not."""
        current = await self.client.get(keys.owner(self.prefix, uid).encode())
        if current is None or current.value.decode() != self.id:
            holder = current.value.decode() if current else "nobody"
            return f"run {uid} is held by {holder}, not by {self.id}"
        live = await self.client.get(self.key)
        if live is None or live.value.decode() != self.id:
            return f"the lease of executor {self.id} expired"
        return None


def _config_of(client: aetcd.Client, prefix: str) -> EtcdConfig:
    """Where `client` connects, TLS and credentials included (for the keeper's own
    channel)."""
    if isinstance(client, EtcdClient):
        return client.config
    return EtcdConfig(endpoints=f"{client._host}:{client._port}", prefix=prefix)


class _Keeper(threading.Thread):
    """Grants and renews one Fence's lease on its own thread and its own gRPC channel
    (synchronous gRPC: its calls wait without the GIL), so that a busy operator loop
    never delays a renewal. Tells the loop (`Fence.alive`) when the lease is granted
    and when it is lost; a lost lease is granted again at once and the executor key put
    again with the same incarnation id, which makes every hold live again."""

    def __init__(self, fence: Fence, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name=f"kurable-lease {fence.executor}", daemon=True)
        self.fence = fence
        self.loop = loop
        self.stopping = threading.Event()
        self.first_grant: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.interval = fence.ttl / RENEWALS_PER_TTL
        """Seconds between renewals."""
        self.timeout = max(self.interval, 1.0)
        """Seconds one request may take."""

    def run(self) -> None:
        # Its own channel (TLS, auth token), moving to the next etcd endpoint on errors
        # like the asyncio client (kurable.store.etcd): a lease lives in the cluster, so
        # any member renews it.
        etcd = SyncChannel(self.fence.config, timeout=self.timeout)
        lease_id = 0
        failures = 0
        renewed = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    etcd.open()
                    if lease_id == 0:
                        lease_id = self._grant(etcd)
                        renewed = time.monotonic()
                        self._tell(self.fence._granted)
                        if not self.first_grant.done():
                            self.first_grant.set_result(None)
                    if self.stopping.wait(self.interval):
                        break
                    reply = next(
                        iter(
                            etcd.leases.LeaseKeepAlive(
                                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                                timeout=self.timeout,
                                metadata=etcd.metadata,
                            )
                        ),
                        None,
                    )
                    if reply is None or reply.TTL <= 0:
                        # Expired (the process was paused, or etcd unreachable too long).
                        log.warning("executor lease expired; granting a new one (holds come back)")
                        self._tell(self.fence._lost)
                        lease_id = 0
                        continue
                    renewed = time.monotonic()
                except Exception as e:  # etcd unreachable: keep trying, on the next member
                    if not self.first_grant.done():
                        # At start, each endpoint once; a refused certificate or password
                        # is not an outage: say so at once.
                        refused = isinstance(e, EtcdTLSError | EtcdAuthError)
                        failures += 1
                        if refused or failures >= len(etcd.endpoints):
                            self.first_grant.set_exception(e)
                            return
                        etcd.move(e)
                        continue
                    log.warning("could not renew the executor lease: %s", e)
                    etcd.move(e)
                    if time.monotonic() - renewed > self.fence.ttl:
                        self._tell(self.fence._lost)
                        lease_id = 0
                    self.stopping.wait(min(self.interval, 1.0))
        finally:
            if lease_id and etcd.leases is not None:
                with contextlib.suppress(Exception):
                    etcd.leases.LeaseRevoke(
                        rpc.LeaseRevokeRequest(ID=lease_id),
                        timeout=self.timeout,
                        metadata=etcd.metadata,
                    )
            etcd.close()

    def _grant(self, etcd: SyncChannel) -> int:
        granted = etcd.leases.LeaseGrant(
            rpc.LeaseGrantRequest(TTL=self.fence.ttl), timeout=self.timeout, metadata=etcd.metadata
        )
        etcd.kv.Put(
            rpc.PutRequest(key=self.fence.key, value=self.fence.id.encode(), lease=granted.ID),
            timeout=self.timeout,
            metadata=etcd.metadata,
        )
        return int(granted.ID)

    def _tell(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
            self.loop.call_soon_threadsafe(callback)


CHUNKED = "chunked"
"""The one key of a journal slot that holds a reference to its record's chunks:
`{"chunked": {seq, token, count, bytes}}`. A record's own JSON never has this key."""


MAX_TXN_RECORDS = 32
"""Records committed in one transaction at most (etcd's `--max-txn-ops` is 128 by default:
each record is a compare and one or two puts)."""

LOAD_BATCH = 8
"""Records per read request when loading a journal: a record stored whole is at most
`CHUNK_BYTES` (256 KiB), so a page is at most 2 MiB."""

READ_BATCH = 16
"""First pages of journals read in one transaction at most: LOAD_BATCH records of at most
CHUNK_BYTES each, so 32 MiB in the worst case, under the client's receive limit
(kurable.store.etcd.MAX_RECEIVE_BYTES)."""


class Journal:
    """Reading and appending journal records of runs."""

    def __init__(self, client: aetcd.Client, prefix: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.client = client
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        """Records larger than this (bytes of JSON) are stored in chunks of this size."""
        self.reads = TxnBatcher(client, max_ops=READ_BATCH, read_only=True)
        """First pages of journals read together (see `read`)."""

    async def load(self, uid: str, after: int = -1) -> tuple[list[Record], int]:
        """All records of a run (those with a seq above `after`), in order, and the etcd
        revision they were read at (to watch from: nothing up to it is missed). See
        `read`."""
        records, read_at, _ = await self.read(uid, after)
        return records, read_at

    async def read(self, uid: str, after: int = -1) -> tuple[list[Record], int, int]:
        """All records of a run (those with a seq above `after`), in order; the etcd
        revision they were read at; the revision of the last of them (0: none), as status
        shows it (`journal.revision`).

        Read in pages of `LOAD_BATCH` records at one revision (one request for most
        journals), so that a long journal never exceeds the client's 4 MiB response
        limit; a record stored in chunks is reassembled from them. Raises ValueError when
        a chunked record's chunks are missing or do not add up."""
        prefix = keys.journal(self.prefix, uid)
        first = keys.journal_record(self.prefix, uid, after + 1) if after >= 0 else prefix
        start, end = first.encode(), keys.range_end(prefix).encode()
        records: list[Record] = []
        read_at, last = 0, 0
        while True:
            # Records are immutable once committed; the pages are read at one revision.
            # The first page goes with the first pages of other runs being read now (a
            # restart reads thousands): one request for many journals.
            page = rpc.RangeRequest(key=start, range_end=end, limit=LOAD_BATCH, revision=read_at)
            if read_at:
                response = await raw_range(self.client, page)
            else:
                answer, read_at = await self.reads.submit(None, rpc.RequestOp(request_range=page))
                response = answer.response_range
            for kv in response.kvs:
                raw = json.loads(kv.value)
                if isinstance(raw, dict) and CHUNKED in raw:
                    raw = json.loads(await self._reassemble(uid, raw[CHUNKED]))
                records.append(Record.from_json(raw))
                last = max(last, int(kv.mod_revision))
            if not response.more or not response.kvs:
                return records, read_at, last
            start = bytes(response.kvs[-1].key) + b"\0"

    async def append(
        self, uid: str, record: Record, fence: Fence, change: RunChange | None = None
    ) -> int:
        """Commit `record` if its slot is empty and `fence` holds the run; return the revision.
        Raises Fenced (this executor does not hold the run) or SlotTaken."""
        _, revision = await self.append_all(uid, [(record, change)], fence)
        return revision

    async def append_all(
        self, uid: str, entries: Sequence[tuple[Record, RunChange | None]], fence: Fence
    ) -> tuple[int, int]:
        """Commit the first records of `entries` (consecutive seqs, each with the run change
        it makes, if any) in one transaction, if their slots are empty and `fence` holds
        the run: as many as fit in one request (`chunk_bytes` of records and run changes,
        `MAX_TXN_RECORDS`), at least the first: a transaction holds no more than what
        committing them one by one would have put in the largest of its requests. Returns
        (how many were committed, the revision).

        A run change (the record changes the run's phase: kurable.engine.run_changes) is
        put in the same transaction at `keys.run_change`, so the per-template stream of
        run changes holds exactly the committed phase changes.

        A record whose JSON exceeds `chunk_bytes` is first written as chunks under
        `keys.journal_chunks` (one etcd request each), then committed alone as a reference
        to them, so that no request nears etcd's `--max-request-bytes`. Chunks of a commit
        that fails stay behind unreferenced (harmless) until `forget`. Raises Fenced (this
        executor does not hold the run) or SlotTaken (a slot was written meanwhile)."""
        tx = self.client.transactions
        slots = []  # a comparison per record: its slot is empty
        puts = []
        size = 0
        for count, (record, change) in enumerate(entries):
            payload = canonical_json(record.to_json())  # the bytes the size rule measures
            changed = b"" if change is None else canonical_json(change.value)
            large = len(payload) > self.chunk_bytes
            stored = (0 if large else len(payload)) + len(changed)
            full = size + stored > self.chunk_bytes or count >= MAX_TXN_RECORDS
            if count and (large or full):
                break
            if large:
                payload = await self._write_chunks(uid, record.seq, payload)
            size += len(payload) + len(changed)
            slot = keys.journal_record(self.prefix, uid, record.seq).encode()
            slots.append(tx.create(slot) == 0)
            puts.append(tx.put(slot, payload))
            if change is not None:
                key = keys.run_change(
                    self.prefix, change.namespace, change.template, uid, record.seq
                )
                puts.append(tx.put(key.encode(), changed))
            if large:
                break  # a chunked record goes alone
        ok, responses = await self.client.transaction(
            compare=[*fence.fenced(uid), *slots], success=puts, failure=[]
        )
        if ok:
            return len(slots), int(responses[0].response_put.header.revision)
        why = await fence.why_fenced(uid)
        if why is not None:
            raise Fenced(why)
        first = entries[0][0].seq
        raise SlotTaken(f"journal slots {first}.. of run {uid} are taken")

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

    async def uids(self) -> set[str]:
        """The runs that have keys in etcd (a journal, chunks or an owner key): one
        keys-only read of every run's keys, for the rare sweep of deleted runs."""
        root = keys.workflow(self.prefix, "")
        listing = await self.client.get_prefix(root.encode(), keys_only=True)
        return {kv.key.decode()[len(root) :].partition("/")[0] for kv in listing}

    async def workflow_of(self, uid: str) -> dict[str, str] | None:
        """name, namespace and uid of run `uid` as its first record pinned them; None
        when it has no journal (never started)."""
        records, _ = await self.load(uid)
        if not records or not isinstance(records[0].data, WorkflowStarted):
            return None
        return dict(records[0].data.workflow) or None

    async def forget(self, uid: str) -> int:
        """Delete everything of a run (its part of the per-template stream of run changes
        included); return how many keys went."""
        deleted = 0
        stream = await self._changes_of(uid)
        if stream is not None:
            result = await self.client.delete_prefix(stream.encode())
            deleted += int(getattr(result, "deleted", 0))
        result = await self.client.delete_prefix(keys.workflow(self.prefix, uid).encode())
        return deleted + int(getattr(result, "deleted", 0))

    async def _changes_of(self, uid: str) -> str | None:
        """The prefix of run `uid`'s changes, from its first record; None without one."""
        first = await self.client.get(keys.journal_record(self.prefix, uid, 0).encode())
        if first is None:
            return None
        raw = json.loads(first.value)
        if isinstance(raw, dict) and CHUNKED in raw:
            raw = json.loads(await self._reassemble(uid, raw[CHUNKED]))
        data = Record.from_json(raw).data
        if not isinstance(data, WorkflowStarted):
            return None
        namespace = data.workflow.get("namespace") or ""
        template = (data.template or {}).get("name") or INLINE_TEMPLATE
        return keys.run_changes(self.prefix, namespace, str(template), uid)
