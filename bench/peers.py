"""Benchmark: Kurable beside Restate and beside its floors, on one workload.

    .venv/bin/python bench/peers.py [--workflows 200] [--repeat 3] [--profile out.txt]

The workload: W workflows of 3 trivial steps, one at a time and 16 in flight. Kurable
runs on the local control plane with its operator in a subprocess; the bench drives the
API server in-process (aiohttp, one watch sees `Succeeded`; no kubectl per request).
Restate (server from npm, Python SDK from PyPI, installed by hack/restate.sh into
~/.cache/kurable/restate, all on loopback) runs the same 3 steps as `ctx.run`s.

Floors, measured in the same run: the etcd transaction p50 (a journal commit's shape),
and the API server alone (no operator): Workflow objects created and given one status
write each at 16 in flight, with the CRD's schema and CEL rules, then with the rules
removed. Printed: workflows/s, run latency p50/p99 (create -> Succeeded seen by the
watch; Restate: the ingress call), step latency p50, CPU per workflow by process, API
writes per run after the create, journal records per step, and the ratios. Medians of
`--repeat` rounds. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from chain import manifest as chain_manifest  # bench/ is the script directory
from floor import etcd_floor
from hotspots import summarise
from kube import (
    CPU,
    Kube,
    api_requests,
    bounded,
    children,
    cpu_seconds,
    median,
    percentile,
    writes,
)

from kurable.api import crd
from kurable.engine.journal import parse_time
from kurable.store import keys
from kurable.store.journal import EtcdConfig, Journal, connect
from kurable.testing import ControlPlane, OperatorProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = 3
DONE = ("Succeeded", "Failed", "Invalid")


def manifest(name: str) -> dict[str, Any]:
    """The bench's Workflow: STEPS trivial `set` steps (bench/chain.py's)."""
    return chain_manifest(name, STEPS)


@dataclass
class Round:
    """One measured batch: W workflows at one concurrency."""

    system: str
    concurrency: int
    workflows: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    api_writes: dict[str, int] = field(default_factory=dict)
    journal_records: int = 0
    journal_writes: int = 0
    etcd_revisions: int = 0

    @property
    def rate(self) -> float:
        return self.workflows / self.elapsed if self.elapsed else float("nan")


def summary(rounds: list[Round]) -> dict[str, Any]:
    """Medians over rounds of one system and concurrency."""
    first = rounds[0]
    w = first.workflows
    out: dict[str, Any] = {
        "rate": median([r.rate for r in rounds]),
        "p50": median([percentile(r.latencies, 0.5) for r in rounds]),
        "p99": median([percentile(r.latencies, 0.99) for r in rounds]),
        "step": median([percentile(r.steps, 0.5) for r in rounds]),
        "cpu": {k: median([r.cpu[k] / w for r in rounds]) for k in first.cpu},
    }
    labels = {k for r in rounds for k in r.api_writes}
    out["writes"] = {k: median([r.api_writes.get(k, 0) / w for r in rounds]) for k in labels}
    out["journal"] = median([r.journal_records / (w * STEPS) for r in rounds])
    out["journal_writes"] = median([r.journal_writes / (w * STEPS) for r in rounds])
    out["revisions"] = median([r.etcd_revisions / w for r in rounds])
    return out


# -- Kurable -------------------------------------------------------------------------


class Watcher:
    """One watch on Workflows; resolves a future per name when its run finishes."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}

    def expect(self, name: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[name] = future
        return future

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        name = obj["metadata"]["name"]
        if phase in DONE and name in self.waiting:
            future = self.waiting.pop(name)
            if not future.done():
                future.set_result((time.monotonic(), obj))


async def etcd_revision(endpoint: str) -> int:
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        return int((await etcd.get_prefix(b"/kurable-bench-none/")).header.revision)
    finally:
        await etcd.close()


async def step_latencies(endpoint: str, uids: list[str]) -> tuple[list[float], int, int]:
    """Gaps between consecutive StepCompleted commits (0 for steps committed in one
    transaction), the number of records and the number of journal writes (transactions:
    distinct etcd revisions among the records)."""
    etcd = await connect(EtcdConfig(endpoints=endpoint))
    try:
        journal = Journal(etcd, "/kurable/")
        gaps: list[float] = []
        records = writes = 0
        for uid in uids:
            entries = (await journal.load(uid))[0]
            records += len(entries)
            listing = await etcd.get_prefix(keys.journal("/kurable/", uid).encode(), keys_only=True)
            writes += len({int(kv.mod_revision) for kv in listing})
            times = [parse_time(r.at) for r in entries if r.type == "StepCompleted"]
            gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        return gaps, records, writes
    finally:
        await etcd.close()


async def kurable_round(
    kube: Kube,
    watcher: Watcher,
    cp: ControlPlane,
    pids: dict[str, int],
    tag: str,
    workflows: int,
    concurrency: int,
) -> Round:
    result = Round("kurable", concurrency, workflows)
    uids: list[str] = []
    cpu = CPU(pids)
    requests_before = api_requests(await kube.metrics())
    revision_before = await etcd_revision(cp.etcd_endpoint)
    cpu.start()
    started = time.monotonic()

    async def one(i: int) -> None:
        name = f"{tag}-{i:04d}"
        done = watcher.expect(name)
        t0 = time.monotonic()
        created = await kube.create("workflows", manifest(name))
        uids.append(created["metadata"]["uid"])
        seen, obj = await done
        phase = obj["status"]["phase"]
        if phase != "Succeeded":
            raise SystemExit(f"{name} ended {phase}: {obj['status'].get('message')}")
        result.latencies.append(seen - t0)

    await bounded(workflows, concurrency, one)
    result.elapsed = time.monotonic() - started
    # Let the tail of status writes and Events land before reading the counters.
    await asyncio.sleep(1.5)
    result.cpu = cpu.stop()
    requests = writes(requests_before, api_requests(await kube.metrics()))
    requests["POST workflows"] = requests.get("POST workflows", 0) - workflows
    # Leases and endpoints are the API server's own heartbeat writes, not the operator's.
    own = ("PUT leases", "POST endpoints", "PUT endpoints")
    result.api_writes = {k: v for k, v in requests.items() if v and k not in own}
    result.etcd_revisions = await etcd_revision(cp.etcd_endpoint) - revision_before
    result.steps, result.journal_records, result.journal_writes = await step_latencies(
        cp.etcd_endpoint, uids
    )
    return result


async def floor_round(
    kube: Kube, pid: int, tag: str, workflows: int, status: dict[str, Any]
) -> Round:
    """The API server alone: create a Workflow, then one status write, 16 in flight."""
    result = Round("apiserver", 16, workflows)
    cpu = CPU({"apiserver": pid})
    cpu.start()
    started = time.monotonic()

    async def one(i: int) -> None:
        name = f"{tag}-{i:04d}"
        t0 = time.monotonic()
        await kube.create("workflows", manifest(name))
        await kube.merge_patch("workflows", name, {"status": status}, sub="status")
        result.latencies.append(time.monotonic() - t0)

    await bounded(workflows, 16, one)
    result.elapsed = time.monotonic() - started
    result.cpu = cpu.stop()
    return result


def strip_rules(node: Any) -> Any:
    """A CRD document without its CEL rules (x-kubernetes-validations)."""
    if isinstance(node, dict):
        return {k: strip_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [strip_rules(v) for v in node]
    return node


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the operator (raw collapsed stacks), if py-spy is installed."""
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        print("(no py-spy: `.venv/bin/pip install py-spy` to profile)", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def kurable_side(
    cp: ControlPlane, operator: OperatorProcess, args: argparse.Namespace, work: Path
) -> tuple[dict[str, list[Round]], dict[str, Any]]:
    assert operator.process is not None
    pids = {
        "apiserver": children("kube-apiserver"),
        "operator": operator.process.pid,
        "etcd": children("etcd"),
    }
    watcher = Watcher()
    rounds: dict[str, list[Round]] = {"1": [], "16": []}
    async with Kube(cp.kubeconfig) as kube:
        ready = asyncio.Event()
        watch = asyncio.create_task(kube.watch("workflows", watcher.on_event, ready))
        await ready.wait()
        await kurable_round(kube, watcher, cp, pids, "warm", 20, 4)
        for r in range(args.repeat):
            for concurrency in (1, 16):
                tag = f"k{concurrency}-{r}"
                profiler = None
                if args.profile and concurrency == 16 and r == 0:
                    profiler = start_profiler(pids["operator"], work / "profile.raw")
                rounds[str(concurrency)].append(
                    await kurable_round(kube, watcher, cp, pids, tag, args.workflows, concurrency)
                )
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(30)
                    raw = work / "profile.raw"
                    if raw.exists():
                        shutil.copy(raw, args.profile)
        listing = await kube.list("workflows")
        status = next(
            i["status"] for i in listing["items"] if i["status"].get("phase") == "Succeeded"
        )
        watch.cancel()
    return rounds, status


async def apiserver_floor(
    cp: ControlPlane, args: argparse.Namespace, status: dict[str, Any], tag: str
) -> list[Round]:
    pid = children("kube-apiserver")
    rounds = []
    async with Kube(cp.kubeconfig) as kube:
        await floor_round(kube, pid, f"{tag}-warm", 20, status)
        for r in range(args.repeat):
            rounds.append(await floor_round(kube, pid, f"{tag}-{r}", args.workflows, status))
    return rounds


def remove_rules(cp: ControlPlane, crds: list[Path], work: Path) -> None:
    """Replace the Workflow CRD by one without CEL rules; delete the admission policy."""
    source = next(p for p in crds if p.name == "kurable.dev_workflows.yaml")
    stripped = work / "workflows-no-rules.yaml"
    stripped.write_text(yaml.safe_dump(strip_rules(yaml.safe_load(source.read_text()))))
    cp.install_crds(stripped)
    for path in crds:
        if "policy" in path.name:
            cp.kubectl("delete", "-f", str(path), "--ignore-not-found")
    time.sleep(3)  # the API server swaps its validators asynchronously


# -- Restate -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and all its descendants."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if int(entry.name) == pid:
            total += cpu_seconds(pid)
        elif ppid == pid:
            total += tree_cpu(int(entry.name))
    return total


class Restate:
    """restate-server and the SDK's service (hypercorn) on loopback ports."""

    def __init__(self, cache: Path, work: Path) -> None:
        self.cache = cache
        self.work = work
        self.ingress = free_port()
        self.admin = free_port()
        self.node = free_port()
        self.service = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Restate:
        env = {
            **os.environ,
            "RESTATE_BASE_DIR": str(self.work / "restate"),
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{self.node}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{self.node}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{self.admin}",
            "RESTATE_ADMIN__ADVERTISED_ADMIN_ENDPOINT": f"http://127.0.0.1:{self.admin}",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{self.ingress}",
            "RESTATE_INGRESS__ADVERTISED_INGRESS_ENDPOINT": f"http://127.0.0.1:{self.ingress}",
            "RESTATE_ADMIN__QUERY_ENGINE__PGSQL_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
            "RESTATE_LOG_FILTER": "warn",
            "DO_NOT_TRACK": "true",
        }
        log = open(self.work / "restate-server.log", "ab")
        self.procs.append(
            subprocess.Popen(
                [str(self.cache / "restate-server")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        slog = open(self.work / "restate-service.log", "ab")
        self.procs.append(
            subprocess.Popen(
                [
                    str(self.cache / "venv" / "bin" / "hypercorn"),
                    "restate_app:app",
                    "--bind",
                    f"127.0.0.1:{self.service}",
                ],
                cwd=HERE,
                stdout=slog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    async def register(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args!r} exited; see {self.work}/restate-*.log")
            try:
                async with session.get(f"http://127.0.0.1:{self.admin}/health") as reply:
                    if reply.status == 200:
                        body = {"uri": f"http://127.0.0.1:{self.service}", "force": True}
                        async with session.post(
                            f"http://127.0.0.1:{self.admin}/deployments", json=body
                        ) as registered:
                            if registered.status < 300:
                                return
                            text = await registered.text()
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"registering the service failed: {text}")
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"restate did not start; see {self.work}/restate-*.log")
            await asyncio.sleep(0.3)

    async def round(
        self, session: aiohttp.ClientSession, tag: str, workflows: int, concurrency: int
    ) -> Round:
        result = Round("restate", concurrency, workflows)
        pids = {"server": self.procs[0].pid, "sdk": self.procs[1].pid}
        before = {k: tree_cpu(p) for k, p in pids.items()}
        started = time.monotonic()

        async def one(i: int) -> None:
            url = f"http://127.0.0.1:{self.ingress}/BenchFlow/{tag}-{i:04d}/run"
            t0 = time.monotonic()
            async with session.post(url, json=1) as reply:
                if reply.status >= 300:
                    raise SystemExit(f"restate: {reply.status} {await reply.text()}")
                times = await reply.json()
            result.latencies.append(time.monotonic() - t0)
            result.steps += [b - a for a, b in itertools.pairwise(times)]

        await bounded(workflows, concurrency, one)
        result.elapsed = time.monotonic() - started
        result.cpu = {k: tree_cpu(p) - before[k] for k, p in pids.items()}
        return result


async def restate_side(cache: Path, work: Path, args: argparse.Namespace) -> dict[str, list[Round]]:
    rounds: dict[str, list[Round]] = {"1": [], "16": []}
    with Restate(cache, work) as restate:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            await restate.register(session)
            await restate.round(session, "warm", 20, 4)
            for r in range(args.repeat):
                for concurrency in (1, 16):
                    rounds[str(concurrency)].append(
                        await restate.round(
                            session, f"r{concurrency}-{r}", args.workflows, concurrency
                        )
                    )
    return rounds


def install_restate() -> tuple[Path | None, str]:
    """hack/restate.sh's cache directory, or None and why not."""
    try:
        done = subprocess.run(
            [str(ROOT / "hack" / "restate.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHON": sys.executable},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if done.returncode != 0:
        return None, done.stderr.strip()[-2000:]
    return Path(done.stdout.strip().splitlines()[-1]), ""


# -- report --------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(
    args: argparse.Namespace,
    etcd_p50: float,
    kurable: dict[str, list[Round]],
    floor_rules: list[Round],
    floor_plain: list[Round],
    restate: dict[str, list[Round]] | None,
    restate_why: str,
) -> None:
    k1, k16 = summary(kurable["1"]), summary(kurable["16"])
    f_rules, f_plain = summary(floor_rules), summary(floor_plain)
    r1 = summary(restate["1"]) if restate else None
    r16 = summary(restate["16"]) if restate else None
    na = "n/a"

    def row(label: str, k: str, r: str, f: str) -> None:
        print(f"{label:<34} {k:<30} {r:<24} {f}")

    print(
        f"workload: {args.workflows} workflows x {STEPS} set steps; medians of {args.repeat} rounds"
    )
    row("", "Kurable", "Restate", "floor")
    row(
        "workflows/s, one at a time",
        f"{k1['rate']:.1f}",
        f"{r1['rate']:.1f}" if r1 else na,
        "",
    )
    row(
        "workflows/s, 16 in flight",
        f"{k16['rate']:.1f}",
        f"{r16['rate']:.1f}" if r16 else na,
        f"API server {f_rules['rate']:.1f} (no CEL rules {f_plain['rate']:.1f})",
    )
    for label, k, r in (("one at a time", k1, r1), ("16 in flight", k16, r16)):
        row(
            f"run latency p50/p99, {label}",
            f"{ms(k['p50'])} / {ms(k['p99'])}",
            f"{ms(r['p50'])} / {ms(r['p99'])}" if r else na,
            "",
        )
    row(
        "step latency p50, one at a time",
        ms(k1["step"]),
        ms(r1["step"]) if r1 else na,
        f"etcd txn {ms(etcd_p50)}",
    )
    row("step latency p50, 16 in flight", ms(k16["step"]), ms(r16["step"]) if r16 else na, "")
    for label, k, r in (("one at a time", k1, r1), ("16 in flight", k16, r16)):
        kcpu = ", ".join(f"{n} {v * 1000:.1f}" for n, v in k["cpu"].items())
        rcpu = ", ".join(f"{n} {v * 1000:.1f}" for n, v in r["cpu"].items()) if r else na
        row(
            f"CPU ms/workflow, {label}",
            f"{sum(k['cpu'].values()) * 1000:.1f}",
            f"{sum(r['cpu'].values()) * 1000:.1f}" if r else na,
            "",
        )
        print(f"    Kurable: {kcpu}" + (f"; Restate: {rcpu}" if r else ""))
    print(
        f"    API server alone: {f_rules['cpu']['apiserver'] * 1000:.1f} ms per create + "
        f"status write ({f_plain['cpu']['apiserver'] * 1000:.1f} without CEL rules)"
    )
    for label, k in (("one at a time", k1), ("16 in flight", k16)):
        total = sum(k["writes"].values())
        detail = ", ".join(f"{n} {v:.2f}" for n, v in sorted(k["writes"].items()) if v)
        print(f"API writes/run after create, {label}: {total:.2f}  ({detail})")
        print(
            f"journal records/step, {label}: {k['journal']:.2f}, journal writes (transactions)"
            f"/step: {k['journal_writes']:.2f};  etcd revisions/run "
            f"(all writers): {k['revisions']:.2f}"
        )
    print()
    print("ratios")
    ratios = [
        ("Kurable @16 / API-server floor (CEL rules)", k16["rate"] / f_rules["rate"]),
        ("Kurable @16 / API-server floor (no rules)", k16["rate"] / f_plain["rate"]),
        ("API-server floor, CEL rules / no rules", f_rules["rate"] / f_plain["rate"]),
        ("Kurable step p50 / etcd txn p50, one at a time", k1["step"] / etcd_p50),
    ]
    if r1 and r16:
        ratios += [
            ("Kurable / Restate workflows/s, one at a time", k1["rate"] / r1["rate"]),
            ("Kurable / Restate workflows/s, 16 in flight", k16["rate"] / r16["rate"]),
            ("API-server floor / Restate, 16 in flight", f_rules["rate"] / r16["rate"]),
        ]
    for label, value in ratios:
        print(f"  {label:<48} {value:6.2f}x")
    if not (r1 and r16):
        print(f"  Restate: not measured: {restate_why}")
    print()
    print("per round (workflows/s @1, @16):")
    for name, rounds in (("Kurable", kurable), ("Restate", restate or {})):
        if rounds:
            pairs = zip(rounds["1"], rounds["16"], strict=True)
            rates = [f"{a.rate:.1f}/{b.rate:.1f}" for a, b in pairs]
            print(f"  {name}: {', '.join(rates)}")
    print(f"  API server floor: {', '.join(f'{r.rate:.1f}' for r in floor_rules)}"
          f"; no rules: {', '.join(f'{r.rate:.1f}' for r in floor_plain)}")  # fmt: skip


def run(coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coroutine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the operator @16")
    parser.add_argument("--no-restate", action="store_true")
    args = parser.parse_args()

    restate: dict[str, list[Round]] | None = None
    why = "skipped (--no-restate)"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crds = crd.write_all(work / "crds")
        with ControlPlane(crds=crds) as cp:

            async def floor() -> float:
                etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint))
                try:
                    return await etcd_floor(etcd)
                finally:
                    await etcd.close()

            etcd_p50 = run(floor)
            with OperatorProcess(cp.env(), work / "operator.log") as operator:
                kurable, status = asyncio.run(kurable_side(cp, operator, args, work))
            floor_rules = asyncio.run(apiserver_floor(cp, args, status, "fr"))
            remove_rules(cp, crds, work)
            floor_plain = asyncio.run(apiserver_floor(cp, args, status, "fp"))
        if not args.no_restate:
            cache, why = install_restate()
            if cache is not None:
                try:
                    restate = asyncio.run(restate_side(cache, work, args))
                except (RuntimeError, OSError, aiohttp.ClientError) as e:
                    why = f"{e}"
                    for log in work.glob("restate-*.log"):
                        why += f"\n{log.name}: " + log.read_text(errors="replace")[-1500:]
    report(args, etcd_p50, kurable, floor_rules, floor_plain, restate, why)
    if args.profile and args.profile.exists():
        print(f"\noperator profile @16 (raw stacks: {args.profile})")
        print(summarise(args.profile))


if __name__ == "__main__":
    main()
