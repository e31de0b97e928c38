"""Benchmark: what TLS, client certificates and authentication cost Kurable's etcd
client, and how long a request waits when the member in use dies.

    .venv/bin/python bench/etcd_security.py --requests 2000 --kills 5

On a 3-member local cluster (kurable.testing.EtcdCluster; `--unsafe-no-fsync`, so the
figures are the client's and the network stack's, not a disk's):

- sequential puts and gets, p50/p99 in ms, plaintext vs TLS + client certificate +
  user/password (one member each, the same machine);
- failover (3 members): the member the client uses is SIGKILLed between two puts; the gap
  between the last put that succeeded before and the first after, in ms (writes whose
  error reached the caller are counted, then retried as a run driver would).

Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time

from kurable.store.etcd import EtcdClient, EtcdConfig, connect
from kurable.testing import EtcdCluster, find_tool
from kurable.testing._controlplane import _free_ports


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def secured(cluster: EtcdCluster) -> EtcdConfig:
    env = cluster.env()
    return EtcdConfig(
        env["KURABLE_ETCD_ENDPOINTS"],
        "/bench/",
        cacert=env["KURABLE_ETCD_CACERT"],
        cert=env["KURABLE_ETCD_CERT"],
        key=env["KURABLE_ETCD_KEY"],
        user=env["KURABLE_ETCD_USER"],
        password=env["KURABLE_ETCD_PASSWORD"],
    )


async def latencies(config: EtcdConfig, requests: int) -> dict[str, float]:
    client = await connect(config)
    puts, gets = [], []
    try:
        for i in range(requests):
            key = f"/bench/k{i % 100}".encode()
            start = time.perf_counter()
            await client.put(key, b"x" * 100)
            puts.append(time.perf_counter() - start)
            start = time.perf_counter()
            await client.get(key)
            gets.append(time.perf_counter() - start)
    finally:
        await client.close()
    return {
        "put_p50_ms": percentile(puts, 0.5) * 1000,
        "put_p99_ms": percentile(puts, 0.99) * 1000,
        "get_p50_ms": percentile(gets, 0.5) * 1000,
        "get_p99_ms": percentile(gets, 0.99) * 1000,
    }


async def failover(cluster: EtcdCluster, config: EtcdConfig) -> tuple[float, int]:
    client: EtcdClient = await connect(config)
    errors = 0
    try:
        for i in range(20):  # warm
            await client.put(b"/bench/f", str(i).encode())
        victim = client.index
        last_ok = time.perf_counter()
        cluster.kill(victim)
        while True:
            try:
                await client.put(b"/bench/f", b"after")
                return (time.perf_counter() - last_ok) * 1000, errors
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
    finally:
        await client.close()
        cluster.restart(victim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()

    # One member each for the per-request cost (no replication in the figure).
    with EtcdCluster(members=1) as single:
        tls = asyncio.run(latencies(secured(single), args.requests))
    with EtcdCluster(members=3) as cluster:
        config = secured(cluster)
        gaps = [asyncio.run(failover(cluster, config)) for _ in range(args.kills)]
    plain = plaintext(args.requests)
    print(f"requests: {args.requests} sequential puts and gets, 100-byte values, 1 member")
    for name, figures in (("plaintext", plain), ("TLS + client cert + auth", tls)):
        print(f"  {name:26s} " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    print(f"failover after SIGKILL of the member in use ({args.kills} kills):")
    for gap, errors in gaps:
        print(f"  gap {gap:7.1f} ms, errors seen by the caller: {errors}")


def plaintext(requests: int) -> dict[str, float]:
    """The same loop against one plaintext member without auth."""
    client_port, peer_port = _free_ports(2)
    with tempfile.TemporaryDirectory() as data:
        etcd = subprocess.Popen(
            [
                find_tool("etcd"),
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client_port}",
                f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            config = EtcdConfig(f"127.0.0.1:{client_port}", "/bench/")
            for _ in range(100):
                try:
                    return asyncio.run(latencies(config, requests))
                except Exception:
                    time.sleep(0.1)
            raise RuntimeError("plaintext etcd did not start")
        finally:
            etcd.terminate()
            etcd.wait()


if __name__ == "__main__":
    main()
