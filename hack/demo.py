"""`make demo`: a saga across two entities, on the embedded local control plane.

Starts etcd + kube-apiserver (kurable.testing.ControlPlane), the operator and the
endpoint (commands and reads go through it, as users' do), applies
examples/transfer/ (the `wallet` EntityType, wallets alice (100) and bob (0), the
`transfer` WorkflowTemplate), then three transfers (examples/transfer/runs/): one
succeeds, one asks for more than alice has, one deposits to a wallet that does not
exist and is compensated. Shows the steps as they happen, the outcomes, the balances,
a command sent with `kurable command` and one with the Python client (through the
endpoint) and alice's event log. Then the same kind of saga by events alone
(examples/choreography/): Consumers react to OrderPlaced, StockReserved and
PaymentFailed; order-1 is confirmed, order-2 fails at payment and is compensated by
events; shows the event trail across the entities; then the shop (examples/shop/,
hack/demo_shop.py): an order sent to the endpoint, whose run queries a View and commands
two entities. Shuts everything down; exit status 0
when every outcome is the expected one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo_shop import shop  # hack/ is the script directory

from kurable.api import crd
from kurable.cli import main as kurable
from kurable.cli._dev import admin_token
from kurable.client import Client
from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
TRANSFER = ROOT / "examples" / "transfer"
CHOREOGRAPHY = ROOT / "examples" / "choreography"
SAGA_ENTITIES = ("order-1", "order-2", "widget", "payments")
SAGA_EXPECTED = {
    "order-1": {"status": "confirmed"},
    "order-2": {"status": "cancelled"},
    "widget": {"available": 8, "reserved": 2},
    "payments": {"charged": 40},
}
RUNS = ["transfer-ok", "transfer-too-much", "transfer-to-nobody"]
EXPECTED = {
    "transfer-ok": ("Succeeded", "Succeeded"),
    "transfer-too-much": ("Failed", "StepFailed"),
    "transfer-to-nobody": ("Failed", "Compensated"),
}


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def objects(cp: ControlPlane, kind: str) -> dict[str, dict[str, Any]]:
    listing = json.loads(cp.kubectl("get", kind, "-o", "json").stdout)
    return {item["metadata"]["name"]: item for item in listing["items"]}


def follow(cp: ControlPlane, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Print each step's progress in every run until all have finished."""
    seen: set[tuple[str, str, str]] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = objects(cp, "workflows")
        for name in RUNS:
            status = (runs.get(name) or {}).get("status") or {}
            for step in status.get("steps") or []:
                key = (name, step["name"], step["phase"])
                if key not in seen:
                    seen.add(key)
                    detail = step.get("message") or (
                        f"reply {json.dumps(step['output'])}" if "output" in step else ""
                    )
                    print(f"  {name:<20} {step['name']:<22} {step['phase']:<10} {detail}")
        phases = [((runs.get(n) or {}).get("status") or {}).get("phase") for n in RUNS]
        if all(p in ("Succeeded", "Failed", "Cancelled", "Invalid") for p in phases):
            return runs
        time.sleep(0.3)
    raise TimeoutError("the transfers did not finish in time")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kurable-demo-") as tmp:
        work = Path(tmp)
        banner("starting the local control plane (etcd + kube-apiserver)")
        started = time.monotonic()
        with ControlPlane(state_dir=work / "cluster", crds=crd.write_all(work / "crds")) as cp:
            print(
                f"API server {cp.server}, etcd {cp.etcd_endpoint} "
                f"({time.monotonic() - started:.1f}s)"
            )
            os.environ.update(cp.env())
            banner("starting the operator and the endpoint")
            with (
                OperatorProcess(cp.env(), work / "operator.log") as operator,
                EndpointProcess(cp.env(), work / "endpoint.log") as endpoint,
            ):
                # What `kurable dev` writes into its env file: the CLI and the client
                # find the endpoint and a token the endpoint accepts here.
                os.environ["KURABLE_ENDPOINT"] = endpoint.url
                os.environ["KURABLE_TOKEN"] = admin_token(cp)
                print(f"endpoint {endpoint.url} (docs: {endpoint.url}/docs)")
                banner("kubectl apply -f examples/transfer/   (wallet type, alice, bob, template)")
                print(cp.kubectl("apply", "-f", str(TRANSFER)).stdout.rstrip())
                for _ in range(100):
                    wallets = objects(cp, "entities")
                    if all(
                        (wallets.get(n) or {}).get("status", {}).get("phase") == "Ready"
                        for n in ("alice", "bob")
                    ):
                        break
                    time.sleep(0.2)
                print(cp.kubectl("get", "entities").stdout.rstrip())

                banner("kubectl apply -f examples/transfer/runs/   (three transfers)")
                print(cp.kubectl("apply", "-f", str(TRANSFER / "runs")).stdout.rstrip())
                banner("the steps as they commit")
                runs = follow(cp)

                banner("outcomes")
                ok = True
                for name in RUNS:
                    status = runs[name]["status"]
                    outcome = (status["phase"], status.get("reason"))
                    mark = "as expected" if outcome == EXPECTED[name] else "UNEXPECTED"
                    ok &= outcome == EXPECTED[name]
                    print(f"  {name:<20} {outcome[0]:<10} reason={outcome[1]:<12} {mark}")
                    print(f"  {'':<20} {status.get('message')}")
                print(cp.kubectl("get", "workflows").stdout.rstrip())

                banner("balances")
                for _ in range(50):
                    wallets = objects(cp, "entities")
                    balances = {
                        n: wallets[n]["status"]["state"]["balance"] for n in ("alice", "bob")
                    }
                    if balances == {"alice": 70, "bob": 30}:
                        break
                    time.sleep(0.2)
                print(
                    f"  alice {balances['alice']}, bob {balances['bob']}, "
                    f"total {sum(balances.values())} (was 100)"
                )
                ok &= balances == {"alice": 70, "bob": 30}

                banner("kurable command entity/bob withdraw --input '{\"amount\": 5}' --id demo-1")
                ok &= kurable(["command", "entity/bob", "withdraw", "--input",
                               '{"amount": 5}', "--id", "demo-1"]) == 0  # fmt: skip
                banner('Client().send_command(None, "bob", "deposit", {"amount": 5}, "demo-2")')
                with Client() as client:
                    reply = client.send_command(None, "bob", "deposit", {"amount": 5}, "demo-2")
                    state = client.get_state(None, "bob")
                print(f"  reply {reply}; bob's state {state.state} at version {state.version}")
                ok &= reply == 30 and state.state == {"balance": 30}

                banner("alice's event log (kurable history entity/alice, through the endpoint)")
                kurable(["history", "entity/alice"])
                banner(
                    "the compensated run's journal (kurable history workflow/transfer-to-nobody)"
                )
                kurable(["history", "workflow/transfer-to-nobody"])
                ok &= choreography(cp)
                ok &= shop(cp, work)
                if not ok:
                    print(f"\noperator log:\n{operator.log_tail()}", file=sys.stderr)
            banner("shutting down")
    print("done: every outcome as expected" if ok else "some outcome was not as expected")
    return 0 if ok else 1


def choreography(cp: ControlPlane, timeout: float = 120.0) -> bool:
    """examples/choreography/: apply it, publish two orders, show the event trail."""
    banner("kubectl apply -f examples/choreography/   (order, stock, payment, consumers)")
    print(cp.kubectl("apply", "-f", str(CHOREOGRAPHY)).stdout.rstrip())
    banner("kubectl apply -f examples/choreography/checkout/   (two orders published)")
    print(cp.kubectl("apply", "-f", str(CHOREOGRAPHY / "checkout")).stdout.rstrip())
    deadline = time.monotonic() + timeout
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        entities = objects(cp, "entities")
        states = {
            n: (entities.get(n) or {}).get("status", {}).get("state") or {} for n in SAGA_ENTITIES
        }
        if all(
            all(states[n].get(k) == v for k, v in want.items()) for n, want in SAGA_EXPECTED.items()
        ):
            break
        time.sleep(0.3)
    banner("outcomes")
    ok = True
    for name, want in SAGA_EXPECTED.items():
        fits = all(states[name].get(k) == v for k, v in want.items())
        ok &= fits
        print(
            f"  {name:<10} {json.dumps(states[name]):<70} {'as expected' if fits else 'UNEXPECTED'}"
        )
    print(cp.kubectl("get", "consumers").stdout.rstrip())
    for name in SAGA_ENTITIES:
        banner(f"the event trail of {name} (kurable history entity/{name})")
        kurable(["history", f"entity/{name}"])
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
