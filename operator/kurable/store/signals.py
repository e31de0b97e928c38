"""The endpoint's signal Idempotency-Keys in etcd: a resend of a signal is a no-op.

`claim_signal_key` records `{signal, payload, at}` under the key's hash with one
transaction that succeeds only if the key is new; the endpoint then writes the signal
annotation, and `release_signal_key` takes the claim back when that write failed (so
that the caller's retry sends it). After the write, `settle_signal_key` marks the claim
`delivered`. A claim left undelivered by an endpoint that died in between is taken over
by a resend with `retake_signal_key` (compare-and-swap: one resend re-delivers), after
the resend has found no trace of the send on the run or in its journal. The records live
under the run's prefix and go with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aetcd

from . import keys


def key_digest(idempotency_key: str) -> str:
    """The SHA-256 (hex) of an Idempotency-Key: how etcd, the annotation and the journal
    name it (the key itself is never stored)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def _key(prefix: str, uid: str, idempotency_key: str) -> bytes:
    return keys.signal_key(prefix, uid, key_digest(idempotency_key)).encode()


def _encode(claim: dict[str, Any]) -> bytes:
    return json.dumps(claim, sort_keys=True).encode()


async def claim_signal_key(
    client: aetcd.Client, prefix: str, uid: str, idempotency_key: str, claim: dict[str, Any]
) -> dict[str, Any] | None:
    """Record `claim` for the key if the key is new (None), else return the first claim."""
    key = _key(prefix, uid, idempotency_key)
    tx = client.transactions
    ok, responses = await client.transaction(
        compare=[tx.create(key) == 0],
        success=[tx.put(key, _encode(claim))],
        failure=[tx.get(key)],
    )
    if ok:
        return None
    found = responses[0]
    if not found:  # released in between: claim again
        return await claim_signal_key(client, prefix, uid, idempotency_key, claim)
    first: dict[str, Any] = json.loads(found[0][0])
    return first


async def release_signal_key(
    client: aetcd.Client, prefix: str, uid: str, idempotency_key: str
) -> None:
    """Forget the key (its signal was not sent)."""
    await client.delete(_key(prefix, uid, idempotency_key))


async def settle_signal_key(
    client: aetcd.Client, prefix: str, uid: str, idempotency_key: str, claim: dict[str, Any]
) -> None:
    """Mark the key's claim delivered (its annotation was written)."""
    await client.put(_key(prefix, uid, idempotency_key), _encode({**claim, "delivered": True}))


async def retake_signal_key(
    client: aetcd.Client,
    prefix: str,
    uid: str,
    idempotency_key: str,
    seen: dict[str, Any],
    claim: dict[str, Any],
) -> bool:
    """Replace the claim `seen` (undelivered) by `claim` if it is still `seen`; True when
    this caller won (and so delivers the signal again)."""
    key = _key(prefix, uid, idempotency_key)
    tx = client.transactions
    ok, _ = await client.transaction(
        compare=[tx.value(key) == _encode(seen)],
        success=[tx.put(key, _encode(claim))],
        failure=[],
    )
    return bool(ok)
