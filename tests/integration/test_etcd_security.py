"""The operator's etcd as production runs it: TLS with client certificates, users and
passwords, three members. A member killed under the operator costs no run; a wrong CA or
password is refused saying what to fix; a snapshot restored into a fresh cluster carries
the runs on (docs/operations.md, "Backup and restore")."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aetcd.exceptions
import pytest

from kurable.engine.journal import parse_time
from kurable.store.etcd import EtcdAuthError, EtcdConfig, EtcdTLSError, connect
from kurable.testing import ControlPlane, EndpointProcess, EtcdCluster, OperatorProcess

from .conftest import Isolated, apply, eventually, get, wait_phase, workflow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(members=3) as started:
        yield started


def config_of(cluster: EtcdCluster, prefix: str = "/kurable/", **changes: str) -> EtcdConfig:
    env = cluster.env()
    config = EtcdConfig(
        env["KURABLE_ETCD_ENDPOINTS"],
        prefix,
        cacert=env["KURABLE_ETCD_CACERT"],
        cert=env["KURABLE_ETCD_CERT"],
        key=env["KURABLE_ETCD_KEY"],
        user=env["KURABLE_ETCD_USER"],
        password=env["KURABLE_ETCD_PASSWORD"],
    )
    return dataclasses.replace(config, **changes)


def refusal(config: EtcdConfig) -> Exception:
    async def attempt() -> None:
        client = await connect(config, request_timeout=5)
        await client.close()

    with pytest.raises(Exception) as caught:
        asyncio.run(attempt())
    return caught.value


def test_a_server_certificate_from_another_ca_is_refused_naming_the_ca(
    cluster: EtcdCluster,
) -> None:
    error = refusal(config_of(cluster, cacert=str(cluster.pki.other_ca_cert)))
    assert isinstance(error, EtcdTLSError)
    assert "TLS handshake with etcd" in str(error) and "--etcd-cacert" in str(error)
    assert str(cluster.pki.other_ca_cert) in str(error)


def test_a_wrong_password_is_refused_naming_the_user(
    control_plane: ControlPlane, cluster: EtcdCluster, tmp_path: Path
) -> None:
    error = refusal(config_of(cluster, password="not-the-password"))
    assert isinstance(error, EtcdAuthError)
    assert "refused user 'kurable'" in str(error) and "KURABLE_ETCD_PASSWORD" in str(error)

    # The operator stops at start saying so, instead of retrying what cannot work.
    env = {**control_plane.env(), **cluster.env(), "KURABLE_ETCD_PASSWORD": "wrong"}
    operator = OperatorProcess(env, tmp_path / "operator.log").start(wait=False)
    try:
        assert operator.process is not None
        assert operator.process.wait(60) != 0
        assert "refused user 'kurable'" in operator.log_tail(100)
    finally:
        operator.stop()


def test_without_a_client_certificate_etcd_refuses_the_connection(cluster: EtcdCluster) -> None:
    error = refusal(dataclasses.replace(config_of(cluster), cert=None, key=None))
    assert isinstance(error, EtcdTLSError), error


def etcd_ports_of(pid: int, ports: list[int]) -> set[int]:
    """The etcd client ports (of `ports`) process `pid` has established TCP connections
    to, read from /proc: which member the operator talks to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            port = int(remote.rsplit(":", 1)[1], 16)
            if state == "01" and inode in inodes and port in ports:  # 01: ESTABLISHED
                found.add(port)
    return found


def operator_on(cluster: EtcdCluster, isolated: Isolated, name: str) -> OperatorProcess:
    return OperatorProcess(
        {**isolated.cp.env(), **cluster.env()},
        isolated.logs / f"{name}.log",
        namespaces=[isolated.namespace],
        etcd_prefix=isolated.prefix,
        extra_args=["--executor-id", name],
    )


STEPS = [
    {"name": "first", "set": {"n": "${ 1 }"}},
    {"name": "nap", "sleep": {"duration": "4s"}},
    {"name": "second", "set": {"n": "${ vars.n + 1 }"}},
    {"name": "again", "sleep": {"duration": "1s"}},
    {"name": "last", "set": {"n": "${ vars.n + 1 }"}},
]


@pytest.mark.slow
def test_runs_finish_when_the_member_the_operator_talks_to_is_killed(
    control_plane: ControlPlane, cluster: EtcdCluster, isolated: Isolated
) -> None:
    namespace = isolated.namespace
    runs = [f"run-{i}" for i in range(6)]
    with operator_on(cluster, isolated, "failover") as operator:
        assert operator.process is not None
        for name in runs:
            apply(control_plane, namespace, workflow(name, steps=STEPS))
        eventually(
            lambda: [
                (get(control_plane, namespace, f"workflow/{n}").get("status") or {}).get("phase")
                for n in runs
            ],
            lambda seen: all(phase == "Running" for phase in seen),
            30,
            "every run to be running",
        )
        in_use = etcd_ports_of(operator.process.pid, cluster.client_ports)
        assert len(in_use) == 1, f"the operator talks to {in_use}"
        victim = cluster.client_ports.index(in_use.pop())
        cluster.kill(victim)
        killed_at = time.time()
        try:
            for name in runs:
                wf = wait_phase(control_plane, namespace, name, ("Succeeded", "Failed"), 60)
                assert wf["status"]["phase"] == "Succeeded", wf["status"]
                # In flight when the member died: it finished afterwards.
                assert parse_time(wf["status"]["finishedAt"]).timestamp() > killed_at
            moved = etcd_ports_of(operator.process.pid, cluster.client_ports)
            assert moved and cluster.client_ports[victim] not in moved
            assert "moving to" in operator.log_tail(400)
        finally:
            cluster.restart(victim)


@pytest.mark.slow
def test_a_snapshot_restored_into_a_fresh_cluster_carries_the_runs_on(
    control_plane: ControlPlane, cluster: EtcdCluster, isolated: Isolated, tmp_path: Path
) -> None:
    namespace = isolated.namespace
    waiting = workflow("waiting", steps=[{"name": "approve", "wait": {"signal": "GO"}}])
    # One executor id before and after: the operator's pod, restarted after the restore
    # (another id would wait for the restored lease of the old one to expire).
    with operator_on(cluster, isolated, "restored"):
        apply(control_plane, namespace, waiting)
        eventually(
            lambda: get(control_plane, namespace, "workflow/waiting").get("status") or {},
            lambda status: status.get("currentStep") == "approve",
            30,
            "the run to wait for its signal",
        )

        # What the chart's backup CronJob runs: a snapshot as root over TLS.
        env = {**os.environ, **cluster.env(), "KURABLE_ETCD_USER": "root"}
        env["KURABLE_ETCD_PASSWORD"] = cluster.root_password
        backups = tmp_path / "backups"
        argv = [sys.executable, "-m", "kurable", "etcd-snapshot", "--output", str(backups)]
        for _ in range(2):
            subprocess.run(
                [*argv, "--keep", "1"],
                env=env,
                check=True,
                capture_output=True,
            )
    (snapshot,) = backups.glob("snapshot-*.db")  # the older one was pruned
    assert snapshot.stat().st_size > 0

    restored = EtcdCluster(
        members=1,
        state_dir=tmp_path / "restored",
        data_from=snapshot,
        pki=cluster.pki,
        passwords=(cluster.password, cluster.root_password),
    )
    with restored, operator_on(restored, isolated, "restored"):
        control_plane.kubectl(
            "annotate", "-n", namespace, "workflow/waiting", "kurable.dev/signal.GO=1"
        )
        wf = wait_phase(control_plane, namespace, "waiting", ("Succeeded", "Failed"), 60)
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        apply(control_plane, namespace, workflow("after", steps=STEPS[:1]))
        assert wait_phase(control_plane, namespace, "after", ("Succeeded",), 30)


def test_etcd_auth_gives_kurable_its_prefix_only_and_turns_authentication_on(
    tmp_path: Path,
) -> None:
    """`kurable etcd-auth` (the chart's init container), twice: idempotent."""
    with EtcdCluster(members=1, state_dir=tmp_path / "etcd", auth=False) as fresh:
        secret = tmp_path / "password"
        secret.write_text(fresh.password + "\n")
        root = tmp_path / "root-password"
        root.write_text(fresh.root_password)
        env = {**os.environ, **fresh.env(), "KURABLE_ETCD_USER": "root"}
        env.pop("KURABLE_ETCD_PASSWORD")
        env["KURABLE_ETCD_PASSWORD_FILE"] = str(root)
        argv = [sys.executable, "-m", "kurable", "etcd-auth", "--etcd-prefix", "/kurable/"]
        argv += ["--grant-password-file", str(secret)]
        first = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        assert "authentication turned on" in first.stdout
        again = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        assert "authentication was on already" in again.stdout

        async def use() -> None:
            client = await connect(config_of(fresh))
            try:
                await client.put(b"/kurable/x", b"1")
                with pytest.raises(aetcd.exceptions.ClientError, match="permission denied"):
                    await client.put(b"/elsewhere/x", b"1")
            finally:
                await client.close()

        asyncio.run(use())
        assert isinstance(refusal(config_of(fresh, password="wrong")), EtcdAuthError)


def test_the_endpoint_stays_ready_when_its_member_is_killed(
    control_plane: ControlPlane, cluster: EtcdCluster, tmp_path: Path
) -> None:
    """The endpoint's etcd client (TLS, auth) fails over like the operator's."""
    env = {**control_plane.env(), **cluster.env()}
    with EndpointProcess(env, tmp_path / "endpoint.log") as endpoint:
        assert endpoint.process is not None
        in_use = etcd_ports_of(endpoint.process.pid, cluster.client_ports)
        assert len(in_use) == 1, f"the endpoint talks to {in_use}"
        victim = cluster.client_ports.index(in_use.pop())
        cluster.kill(victim)
        try:
            # /readyz reads from etcd: the read moves to another member at once.
            with urllib.request.urlopen(f"{endpoint.url}/readyz", timeout=10) as reply:
                assert reply.status == 200
            assert cluster.client_ports[victim] not in etcd_ports_of(
                endpoint.process.pid, cluster.client_ports
            )
        finally:
            cluster.restart(victim)


def test_an_expired_auth_token_is_renewed_without_the_caller_noticing(tmp_path: Path) -> None:
    """etcd's tokens expire after `--auth-token-ttl` seconds unused (300 by default: an
    endpoint idle for five minutes): the next request logs in again, on the same member."""
    with EtcdCluster(
        members=1, state_dir=tmp_path / "etcd", extra_args=("--auth-token-ttl=1",)
    ) as short:

        async def idle_then_use() -> None:
            client = await connect(config_of(short))
            try:
                await client.put(b"/kurable/a", b"1")
                token = client.metadata
                await asyncio.sleep(2.5)  # the token's TTL passes unused (what is tested)
                await client.put(b"/kurable/b", b"2")
                assert client.metadata != token  # logged in again
                assert client.failovers == 0  # the same member
            finally:
                await client.close()

        asyncio.run(idle_then_use())
