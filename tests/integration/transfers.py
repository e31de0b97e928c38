"""Transfer load and its invariants, shared by the concurrency and crash tests.

A load is a seeded list of transfers between wallets of the example `wallet` type.
What was accepted is read back from where each sender recorded it (a run's journal,
a client's replies); the wallets' event logs in etcd must then hold exactly those
commands, once each, and every snapshot must be the replay of its log.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aetcd

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine.entities import Event, replay
from kurable.engine.journal import TERMINAL_PHASES, Record
from kurable.store import entities as store
from kurable.store import keys
from kurable.store.entities import EntityRef
from kurable.store.journal import EtcdConfig, Journal, connect
from kurable.testing import ControlPlane

from .conftest import apply, eventually, get
from .test_entities import TRANSFER, WALLET, entity

INITIAL_BALANCE = 100
NEVER_AFFORDABLE = 10_000
"""More than all wallets hold together: a withdrawal of this is always refused."""
MISSING_WALLET = "ghost"
"""No Entity has this name: a deposit to it fails and the withdrawal is compensated."""
COMPENSATE = "withdraw:compensate"


@dataclass(frozen=True)
class Transfer:
    """One planned transfer of `amount` from wallet `source` to wallet `target`."""

    index: int
    source: str
    target: str
    amount: int


@dataclass(frozen=True)
class Accepted:
    """A command that a sender saw accepted: which wallet, which command, its id."""

    wallet: str
    command: str
    amount: int
    command_id: str


def wallet_names(count: int) -> list[str]:
    return [f"wallet-{i}" for i in range(count)]


def plan(
    rng: random.Random, wallets: list[str], count: int, *, refused: int = 0, missing: int = 0
) -> list[Transfer]:
    """`count` transfers between random pairs; `refused` of them can never be afforded and
    `missing` of them deposit (1) to a wallet that does not exist."""
    transfers = []
    for index in range(count):
        source, target = rng.sample(wallets, 2)
        # Up to 80 of a wallet's 100: early ones mostly pass, later ones often do not.
        transfers.append(Transfer(index, source, target, rng.randint(1, 80)))
    chosen = rng.sample(range(count), refused + missing)
    for index in chosen[:refused]:
        transfers[index] = Transfer(
            index, transfers[index].source, transfers[index].target, NEVER_AFFORDABLE
        )
    for index in chosen[refused:]:
        # 1: a withdrawal that nearly always passes, so that its compensation runs.
        transfers[index] = Transfer(index, transfers[index].source, MISSING_WALLET, 1)
    return transfers


def create_wallets(cp: ControlPlane, namespace: str, wallets: list[str]) -> None:
    """The wallet type and the template from the example, and `wallets` with 100 each."""
    cp.kubectl("apply", "-n", namespace, "-f", str(TRANSFER / "00-wallet.yaml"))
    cp.kubectl("apply", "-n", namespace, "-f", str(TRANSFER / "20-transfer.yaml"))
    items = [entity(name, {"balance": INITIAL_BALANCE}) for name in wallets]
    apply(cp, namespace, {"apiVersion": "v1", "kind": "List", "items": items})
    for name in wallets:
        eventually(
            lambda name=name: get(cp, namespace, f"entity/{name}"),
            lambda e: (e.get("status") or {}).get("phase") == "Ready",
            60,
            f"entity/{name} Ready",
        )


def run_name(transfer: Transfer) -> str:
    return f"transfer-{transfer.index:03d}"


def template_runs(template: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Runs of `template`, one per name in `inputs` (with that input), as one List."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {"templateRef": {"name": template}, "input": value},
            }
            for name, value in inputs.items()
        ],
    }


def workflows(transfers: list[Transfer]) -> dict[str, Any]:
    """The runs of the `transfer` template for `transfers`, as one List to apply."""
    return template_runs(
        "transfer",
        {run_name(t): {"from": t.source, "to": t.target, "amount": t.amount} for t in transfers},
    )


def runs(cp: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    listing = json.loads(cp.kubectl("get", "workflows", "-n", namespace, "-o", "json").stdout)
    return {item["metadata"]["name"]: item for item in listing["items"]}


def wait_all_terminal(
    cp: ControlPlane, namespace: str, names: list[str], timeout: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Wait until every run in `names` is in a terminal phase; return them all."""

    def unfinished(found: dict[str, dict[str, Any]]) -> list[str]:
        return [
            n
            for n in names
            if ((found.get(n) or {}).get("status") or {}).get("phase") not in TERMINAL_PHASES
        ]

    found = eventually(
        lambda: runs(cp, namespace),
        lambda found: not unfinished(found),
        timeout,
        "every transfer run to end",
    )
    return {n: found[n] for n in names}


def accepted_by_run(
    transfer: Transfer, run: dict[str, Any], records: list[Record]
) -> list[Accepted]:
    """The commands a run's journal says were accepted; each entity step at most once."""
    uid = run["metadata"]["uid"]
    completed = [r.step for r in records if r.type == "StepCompleted"]
    counts = Counter(completed)
    assert all(n == 1 for n in counts.values()), f"{run_name(transfer)}: {counts}"
    wallet_of = {
        "withdraw": transfer.source,
        "deposit": transfer.target,
        COMPENSATE: transfer.source,
    }
    command_of = {"withdraw": "withdraw", "deposit": "deposit", COMPENSATE: "deposit"}
    return [
        Accepted(wallet_of[step], command_of[step], transfer.amount, f"{uid}/{step}")
        for step in completed
        if step in wallet_of
    ]


def check_run_outcome(transfer: Transfer, run: dict[str, Any], accepted: list[Accepted]) -> None:
    """A run's phase agrees with what its journal committed, and with its plan."""
    status = run["status"]
    steps = [a.command_id.rpartition("/")[2] for a in accepted]
    where = f"{run_name(transfer)} {transfer}: {status.get('phase')} {status.get('message')}"
    if status["phase"] == "Succeeded":
        assert steps == ["withdraw", "deposit"], where
        assert status["output"]["moved"] == transfer.amount, where
    elif status.get("reason") == "Compensated":
        assert steps == ["withdraw", COMPENSATE], where
    else:
        assert status["phase"] == "Failed" and steps == [], where
    if transfer.amount == NEVER_AFFORDABLE:
        assert status["phase"] == "Failed" and steps == [], where
        assert "insufficient funds" in status["message"], where
    if transfer.target == MISSING_WALLET:
        assert status["phase"] == "Failed", where


def journals(cp: ControlPlane, prefix: str, uids: list[str]) -> dict[str, list[Record]]:
    async def load() -> dict[str, list[Record]]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=prefix))
        try:
            journal = Journal(etcd, prefix)
            return {uid: (await journal.load(uid))[0] for uid in uids}
        finally:
            await etcd.close()

    return asyncio.run(load())


@dataclass(frozen=True)
class WalletLog:
    """What etcd holds for one wallet."""

    ref: EntityRef
    events: list[dict[str, Any]]
    stream: list[dict[str, Any]]
    """The wallet's part of the per-type stream."""
    snapshot: store.Snapshot | None


def wallet_logs(
    cp: ControlPlane, namespace: str, prefix: str, wallets: list[str]
) -> dict[str, WalletLog]:
    refs = {name: EntityRef.from_object(get(cp, namespace, f"entity/{name}")) for name in wallets}

    async def stream(etcd: aetcd.Client, ref: EntityRef) -> list[dict[str, Any]]:
        key = keys.type_entity_events(prefix, ref.namespace, ref.type, ref.uid)
        rows = await etcd.get_prefix(key.encode(), sort_order="ascend", sort_target="key")
        return [json.loads(kv.value) for kv in rows]

    async def load() -> dict[str, WalletLog]:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=prefix))
        try:
            return {
                name: WalletLog(
                    ref,
                    await store.load_events(etcd, prefix, ref),
                    await stream(etcd, ref),
                    await store.load_snapshot(etcd, prefix, ref),
                )
                for name, ref in refs.items()
            }
        finally:
            await etcd.close()

    return asyncio.run(load())


def check_invariants(
    cp: ControlPlane,
    namespace: str,
    prefix: str,
    wallets: list[str],
    accepted: list[Accepted],
) -> dict[str, WalletLog]:
    """Everything the senders saw accepted is in the logs, once; nothing else is; the
    snapshots are the replay of the logs; money is neither made nor lost."""
    spec = EntityTypeSpec.model_validate(WALLET["spec"])
    ids = Counter(a.command_id for a in accepted)
    assert all(n == 1 for n in ids.values()), "a sender reported one command id twice"
    logs = wallet_logs(cp, namespace, prefix, wallets)
    balances = {}
    for name, log in logs.items():
        mine = [a for a in accepted if a.wallet == name]
        logged = Counter(e["commandId"] for e in log.events)
        twice = {i: n for i, n in logged.items() if n > 1}
        assert not twice, f"{name}: command ids applied more than once: {twice}"
        # Each wallet command emits one event: the log holds exactly the accepted commands.
        assert len(log.events) == len(mine), (name, len(log.events), len(mine))
        assert set(logged) == {a.command_id for a in mine}, name
        by_id = {a.command_id: a for a in mine}
        for event in log.events:
            sent = by_id[event["commandId"]]
            kind = {"withdraw": "Withdrawn", "deposit": "Deposited"}[sent.command]
            assert (event["type"], event["data"]) == (kind, {"amount": sent.amount}), event
        assert [e["version"] for e in log.events] == list(range(1, len(log.events) + 1)), name
        assert [(e["commandId"], e["version"]) for e in log.stream] == [
            (e["commandId"], e["version"]) for e in log.events
        ], f"{name}: the per-type stream differs from the entity's log"
        assert log.snapshot is not None, name
        replayed = replay(
            spec,
            {"balance": INITIAL_BALANCE},
            (Event(e["type"], e["data"]) for e in log.events),
        )
        assert log.snapshot.state == replayed, (name, log.snapshot, replayed)
        assert log.snapshot.version == len(log.events), name
        expected = INITIAL_BALANCE + sum(
            a.amount if a.command == "deposit" else -a.amount for a in mine
        )
        assert replayed == {"balance": expected}, name
        balances[name] = replayed["balance"]
    assert all(b >= 0 for b in balances.values()), balances
    assert sum(balances.values()) == INITIAL_BALANCE * len(wallets), balances
    for name, log in logs.items():
        eventually(
            lambda name=name: get(cp, namespace, f"entity/{name}").get("status") or {},
            lambda status, log=log: (
                status.get("version") == len(log.events)
                and status.get("state") == log.snapshot.state  # type: ignore[union-attr]
            ),
            30,
            f"entity/{name} status to show version {len(log.events)}",
        )
    return logs
