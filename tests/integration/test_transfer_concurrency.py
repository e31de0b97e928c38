"""50 concurrent transfers between 5 wallets, from workflows and from the CLI and the
Python client at once: money is conserved and every accepted command is applied once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from kurable.client import CommandRejected, EntityBusy, EntityNotFound
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Door, apply
from .test_entities import PREFIX, cli, client
from .transfers import (
    COMPENSATE,
    NEVER_AFFORDABLE,
    Accepted,
    Transfer,
    accepted_by_run,
    check_invariants,
    check_run_outcome,
    create_wallets,
    journals,
    plan,
    run_name,
    wait_all_terminal,
    wallet_names,
    workflows,
)

pytestmark = pytest.mark.slow

SEED = 20240604
WORKFLOW_TRANSFERS = 35
CLIENT_TRANSFERS = 15
CLI_EVERY = 3
"""Every third client transfer goes through the `kurable` CLI, the others through `Client`."""
SEND_ATTEMPTS = 5


# What a sender learns of one command: its reply, or that it was refused.
Send = Callable[[str, str, int, str], bool]


def send_with_cli(door: Door, namespace: str) -> Send:
    def send(wallet: str, command: str, amount: int, command_id: str) -> bool:
        for _ in range(SEND_ATTEMPTS):  # a retry reuses the id: it cannot apply twice
            done = cli(
                door,
                "command",
                f"entity/{wallet}",
                command,
                "--input",
                f'{{"amount": {amount}}}',
                "--id",
                command_id,
                "-n",
                namespace,
            )
            if done.returncode == 0:
                int(done.stdout)  # the reply: the balance after the command
                return True
            if done.returncode == 1 and done.stderr.startswith("rejected ("):
                return False
            if "not found" in done.stderr:
                return False
            last = done
        raise AssertionError(f"{command} {command_id}: {last.returncode} {last.stderr}")

    return send


def send_with_client(door: Door, namespace: str) -> Send:
    def send(wallet: str, command: str, amount: int, command_id: str) -> bool:
        with client(door) as kurable:
            for _ in range(SEND_ATTEMPTS):
                try:
                    result = kurable.execute(
                        namespace, wallet, command, {"amount": amount}, command_id
                    )
                except (CommandRejected, EntityNotFound):
                    return False
                except EntityBusy:
                    continue
                assert isinstance(result.reply, int)
                return True
        raise AssertionError(f"{command} {command_id}: the entity stayed busy")

    return send


def client_transfer(send: Send, transfer: Transfer) -> list[Accepted]:
    """A saga by hand: withdraw; deposit; if the deposit is refused, deposit back."""
    key = f"client-{transfer.index:03d}"
    withdraw = Accepted(transfer.source, "withdraw", transfer.amount, f"{key}/withdraw")
    if not send(withdraw.wallet, withdraw.command, withdraw.amount, withdraw.command_id):
        return []
    deposit = Accepted(transfer.target, "deposit", transfer.amount, f"{key}/deposit")
    if send(deposit.wallet, deposit.command, deposit.amount, deposit.command_id):
        return [withdraw, deposit]
    back = Accepted(transfer.source, "deposit", transfer.amount, f"{key}/{COMPENSATE}")
    assert send(back.wallet, back.command, back.amount, back.command_id), back
    return [withdraw, back]


def test_fifty_concurrent_transfers_from_workflows_and_clients_conserve_money_exactly_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    rng = random.Random(SEED)
    wallets = wallet_names(5)
    create_wallets(control_plane, namespace, wallets)
    by_run = plan(rng, wallets, WORKFLOW_TRANSFERS, refused=3, missing=2)
    by_client = plan(rng, wallets, CLIENT_TRANSFERS, refused=2, missing=1)
    senders = [
        send_with_cli(door, namespace)
        if t.index % CLI_EVERY == 0
        else send_with_client(door, namespace)
        for t in by_client
    ]

    # Everything is issued at once: the client sagas start behind a barrier that the
    # workflows' creation also waits on.
    start = threading.Barrier(len(by_client) + 1)

    def saga(send: Send, transfer: Transfer) -> list[Accepted]:
        start.wait()
        return client_transfer(send, transfer)

    with ThreadPoolExecutor(len(by_client)) as pool:
        futures = [pool.submit(saga, s, t) for s, t in zip(senders, by_client, strict=True)]
        start.wait()
        apply(control_plane, namespace, workflows(by_run))
        client_outcomes = [f.result(timeout=180) for f in futures]

    names = [run_name(t) for t in by_run]
    finished = wait_all_terminal(control_plane, namespace, names)
    records = journals(control_plane, PREFIX, [r["metadata"]["uid"] for r in finished.values()])
    accepted: list[Accepted] = []
    run_outcomes = []
    for transfer in by_run:
        run = finished[run_name(transfer)]
        mine = accepted_by_run(transfer, run, records[run["metadata"]["uid"]])
        check_run_outcome(transfer, run, mine)
        run_outcomes.append(mine)
        accepted += mine
    for transfer, mine in zip(by_client, client_outcomes, strict=True):
        if transfer.amount == NEVER_AFFORDABLE:
            assert mine == [], transfer
        accepted += mine

    # The load had every outcome: both kinds of sender moved money and were refused,
    # and some withdrawal was compensated.
    steps = [[a.command_id.rpartition("/")[2] for a in o] for o in run_outcomes + client_outcomes]
    assert ["withdraw", COMPENSATE] in steps, steps
    for outcomes in (run_outcomes, client_outcomes):
        assert any(outcomes) and not all(outcomes), outcomes

    check_invariants(control_plane, namespace, PREFIX, wallets, accepted)
