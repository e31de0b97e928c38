"""Entities on the real control plane: exactly-once commands, rejections, status, deletion."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import yaml

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.client import Client, CommandConflict, CommandRejected
from kurable.engine.entities import Snapshot
from kurable.executor import commands
from kurable.store import entities as store
from kurable.store import keys
from kurable.store.entities import EntityRef
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import Door, apply, eventually, get

TRANSFER = ROOT / "examples" / "transfer"
PREFIX = "/kurable/"
T = TypeVar("T")

WALLET: dict[str, Any] = yaml.safe_load((TRANSFER / "00-wallet.yaml").read_text())


def wallet_without_guard() -> dict[str, Any]:
    """The example wallet minus its guard: only the stateSchema stands between it and < 0."""
    manifest = copy.deepcopy(WALLET)
    del manifest["spec"]["commands"]["withdraw"]["guards"]
    return manifest


def entity(name: str, state: dict[str, Any], type_: str = "wallet") -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Entity",
        "metadata": {"name": name},
        "spec": {"type": type_, "initialState": state},
    }


def ready(cp: ControlPlane, namespace: str, name: str, version: int = 0) -> dict[str, Any]:
    """Wait until entity `name` is Ready at `version` (at least); return it."""
    return eventually(
        lambda: get(cp, namespace, f"entity/{name}"),
        lambda e: (
            (e.get("status") or {}).get("phase") == "Ready"
            and (e["status"].get("version") or 0) >= version
        ),
        60,
        f"entity/{name} Ready at version {version}",
    )


def cli(door: Door, *args: str) -> subprocess.CompletedProcess[str]:
    """`kurable ARGS` with $KURABLE_ENDPOINT and $KURABLE_TOKEN set to the test endpoint's."""
    return subprocess.run(
        [sys.executable, "-m", "kurable", *args],
        env={**os.environ, **door.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def client(door: Door) -> Client:
    """The Python client, through the test endpoint."""
    return door.client()


@asynccontextmanager
async def kube_api(cp: ControlPlane) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient with the control plane's admin kubeconfig."""
    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=str(cp.kubeconfig))
    try:
        yield api
    finally:
        await api.close()


async def entity_object(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes_asyncio import client as k8s

    obj: dict[str, Any] = await k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "kurable.dev", "v1alpha1", namespace, "entities", name
    )
    return obj


def in_etcd(cp: ControlPlane, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(etcd_client)` against the control plane's etcd."""

    async def run() -> T:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=PREFIX))
        try:
            return await action(etcd)
        finally:
            await etcd.close()

    return asyncio.run(run())


def events_of(cp: ControlPlane, obj: dict[str, Any]) -> list[dict[str, Any]]:
    return in_etcd(cp, lambda etcd: store.load_events(etcd, PREFIX, EntityRef.from_object(obj)))


def keys_under(cp: ControlPlane, prefix: str) -> list[str]:
    async def list_keys(etcd: Any) -> list[str]:
        return [kv.key.decode() for kv in await etcd.get_prefix(prefix.encode(), keys_only=True)]

    return in_etcd(cp, list_keys)


def transfer_example(cp: ControlPlane, namespace: str) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", str(TRANSFER))
    ready(cp, namespace, "alice")
    ready(cp, namespace, "bob")


def test_transfer_example_applies_and_entities_start_ready_with_their_initial_state(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)
    wallet = eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Valid",
        30,
        "the wallet EntityType to be Valid",
    )
    assert wallet["status"]["observedGeneration"] == wallet["metadata"]["generation"]
    alice = get(control_plane, namespace, "entity/alice")
    assert alice["status"]["state"] == {"balance": 100}
    assert alice["status"]["version"] == 0
    assert alice["status"]["stateTruncated"] is False
    assert alice["status"]["observedGeneration"] == alice["metadata"]["generation"]
    conditions = {c["type"]: c for c in alice["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert get(control_plane, namespace, "entity/bob")["status"]["state"] == {"balance": 0}
    table = control_plane.kubectl("get", "-n", namespace, "ent").stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "TYPE", "PHASE", "VERSION"]


def test_cli_command_prints_the_reply_and_status_and_history_follow(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    done = cli(door, "command", "entity/alice", "withdraw", "--input", '{"amount":10}',
        "-n", namespace,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 90

    alice = get(control_plane, namespace, "entity/alice")  # status is patched by the sender
    assert alice["status"]["state"] == {"balance": 90}
    assert alice["status"]["version"] == 1
    assert alice["status"]["lastEvent"]["type"] == "Withdrawn"

    history = cli(door, "history", "entity/alice", "-n", namespace, "-o", "json")
    assert history.returncode == 0, history.stderr
    [event] = json.loads(history.stdout)
    assert (event["type"], event["data"], event["version"]) == ("Withdrawn", {"amount": 10}, 1)
    table = cli(door, "history", "entity/alice", "-n", namespace)
    assert "Withdrawn" in table.stdout.splitlines()[1]


def test_a_duplicate_command_id_returns_the_original_reply_and_appends_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    with client(door) as kurable:
        first = kurable.execute(namespace, "alice", "withdraw", {"amount": 30}, "order-1")
        assert (first.reply, first.version, first.duplicate) == (70, 1, False)
        kurable.send_command(namespace, "alice", "deposit", {"amount": 5}, "refund-1")
        again = kurable.execute(namespace, "alice", "withdraw", {"amount": 30}, "order-1")
        assert (again.reply, again.version, again.duplicate) == (70, 1, True)
        assert kurable.get_state(namespace, "alice").state == {"balance": 75}
    # The CLI with the same id: same reply, nothing appended.
    done = cli(door, "command", "entity/alice", "withdraw", "-i", '{"amount":30}',
        "--id", "order-1", "-n", namespace,
    )  # fmt: skip
    assert (done.returncode, json.loads(done.stdout)) == (0, 70)
    alice = get(control_plane, namespace, "entity/alice")
    events = events_of(control_plane, alice)
    assert [(e["type"], e["commandId"]) for e in events] == [
        ("Withdrawn", "order-1"),
        ("Deposited", "refund-1"),
    ]
    assert alice["status"]["version"] == 2


def test_a_failing_guard_changes_nothing_and_names_the_rule(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    done = cli(door, "command", "entity/alice", "withdraw", "-i", '{"amount":1000}',
        "--id", "big", "-n", namespace,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert "GuardFailed" in done.stderr
    rule = "guard 1 (state.balance >= input.amount): insufficient funds: 100 < 1000"
    assert rule in done.stderr
    with client(door) as kurable:
        assert kurable.get_state(namespace, "alice").version == 0
        # Even once the funds are there, the same id gets the same answer.
        kurable.send_command(namespace, "alice", "deposit", {"amount": 1000})
        with pytest.raises(CommandRejected) as rejected:
            kurable.send_command(namespace, "alice", "withdraw", {"amount": 1000}, "big")
        assert rejected.value.reason == "GuardFailed"
        assert kurable.get_state(namespace, "alice").state == {"balance": 1100}
    alice = get(control_plane, namespace, "entity/alice")
    assert [e["type"] for e in events_of(control_plane, alice)] == ["Deposited"]


def test_input_that_does_not_fit_the_input_schema_is_rejected_naming_the_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    with client(door) as kurable:
        for payload, problem in [
            ({"amount": 0}, "input.amount: must be >= 1, got 0"),
            ({}, "input.amount: required"),
            ({"amount": "ten"}, 'input.amount: must be an integer, got "ten"'),
        ]:
            with pytest.raises(CommandRejected) as rejected:
                kurable.send_command(namespace, "alice", "withdraw", payload)
            assert rejected.value.reason == "InvalidInput"
            assert problem in rejected.value.message
        with pytest.raises(CommandRejected) as unknown:
            kurable.send_command(namespace, "alice", "steal", {"amount": 1})
        assert unknown.value.reason == "UnknownCommand"
        assert "known: deposit, withdraw" in unknown.value.message
        assert kurable.get_state(namespace, "alice").version == 0


def test_a_command_that_would_break_the_state_schema_is_rejected(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, wallet_without_guard())
    apply(control_plane, namespace, entity("carol", {"balance": 5}))
    ready(control_plane, namespace, "carol")
    with client(door) as kurable:
        with pytest.raises(CommandRejected) as rejected:
            kurable.send_command(namespace, "carol", "withdraw", {"amount": 6})
        assert rejected.value.reason == "InvalidState"
        assert "state.balance: must be >= 0, got -1" in rejected.value.message
        assert kurable.send_command(namespace, "carol", "withdraw", {"amount": 5}) == 0


def test_an_initial_state_that_does_not_fit_marks_the_entity_invalid_until_fixed(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, WALLET)
    apply(control_plane, namespace, entity("dave", {"balance": -5}))
    dave = eventually(
        lambda: get(control_plane, namespace, "entity/dave"),
        lambda e: (e.get("status") or {}).get("phase") == "Invalid",
        30,
        "entity/dave to be Invalid",
    )
    assert "spec.initialState.balance: must be >= 0, got -5" in dave["status"]["message"]
    ready_condition = {c["type"]: c for c in dave["status"]["conditions"]}["Ready"]
    assert ready_condition["status"] == "False"
    assert ready_condition["reason"] == "InvalidInitialState"
    apply(control_plane, namespace, entity("dave", {"balance": 5}))
    dave = ready(control_plane, namespace, "dave")
    assert dave["status"]["state"] == {"balance": 5}


def test_an_entity_of_a_missing_type_is_invalid_until_the_type_appears(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    apply(control_plane, namespace, entity("erin", {"balance": 1}))
    erin = eventually(
        lambda: get(control_plane, namespace, "entity/erin"),
        lambda e: (e.get("status") or {}).get("phase") == "Invalid",
        30,
        "entity/erin to be Invalid",
    )
    assert "EntityType wallet not found" in erin["status"]["message"]
    apply(control_plane, namespace, WALLET)
    assert ready(control_plane, namespace, "erin")["status"]["state"] == {"balance": 1}


def test_an_invalid_entity_type_is_reported_naming_the_command_and_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    broken = copy.deepcopy(WALLET)
    broken["spec"]["commands"]["withdraw"]["emit"][0]["type"] = "Withdrew"
    broken["spec"]["commands"]["deposit"]["reply"] = "${ state.balance + }"
    apply(control_plane, namespace, broken)
    wallet = eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the wallet EntityType to be Invalid",
    )
    message = wallet["status"]["message"]
    assert "spec.commands.withdraw.emit[0].type: event type 'Withdrew' has no handler" in message
    assert "spec.commands.deposit.reply" in message and "syntax error" in message
    apply(control_plane, namespace, WALLET)
    eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Valid",
        30,
        "the fixed wallet EntityType to be Valid",
    )


def test_deleting_an_entity_removes_its_etcd_keys(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    with client(door) as kurable:
        kurable.send_command(namespace, "alice", "withdraw", {"amount": 1}, "a-1")
    alice = get(control_plane, namespace, "entity/alice")
    uid = alice["metadata"]["uid"]
    own = keys.entity(PREFIX, namespace, "alice", uid)
    typed = keys.type_entity_events(PREFIX, namespace, "wallet", uid)
    assert len(keys_under(control_plane, own)) == 3  # snapshot, one event, one dedup record
    assert len(keys_under(control_plane, typed)) == 1
    control_plane.kubectl("delete", "-n", namespace, "entity/alice", "--timeout=60s")
    assert keys_under(control_plane, own) == []
    assert keys_under(control_plane, typed) == []
    bob = get(control_plane, namespace, "entity/bob")
    assert keys_under(control_plane, keys.entity(PREFIX, namespace, "bob", bob["metadata"]["uid"]))


def test_deleting_an_entity_type_in_use_is_blocked_until_its_entities_are_gone(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    control_plane.kubectl("delete", "-n", namespace, "entitytype/wallet", "--wait=false")
    wallet = eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Terminating",
        30,
        "the wallet deletion to be blocked",
    )
    assert "2 Entities of this type exist (alice, bob)" in wallet["status"]["message"]
    ready_condition = next(c for c in wallet["status"]["conditions"] if c["type"] == "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("False", "InUse")
    # Still usable meanwhile.
    with client(door) as kurable:
        assert kurable.send_command(namespace, "bob", "deposit", {"amount": 1}) == 1
    control_plane.kubectl("delete", "-n", namespace, "entity/alice", "entity/bob", "--timeout=60s")
    eventually(
        lambda: (
            control_plane.kubectl(
                "get", "-n", namespace, "entitytype/wallet", check=False
            ).returncode
        ),
        lambda code: code != 0,
        60,
        "the wallet EntityType to go once unused",
    )
    # The wait (retried at least once meanwhile) is expected: an Info Event, no ERROR line.
    blocked = json.loads(
        control_plane.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=DeletionBlocked",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert blocked and {e["type"] for e in blocked} == {"Normal"}, blocked
    kinds = json.loads(
        control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    )["items"]
    assert not [
        e for e in kinds if e["involvedObject"]["kind"] == "EntityType" and e["type"] != "Normal"
    ]
    errors = [
        line
        for line in operator.log_path.read_text(errors="replace").splitlines()
        if f"[{namespace}/wallet]" in line and "ERROR" in line
    ]
    assert errors == []


def test_a_large_state_is_truncated_in_status_but_whole_in_etcd(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    notes = copy.deepcopy(WALLET)
    notes["spec"]["stateSchema"]["properties"]["memo"] = {"type": "string"}
    apply(control_plane, namespace, notes)
    memo = "x" * 6000
    apply(control_plane, namespace, entity("frank", {"memo": memo, "balance": 3}))
    frank = ready(control_plane, namespace, "frank")
    assert frank["status"]["stateTruncated"] is True
    assert frank["status"]["state"] == {"balance": 3}
    with client(door) as kurable:
        assert kurable.get_state(namespace, "frank").state == {"memo": memo, "balance": 3}
        kurable.send_command(namespace, "frank", "deposit", {"amount": 1})
    frank = get(control_plane, namespace, "entity/frank")
    assert frank["status"]["state"] == {"balance": 4}
    assert frank["status"]["stateTruncated"] is True


def test_twenty_concurrent_commands_on_one_entity_apply_exactly_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)

    async def scenario() -> list[Any]:
        # Two clients, twenty requests at once: they race each other in the endpoint
        # (whose per-entity queue orders them) and in etcd.
        clients = [door.async_client() for _ in range(2)]
        try:
            return await asyncio.gather(
                *(
                    clients[i % 2].send_command(
                        namespace, "alice", "withdraw", {"amount": 7}, f"w-{i}"
                    )
                    for i in range(20)
                ),
                return_exceptions=True,
            )
        finally:
            for c in clients:
                await c.close()

    outcomes = asyncio.run(scenario())
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    rejected = [o for o in outcomes if isinstance(o, CommandRejected)]
    assert len(accepted) + len(rejected) == 20, outcomes
    assert len(accepted) == 14  # 14 * 7 = 98 <= 100 < 15 * 7
    assert sorted(accepted, reverse=True) == [100 - 7 * n for n in range(1, 15)]
    alice = get(control_plane, namespace, "entity/alice")
    events = events_of(control_plane, alice)
    assert [e["version"] for e in events] == list(range(1, 15))
    assert len({e["commandId"] for e in events}) == 14
    with client(door) as kurable:
        snapshot = kurable.get_state(namespace, "alice")
    assert (snapshot.version, snapshot.state) == (14, {"balance": 2})
    ready(control_plane, namespace, "alice", version=14)


def test_a_state_schema_edit_reports_the_entities_that_no_longer_fit(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)
    stricter = copy.deepcopy(WALLET)
    stricter["spec"]["stateSchema"]["properties"]["balance"]["minimum"] = 50
    apply(control_plane, namespace, stricter)
    wallet = eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: any(
            c["type"] == "EntitiesConform" and c["status"] == "False"
            for c in (t.get("status") or {}).get("conditions") or []
        ),
        30,
        "the wallet to report entities that no longer fit",
    )
    conform = {c["type"]: c for c in wallet["status"]["conditions"]}["EntitiesConform"]
    assert "bob: state.balance: must be >= 50, got 0" in conform["message"]
    assert "alice" not in conform["message"]
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=StateSchemaMismatch"
    ).stdout
    assert "bob" in events


@pytest.mark.slow
def test_status_left_behind_by_a_sender_that_died_is_repaired_by_the_operator(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)
    alice = get(control_plane, namespace, "entity/alice")
    spec = EntityTypeSpec.model_validate(WALLET["spec"])
    # Commit without projecting status, as a sender killed right after its commit would.
    result = in_etcd(
        control_plane,
        lambda etcd: commands.execute_command(
            etcd, PREFIX, alice, spec, "withdraw", {"amount": 25}, "dying-sender"
        ),
    )
    assert result.version == 1
    assert get(control_plane, namespace, "entity/alice")["status"]["version"] == 0
    alice = ready(control_plane, namespace, "alice", version=1)  # within the resync interval
    assert alice["status"]["state"] == {"balance": 75}


def test_status_never_moves_back_to_an_older_version(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)

    async def scenario() -> list[bool]:
        async with kube_api(control_plane) as api:
            newer = Snapshot({"balance": 50}, 5, {"type": "Withdrawn", "at": "t5", "version": 5})
            older = Snapshot({"balance": 60}, 3, {"type": "Withdrawn", "at": "t3", "version": 3})
            return [
                await commands.project_entity_status(api, namespace, "bob", newer),
                await commands.project_entity_status(api, namespace, "bob", older),
            ]

    assert asyncio.run(scenario()) == [True, False]
    status = get(control_plane, namespace, "entity/bob")["status"]
    assert (status["version"], status["state"]) == (5, {"balance": 50})
    # The guard against racing writers: a patch computed from a stale object is refused.
    stale = control_plane.kubectl(
        "patch", "-n", namespace, "entity/bob", "--subresource=status", "--type=merge",
        "-p", json.dumps({"metadata": {"resourceVersion": "1"}, "status": {"version": 1}}),
        check=False,
    )  # fmt: skip
    assert stale.returncode != 0 and "Conflict" in stale.stderr + stale.stdout, stale
    assert get(control_plane, namespace, "entity/bob")["status"]["version"] == 5


def test_a_projection_from_the_entity_read_before_the_command_spares_a_read_and_survives_a_race(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """The endpoint's route and a workflow's entity step read the Entity before the
    command: when it shows the version just before the command's, the projection patches
    from it (one request); a patch from an object someone wrote meanwhile is refused and
    done again from a fresh read; an object further behind (several senders) is not used."""
    transfer_example(control_plane, namespace)
    ready(control_plane, namespace, "bob")

    def snapshot(version: int) -> Snapshot:
        last = {"type": "Deposited", "at": f"t{version}", "version": version}
        return Snapshot({"balance": 100 + version}, version, last)

    async def scenario() -> list[tuple[bool, list[str]]]:
        async with kube_api(control_plane) as api:
            calls: list[str] = []
            call_api = api.call_api

            async def counted(path: str, method: str, *args: Any, **kwargs: Any) -> Any:
                calls.append(method)
                return await call_api(path, method, *args, **kwargs)

            async def project(version: int, known: dict[str, Any]) -> tuple[bool, list[str]]:
                calls.clear()
                patched = await commands.project_entity_status(
                    api, namespace, "bob", snapshot(version), known
                )
                return patched, list(calls)

            before = await entity_object(api, namespace, "bob")
            assert before["status"]["version"] == 0
            api.call_api = counted  # type: ignore[method-assign,assignment]
            current = await project(1, before)
            behind = await project(3, before)  # it shows 0, not 2
            raced = copy.deepcopy(before)  # shows 3, as if read just now, but is older
            raced["status"]["version"] = 3
            stale = await project(4, raced)
            older = await project(2, await entity_object(api, namespace, "bob"))
            return [current, behind, stale, older]

    current, behind, stale, older = asyncio.run(scenario())
    assert current == (True, ["PATCH"])  # from the object at hand: no read
    assert behind == (True, ["GET", "PATCH"])
    assert stale == (True, ["PATCH", "GET", "PATCH"])  # refused (409), read, patched
    assert older == (False, ["GET"])  # status shows a newer version already
    status = get(control_plane, namespace, "entity/bob")["status"]
    assert (status["version"], status["state"]) == (4, {"balance": 104})


def test_concurrent_status_projections_of_one_entity_coalesce_and_each_waits_for_its_version(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    transfer_example(control_plane, namespace)

    async def scenario() -> tuple[list[int], int]:
        async with kube_api(control_plane) as api:
            ref = EntityRef.from_object(await entity_object(api, namespace, "alice"))
            patches = 0
            call_api = api.call_api

            async def counted(path: str, method: str, *args: Any, **kwargs: Any) -> Any:
                nonlocal patches
                patches += method == "PATCH"
                return await call_api(path, method, *args, **kwargs)

            api.call_api = counted  # type: ignore[method-assign,assignment]
            project = commands.status_projector(api)

            async def commit(version: int) -> int:
                last = {"type": "Deposited", "at": f"t{version}", "version": version}
                snapshot = Snapshot({"balance": 100 + version}, version, last)
                await project(ref, commands.CommandResult(version, version, False, snapshot))
                shown: int = (await entity_object(api, namespace, "alice"))["status"]["version"]
                return shown

            shown = await asyncio.gather(*(commit(v) for v in range(1, 13)))
            assert commands._STATUS_ROUNDS[api] == {}  # nothing kept per entity
            return shown, patches

    shown, patches = asyncio.run(scenario())
    # Each caller returned once status showed its version or a later one ...
    assert all(seen >= version for version, seen in zip(range(1, 13), shown, strict=True))
    # ... and the twelve cost two writes: the first version, then the newest for the rest.
    assert patches == 2
    status = get(control_plane, namespace, "entity/alice")["status"]
    assert (status["version"], status["state"]) == (12, {"balance": 112})


NOTEBOOK: dict[str, Any] = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "EntityType",
    "metadata": {"name": "notebook"},
    "spec": {
        "stateSchema": {"type": "object"},
        "commands": {
            "note": {
                "emit": [{"type": "Noted", "data": {"text": "${ input.text }"}}],
                "reply": "${ size(input.text) }",
            }
        },
        "events": {"Noted": {"set": {"last": "${ event.text }"}}},
    },
}


def test_a_command_whose_commit_is_over_the_size_limit_is_rejected_and_applies_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    apply(control_plane, namespace, NOTEBOOK)
    apply(control_plane, namespace, entity("pad", {}, type_="notebook"))
    pad = ready(control_plane, namespace, "pad")
    with client(door) as kurable:
        assert kurable.send_command(namespace, "pad", "note", {"text": "hi"}) == 2
        with pytest.raises(CommandRejected) as caught:
            # 600 KB fits one value, but the commit writes it three times (the entity's log,
            # its type's stream, the new state): 1.8 MB, over the 1 MiB limit and over
            # etcd's 1.5 MiB request limit.
            kurable.send_command(namespace, "pad", "note", {"text": "x" * 600_000})
        assert caught.value.reason == "ValueTooLarge"
        message = caught.value.message
        assert "command 'note' would write 1800" in message
        assert "--max-value-bytes" in message and "nothing was applied" in message
        assert kurable.get_state(namespace, "pad").state == {"last": "hi"}
    assert [e["data"] for e in events_of(control_plane, pad)] == [{"text": "hi"}]


def test_a_command_id_reused_with_another_input_is_a_conflict_and_applies_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)

    def send(command: str, amount: int) -> subprocess.CompletedProcess[str]:
        return cli(
            door,
            "command",
            "entity/alice",
            command,
            "--input",
            json.dumps({"amount": amount}),
            "--id",
            "pay-1",
            "-n",
            namespace,
        )

    first = send("withdraw", 10)
    assert (first.returncode, first.stdout.strip()) == (0, "90"), first.stderr
    again = send("withdraw", 10)
    assert (again.returncode, again.stdout.strip()) == (0, "90"), again.stderr
    other = send("withdraw", 50)
    assert other.returncode == 3 and other.stdout == ""
    assert "'pay-1'" in other.stderr and "different input" in other.stderr
    deposit = send("deposit", 10)
    assert deposit.returncode == 3 and "'withdraw', not 'deposit'" in deposit.stderr
    alice = get(control_plane, namespace, "entity/alice")
    assert [e["data"] for e in events_of(control_plane, alice)] == [{"amount": 10}]
    with client(door) as kurable:
        assert kurable.get_state(namespace, "alice").state == {"balance": 90}
        with pytest.raises(CommandConflict) as caught:
            kurable.send_command(namespace, "alice", "withdraw", {"amount": 50}, "pay-1")
        assert caught.value.differs == ("input",)


def test_commands_to_an_invalid_entity_type_are_refused_saying_why(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    transfer_example(control_plane, namespace)
    broken = copy.deepcopy(WALLET)
    broken["spec"]["events"]["Withdrawn"]["set"]["balance"] = (
        "${ state.balance - event.data.amount }"
    )
    apply(control_plane, namespace, broken)
    wallet = eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Invalid",
        30,
        "the wallet EntityType to be Invalid",
    )
    assert "event has no field 'data'" in wallet["status"]["message"]
    refused = cli(
        door,
        "command",
        "entity/alice",
        "withdraw",
        "--input",
        '{"amount":10}',
        "-n",
        namespace,
    )
    assert refused.returncode == 1
    assert "rejected (TypeInvalid): EntityType wallet is Invalid" in refused.stderr
    assert "event has no field 'data'" in refused.stderr
    alice = get(control_plane, namespace, "entity/alice")
    assert events_of(control_plane, alice) == []
    apply(control_plane, namespace, WALLET)
    eventually(
        lambda: get(control_plane, namespace, "entitytype/wallet"),
        lambda t: (t.get("status") or {}).get("phase") == "Valid",
        30,
        "the fixed wallet EntityType to be Valid",
    )
    with client(door) as kurable:
        assert kurable.send_command(namespace, "alice", "withdraw", {"amount": 10}) == 90
