"""Benchmark: time from operator start to every unfinished workflow resumed.

    .venv/bin/python bench/recovery.py --workflows 1000

Creates N workflows that sleep for an hour, lets an operator start them all, kills it
(SIGKILL), starts a new one under the same executor id (a restarted container), and
measures the time until every run is held again by the new incarnation (its fencing
key in etcd names it) and until every run's status was re-projected by it. Timings
belong here, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kurable.api import crd
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

PREFIX = "/kurable/"


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": "nap", "sleep": {"duration": "1h"}}]},
    }


async def owners(endpoint: str) -> dict[str, str]:
    """run uid -> the executor incarnation holding it."""
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        rows = await etcd.get_prefix(f"{PREFIX}workflows/".encode())
        held = {}
        for kv in rows:
            key = kv.key.decode()
            if key.endswith("/owner"):
                held[key.split("/")[-2]] = kv.value.decode()
        return held
    finally:
        await etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with ControlPlane(crds=crd.write_all(work / "crds")) as cp:
            extra = ["--executor-id", "bench-0"]
            first = OperatorProcess(cp.env(), work / "first.log", extra_args=extra).start()
            batch = 100
            for start in range(0, args.workflows, batch):
                docs = [manifest(f"sleeper-{i:05d}") for i in range(start,
                        min(args.workflows, start + batch))]  # fmt: skip
                cp.kubectl("create", "-f", "-", input=json.dumps(
                    {"apiVersion": "v1", "kind": "List", "items": docs}))  # fmt: skip
            deadline = time.monotonic() + 600
            while len(asyncio.run(owners(cp.etcd_endpoint))) < args.workflows:
                if time.monotonic() > deadline:
                    raise SystemExit("the first operator did not start every run")
                time.sleep(1)
            held_before = asyncio.run(owners(cp.etcd_endpoint))
            first.kill()
            first.stop()

            started = time.monotonic()
            second = OperatorProcess(cp.env(), work / "second.log", extra_args=extra)
            second.start(wait=False)
            ready_at = None
            resumed_at = None
            while resumed_at is None:
                if ready_at is None:
                    try:
                        second.wait_ready(timeout=0.05)
                        ready_at = time.monotonic() - started
                    except RuntimeError:
                        pass
                held = asyncio.run(owners(cp.etcd_endpoint))
                moved = sum(1 for uid, who in held.items() if who != held_before.get(uid))
                if moved >= args.workflows:
                    resumed_at = time.monotonic() - started
                elif time.monotonic() - started > 600:
                    raise SystemExit(f"only {moved} of {args.workflows} runs resumed in 600 s")
                time.sleep(0.05)
            second.stop()
    print(f"workflows            {args.workflows}")
    print(f"operator ready       {ready_at or float('nan'):8.2f} s after start")
    print(f"all runs resumed     {resumed_at:8.2f} s after start (target < 5 s)")


if __name__ == "__main__":
    main()
