"""The chaos suite's parts: a seeded plan of load and faults, the processes it hurts,
and the invariants it checks once the faults stop.

Everything random comes from one seed: which transfers and errands run, when they
are created and signalled, which faults strike, when, and for how long. The moments
land on a real, loaded machine, so a seed replays the same plan, not the same
interleaving; the test prints the seed first, so every failure report shows it.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kurable.engine.decide import Done
from kurable.engine.journal import TERMINAL_PHASES, Record, fold
from kurable.engine.status import project
from kurable.testing import ControlPlane, OperatorProcess
from kurable.testing._controlplane import ControlPlaneError, KubectlError
from tests.integration.transfers import (
    Accepted,
    Transfer,
    accepted_by_run,
    check_invariants,
    check_run_outcome,
    journals,
    plan,
    run_name,
    template_runs,
    wallet_names,
)
from tests.integration.transfers import workflows as transfer_runs

T = TypeVar("T")

FAULTS = ("operator-kill", "etcd-restart", "apiserver-restart", "second-replica", "pause")
"""Every kind of fault the suite injects; each plan holds each of them at least once."""
LEASE_TTL = 3
"""The operators' executor lease (seconds): a pause longer than this loses the claims."""
SIGNAL = "GO"
STRANDED = "stranded"
"""A run whose template never exists: it can make no progress and must say so."""


@dataclass(frozen=True)
class Scale:
    """How much load and how long a window of faults."""

    wallets: int
    transfers: int
    refused: int
    missing: int
    errands: int
    window: float
    """Seconds during which faults strike and load arrives."""
    settle: float
    """Seconds allowed, after the last fault, for every run to end."""
    messages: int = 40
    """Messages published to the consumed topic during the window."""


SCALES = {
    # CI: every fault kind once or twice, a few dozen runs; about two minutes.
    "short": Scale(wallets=6, transfers=24, refused=2, missing=2, errands=8, window=70, settle=150),
    # Releases and developers: ten minutes of faults over a few hundred runs.
    "long": Scale(
        wallets=12,
        transfers=240,
        refused=12,
        missing=12,
        errands=60,
        window=600,
        settle=400,
        messages=400,
    ),
}


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, when it strikes (seconds into the window), how long it lasts."""

    kind: str
    at: float
    hold: float
    """Down time (kills, restarts), pause length, or how long a second replica runs."""
    graceful: bool = False
    """For a second replica: stopped with SIGTERM (else SIGKILL)."""


@dataclass(frozen=True)
class Arrival:
    """Load arriving at `at` seconds: transfers and errands to create, errands to signal."""

    at: float
    transfers: tuple[Transfer, ...] = ()
    errands: tuple[int, ...] = ()
    signals: tuple[int, ...] = ()


@dataclass(frozen=True)
class Plan:
    seed: int
    scale: Scale
    wallets: list[str]
    transfers: list[Transfer]
    faults: list[Fault]
    arrivals: list[Arrival]


def make_plan(seed: int, scale: Scale) -> Plan:
    """The whole seeded plan: load, signals and faults, with their moments."""
    rng = random.Random(seed)
    wallets = wallet_names(scale.wallets)
    transfers = plan(rng, wallets, scale.transfers, refused=scale.refused, missing=scale.missing)
    # Load arrives in batches over the first two thirds of the window, so that faults
    # strike while runs are in flight; signals come a random moment after their errand.
    horizon = scale.window * 2 / 3
    batches = max(3, int(scale.window // 10))
    moments = sorted(rng.uniform(0, horizon) for _ in range(batches))
    moments[0] = 0.0
    created: dict[float, tuple[list[Transfer], list[int]]] = {m: ([], []) for m in moments}
    for t in transfers:
        created[rng.choice(moments)][0].append(t)
    signalled: dict[float, list[int]] = defaultdict(list)
    for errand in range(scale.errands):
        moment = rng.choice(moments)
        created[moment][1].append(errand)
        signalled[moment + rng.uniform(2, scale.window / 3)].append(errand)
    # Faults: each kind once in a shuffled order, then random kinds until the window
    # is full; one at a time, with a breather between.
    kinds = list(FAULTS)
    rng.shuffle(kinds)
    faults, at = [], rng.uniform(2, 5)
    while at < scale.window:
        kind = kinds.pop(0) if kinds else rng.choice(FAULTS)
        hold = {
            "operator-kill": rng.uniform(0.2, 3),
            "etcd-restart": rng.uniform(1, 4),
            "apiserver-restart": rng.uniform(1, 5),
            "second-replica": rng.uniform(6, 12),
            "pause": LEASE_TTL + rng.uniform(2, 4),
        }[kind]
        faults.append(Fault(kind, at, hold, graceful=rng.random() < 0.5))
        at += hold + rng.uniform(3, 8)
    # One errand waits through every fault: created first, signalled after the last, so
    # that some run is certainly carried across them (however fast the others end).
    for errands_then in (*(es for _, es in created.values()), *signalled.values()):
        if 0 in errands_then:
            errands_then.remove(0)
    created[0.0][1].append(0)
    signalled[max(f.at + f.hold for f in faults) + 2].append(0)
    arrivals = [Arrival(m, tuple(ts), tuple(es)) for m, (ts, es) in created.items()]
    arrivals += [Arrival(m, signals=tuple(es)) for m, es in signalled.items() if es]
    arrivals.sort(key=lambda a: a.at)
    return Plan(seed, scale, wallets, transfers, faults, arrivals)


def errand_name(index: int) -> str:
    return f"errand-{index:03d}"


def errand_template(service_url: str) -> dict[str, Any]:
    """Book at the test service, rest (a durable timer), wait for a signal, confirm.
    The service fails the first call of every idempotency key, so each call retries."""
    retry = {"maxAttempts": 30, "backoff": {"initial": "200ms", "factor": 2, "max": "2s"}}

    def call(what: str, body: Any) -> dict[str, Any]:
        url = f"${{ '{service_url}/' + workflow.uid + '/{what}' }}"
        return {"method": "POST", "url": url, "body": body, "timeout": "5s"}

    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "errand"},
        "spec": {
            "steps": [
                {
                    "name": "book",
                    "http": call("book", {"errand": "${ input.index }"}),
                    "retry": retry,
                },
                {"name": "rest", "sleep": {"duration": "2s"}},
                {"name": "approval", "wait": {"signal": SIGNAL, "timeout": "1h"}},
                {
                    "name": "confirm",
                    "http": call("confirm", {"ok": "${ steps.approval.output.ok }"}),
                    "retry": retry,
                },
            ],
            "output": {
                "approved": "${ steps.approval.output.ok }",
                "confirmed": "${ steps.confirm.output.path }",
            },
        },
    }


def errands(indices: tuple[int, ...]) -> dict[str, Any]:
    return template_runs("errand", {errand_name(i): {"index": i} for i in indices})


def persist(what: str, action: Callable[[], T], timeout: float = 120.0) -> T:
    """Do `action`, retrying while the API server (or its etcd) is down or restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (KubectlError, ControlPlaneError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout:.0f}s: {e}") from e
            time.sleep(0.5)


@dataclass
class Operators:
    """The operator replicas of the suite: `a` and `c` always run (two active replicas:
    they share the runs by rendezvous hashing; an operator kill strikes the one driving
    the witness errand, which is then restarted); `b` runs while a fault asks for one
    more replica."""

    cp: ControlPlane
    logs: Path
    namespace: str
    prefix: str
    incarnations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    a: OperatorProcess | None = None
    b: OperatorProcess | None = None
    c: OperatorProcess | None = None

    def start(self, executor: str) -> OperatorProcess:
        self.incarnations[executor] += 1
        process = OperatorProcess(
            self.cp.env(),
            self.logs / f"{executor}-{self.incarnations[executor]}.log",
            namespaces=[self.namespace],
            etcd_prefix=self.prefix,
            extra_args=["--executor-id", executor, "--lease-ttl", str(LEASE_TTL)],
        )
        return process.start()  # faults come one at a time: the API server is up

    def log(self, process: OperatorProcess) -> str:
        return process.log_path.read_text(errors="replace")

    def stop_all(self) -> None:
        for process in (self.a, self.b, self.c):
            if process is not None:
                process.resume()
                process.stop()


@dataclass
class Evidence:
    """What the faults did, for the report and for the checks that they did something."""

    injected: list[str] = field(default_factory=list)
    refused_after_pause: list[bool] = field(default_factory=list)
    """Per pause: whether the woken operator found its hold gone (its commit refused)."""


REFUSAL_MARKERS = ("lost the run", "executor lease expired")


def inject(fault: Fault, cp: ControlPlane, ops: Operators, evidence: Evidence) -> None:
    """Strike with one fault and repair it; returns once the system is whole again."""
    evidence.injected.append(fault.kind)
    if fault.kind == "operator-kill":
        # The replica driving the witness (errand 0, waiting through every fault) dies, so
        # that its end is certainly written by another incarnation than its start.
        replica = "c" if _witness_driver(cp, ops.namespace) == "chaos-c" else "a"
        process = getattr(ops, replica)
        assert process is not None
        process.kill()
        time.sleep(fault.hold)
        process.stop()
        setattr(ops, replica, ops.start(f"chaos-{replica}"))
    elif fault.kind == "etcd-restart":
        cp.stop_etcd(kill=True)
        time.sleep(fault.hold)
        cp.start_etcd()
    elif fault.kind == "apiserver-restart":
        cp.stop_apiserver(kill=True)
        time.sleep(fault.hold)
        cp.start_apiserver()
    elif fault.kind == "second-replica":
        ops.b = ops.start("chaos-b")
        time.sleep(fault.hold)
        if fault.graceful:
            ops.b.stop()
        else:
            ops.b.kill()
            ops.b.stop()
        ops.b = None
    elif fault.kind == "pause":
        # A second replica takes the runs over while `a` is frozen past its lease; when
        # `a` wakes, its next commit must be refused and it must claim the runs again.
        assert ops.a is not None
        ops.b = ops.start("chaos-b")
        before = ops.log(ops.a)
        ops.a.pause()
        time.sleep(fault.hold)
        ops.a.resume()
        time.sleep(LEASE_TTL + 2)
        after = ops.log(ops.a)[len(before) :]
        evidence.refused_after_pause.append(any(m in after for m in REFUSAL_MARKERS))
        ops.b.stop()
        ops.b = None
    else:
        raise ValueError(fault.kind)


def _witness_driver(cp: ControlPlane, namespace: str, patience: float = 30.0) -> str | None:
    """The replica (`chaos-a` or `chaos-c`) that the witness's status names as driving it.
    Waits while it names none yet (its first status is being written) or `chaos-b` (a
    second replica just stopped: its runs move back within a lease); None after
    `patience` seconds."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            found = cp.kubectl(
                "get", "workflow", errand_name(0), "-n", namespace,
                "-o", "jsonpath={.status.executor}",
            ).stdout.strip()  # fmt: skip
        except (KubectlError, ControlPlaneError, subprocess.TimeoutExpired):
            found = ""
        if found in ("chaos-a", "chaos-c"):
            return found
        time.sleep(0.5)
    return None


def deliver(arrival: Arrival, cp: ControlPlane, namespace: str) -> None:
    if arrival.transfers:
        manifest = json.dumps(transfer_runs(list(arrival.transfers)))
        persist(
            "creating transfers",
            lambda: cp.kubectl("apply", "-n", namespace, "-f", "-", input=manifest),
        )
    if arrival.errands:
        manifest = json.dumps(errands(arrival.errands))
        persist(
            "creating errands",
            lambda: cp.kubectl("apply", "-n", namespace, "-f", "-", input=manifest),
        )
    for errand in arrival.signals:
        persist(
            f"signalling {errand_name(errand)}",
            lambda errand=errand: cp.kubectl(
                "annotate",
                "--overwrite",
                "-n",
                namespace,
                f"workflow/{errand_name(errand)}",
                f'kurable.dev/signal.{SIGNAL}={{"ok": true, "errand": {errand}}}',
            ),
        )


class Load(threading.Thread):
    """Delivers the plan's arrivals at their moments, whatever the faults are doing."""

    def __init__(self, plan: Plan, cp: ControlPlane, namespace: str, start: float) -> None:
        super().__init__(daemon=True, name="chaos-load")
        self.plan, self.cp, self.namespace, self.start_time = plan, cp, namespace, start
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for arrival in self.plan.arrivals:
                time.sleep(max(0.0, self.start_time + arrival.at - time.monotonic()))
                deliver(arrival, self.cp, self.namespace)
        except BaseException as e:  # reported by the test
            self.error = e


def all_runs(cp: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    listing = persist(
        "listing workflows", lambda: cp.kubectl("get", "workflows", "-n", namespace, "-o", "json")
    )
    return {item["metadata"]["name"]: item for item in json.loads(listing.stdout)["items"]}


def wait_settled(
    cp: ControlPlane, namespace: str, names: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Every run in `names` terminal; on timeout, fail naming the stuck ones and why."""
    deadline = time.monotonic() + timeout
    while True:
        found = all_runs(cp, namespace)
        stuck = [
            n
            for n in names
            if ((found.get(n) or {}).get("status") or {}).get("phase") not in TERMINAL_PHASES
        ]
        if not stuck:
            return found
        if time.monotonic() > deadline:
            shown = ("phase", "currentStep", "message", "conditions")
            statuses = {n: (found.get(n) or {}).get("status") or {} for n in stuck[:10]}
            detail = [
                f"{n}: {json.dumps({k: s.get(k) for k in shown})}" for n, s in statuses.items()
            ]
            raise AssertionError(
                f"{len(stuck)} runs did not reach a terminal phase in {timeout:.0f}s:\n"
                + "\n".join(detail)
            )
        time.sleep(1)


STATUS_FIELDS = ("phase", "reason", "output", "error", "stepsCompleted", "finishedAt", "steps")


def check_status_agrees(run: dict[str, Any], records: list[Record]) -> None:
    """The run's status is the projection of its journal (nothing more, nothing less)."""
    name = run["metadata"]["name"]
    expected = project(
        fold(records), generation=None, decision=Done(), previous_conditions=None, now=""
    )
    status = _pruned(run["status"])
    expected = _pruned(expected)
    for key in STATUS_FIELDS:
        assert status.get(key) == expected.get(key), (
            f"{name}: status.{key} is {status.get(key)!r}, the journal says {expected.get(key)!r}"
        )
    assert status["journal"]["records"] == len(records), (
        f"{name}: status counts {status['journal']['records']} journal records, etcd holds "
        f"{len(records)}"
    )


def _pruned(value: Any) -> Any:
    """Without null fields: status is written with a merge patch, which drops them."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def check_errand(
    index: int, run: dict[str, Any], records: list[Record], seen: set[tuple[str, str]]
) -> None:
    """An errand succeeded, and each of its HTTP steps reached the service with one
    idempotency key (perhaps several times: at-least-once, never two keys for a step)."""
    name, uid = errand_name(index), run["metadata"]["uid"]
    status = run["status"]
    assert status["phase"] == "Succeeded", f"{name}: {status.get('phase')} {status.get('message')}"
    assert status["output"] == {"approved": True, "confirmed": f"/{uid}/confirm"}, name
    completed = {r.step for r in records if r.type == "StepCompleted"}
    for step in ("book", "confirm"):
        keys = {key for path, key in seen if path == f"/{uid}/{step}"}
        assert step in completed, f"{name}: {step} never completed"
        assert keys == {f"{uid}/{step}"}, (
            f"{name}: step {step} reached the service with keys {keys}"
        )


@dataclass
class Outcome:
    accepted: list[Accepted]
    journals: dict[str, list[Record]]


def check_all(
    plan: Plan,
    cp: ControlPlane,
    namespace: str,
    prefix: str,
    found: dict[str, dict[str, Any]],
    seen: set[tuple[str, str]],
) -> Outcome:
    """Every invariant of the suite, each failing with a message that says what broke."""
    names = [run_name(t) for t in plan.transfers] + [
        errand_name(i) for i in range(plan.scale.errands)
    ]
    records = journals(cp, prefix, [found[n]["metadata"]["uid"] for n in names])
    accepted: list[Accepted] = []
    for transfer in plan.transfers:
        run = found[run_name(transfer)]
        journal = records[run["metadata"]["uid"]]
        mine = accepted_by_run(transfer, run, journal)
        check_run_outcome(transfer, run, mine)
        accepted += mine
    for index in range(plan.scale.errands):
        run = found[errand_name(index)]
        check_errand(index, run, records[run["metadata"]["uid"]], seen)
    for name in names:
        check_status_agrees(found[name], records[found[name]["metadata"]["uid"]])
    check_invariants(cp, namespace, prefix, plan.wallets, accepted)
    return Outcome(accepted, records)
