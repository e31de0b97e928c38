"""Views on the real control plane: rows follow commands and runs, exactly once across a
SIGKILL, spec changes switch without a failed query, read-your-writes, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get, wait_phase, workflow
from .endpoint_http import admin_token, call

pytestmark = pytest.mark.integration

SHOP = ROOT / "examples" / "shop"
WALLET = ROOT / "examples" / "transfer" / "00-wallet.yaml"
ORDER = {"account": "carol", "qty": 1}
KURABLE = str(Path(sys.executable).parent / "kurable")


def status_of(cp: ControlPlane, namespace: str, view: str) -> dict[str, Any]:
    found: dict[str, Any] = get(cp, namespace, f"view/{view}").get("status") or {}
    return found


def wallets_view(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"entityType": "wallet"},
        "where": "${ state.balance > 0 }",
        "columns": {
            "owner": {"type": "string", "value": "${ entity.name }"},
            "balance": {"type": "integer", "value": "${ state.balance }"},
        },
        "indexes": [["balance"]],
        "queries": {
            "richest": {
                "sql": "SELECT owner, balance FROM wallets WHERE balance >= :min "
                "ORDER BY balance DESC, owner LIMIT :limit",
                "params": {
                    "min": {"type": "integer"},
                    "limit": {"type": "integer", "default": 100, "maximum": 1000},
                },
            }
        },
    }
    spec.update(changes)
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "wallets"},
        "spec": spec,
    }


def created(cp: ControlPlane, namespace: str, *names: str) -> None:
    """Wait until the operator has created these Entities' state (a View built from the
    snapshots has their rows; one built before gets a row with each entity's first event)."""
    for name in names:
        eventually(
            lambda name=name: get(cp, namespace, f"entity/{name}").get("status") or {},
            lambda status: status.get("phase") == "Ready",
            30,
            f"Entity {name} Ready",
        )


def entity(name: str, type_: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Entity",
        "metadata": {"name": name},
        "spec": {"type": type_, "initialState": state},
    }


def wallets(cp: ControlPlane, namespace: str, balances: dict[str, int]) -> None:
    """The wallet EntityType and a wallet per name with its opening balance."""
    apply(cp, namespace, WALLET)
    for name, balance in balances.items():
        apply(cp, namespace, entity(name, "wallet", {"balance": balance}))


@pytest.fixture(scope="module")
def endpoint(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EndpointProcess]:
    logs: Path = tmp_path_factory.mktemp("views-endpoint")
    state = logs / "state"
    with EndpointProcess(
        control_plane.env(), logs / "endpoint.log", extra_args=["--state-dir", str(state)]
    ) as process:
        yield process


class Shop:
    """Requests to the endpoint as an admin of the test's namespace."""

    def __init__(self, cp: ControlPlane, endpoint: EndpointProcess, namespace: str) -> None:
        self.base = f"{endpoint.url}/v1/namespaces/{namespace}"
        self.token = admin_token(cp, namespace)

    def command(self, name: str, command: str, body: dict[str, Any], base: str = "") -> int:
        answer = call(
            f"{base or self.base}/entities/{name}/commands/{command}",
            "POST",
            self.token,
            body={"input": body},
        )
        assert answer.status == 200, answer.text
        offset: int = answer.body["offset"]
        assert offset > 0
        return offset

    def query(self, view: str, query: str, base: str = "", **params: Any) -> Any:
        text = "&".join(f"{k}={v}" for k, v in params.items())
        return call(f"{base or self.base}/views/{view}/queries/{query}?{text}", "GET", self.token)

    def rows(self, view: str, query: str, base: str = "", **params: Any) -> list[dict[str, Any]]:
        answer = self.query(view, query, base, **params)
        assert answer.status == 200, answer.text
        rows: list[dict[str, Any]] = answer.body["items"]
        return rows


def test_rows_follow_commands_and_a_query_with_min_offset_reads_its_writes(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    wallets(cp, namespace, {"alice": 10, "bob": 0})
    apply(cp, namespace, wallets_view())
    created(cp, namespace, "alice", "bob")
    shop = Shop(cp, endpoint, namespace)
    # bob's initial balance 0: `where` false, no row; alice's snapshot makes hers.
    assert shop.rows("wallets", "richest", min=0) == [{"owner": "alice", "balance": 10}]
    offset = shop.command("bob", "deposit", {"amount": 30})  # a row appears
    rows = shop.rows("wallets", "richest", min=0, minOffset=offset)
    assert rows == [{"owner": "bob", "balance": 30}, {"owner": "alice", "balance": 10}]
    offset = shop.command("alice", "deposit", {"amount": 5})  # a row changes
    rows = shop.rows("wallets", "richest", min=12, minOffset=offset)
    assert rows == [{"owner": "bob", "balance": 30}, {"owner": "alice", "balance": 15}]
    offset = shop.command("bob", "withdraw", {"amount": 30})  # `where` turns false
    rows = shop.rows("wallets", "richest", min=0, minOffset=offset)
    assert rows == [{"owner": "alice", "balance": 15}]
    offset = shop.command("bob", "deposit", {"amount": 1})
    rows = shop.rows("wallets", "richest", min=0, minOffset=offset)
    assert rows == [{"owner": "alice", "balance": 15}, {"owner": "bob", "balance": 1}]
    # An Entity created now has a row from its creation, before any command.
    apply(cp, namespace, entity("carol", "wallet", {"balance": 7}))
    eventually(
        lambda: shop.rows("wallets", "richest", min=7),
        lambda rows: rows == [{"owner": "alice", "balance": 15}, {"owner": "carol", "balance": 7}],
        30,
        "carol's row",
    )
    # The operator's own copy shows in status.
    eventually(lambda: status_of(cp, namespace, "wallets"), lambda s: s.get("rows") == 3, 30)
    status = get(cp, namespace, "view/wallets")["status"]
    assert status["phase"] == "Ready" and status["offset"] > 0 and status["lag"] == 0


def test_bad_views_and_queries_are_refused_with_the_field_named(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    wallets(cp, namespace, {"alice": 10})
    apply(cp, namespace, wallets_view())
    shop = Shop(cp, endpoint, namespace)
    missing = shop.query("wallets", "richest")
    assert missing.status == 400, missing.text
    assert missing.body["errors"][0]["field"] == "params.min"
    assert "needs parameter min" in missing.body["detail"]
    cases = {
        "badwrite": (
            {"queries": {"q": {"sql": "DELETE FROM badwrite"}}},
            "spec.queries.q.sql: a query may only SELECT from its own view's table",
        ),
        "badother": (
            {"queries": {"q": {"sql": "SELECT * FROM badother, sqlite_master"}}},
            "spec.queries.q.sql: a query may only SELECT from its own view's table",
        ),
        "badcolumn": (
            {
                "columns": {"owner": {"type": "string", "value": "${ state.owner. }"}},
                "indexes": [],
                "queries": {"q": {"sql": "SELECT owner FROM badcolumn"}},
            },
            "spec.columns.owner.value",
        ),
        "badparam": (
            {
                "queries": {
                    "q": {
                        "sql": "SELECT owner FROM badparam WHERE balance >= :continue",
                        "params": {"continue": {"type": "integer"}},
                    }
                }
            },
            "spec.queries.q.params.continue: continue is the endpoint's own query-string name",
        ),
    }
    for name, (changes, _) in cases.items():
        view = wallets_view(**changes)
        view["metadata"]["name"] = name
        apply(cp, namespace, view)
    for name, (_, says) in cases.items():
        eventually(
            lambda name=name: status_of(cp, namespace, name),
            lambda s: s.get("phase") == "Invalid",
            30,
        )
        status = get(cp, namespace, f"view/{name}")["status"]
        assert says in status["message"], status
        invalid = next(c for c in status["conditions"] if c["type"] == "Invalid")
        assert invalid["status"] == "True"
        answer = shop.query(name, "q", min=1)
        assert answer.status == 409 and says in answer.body["detail"], answer.text


def test_a_spec_change_builds_beside_and_switches_without_a_failed_query(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    wallets(cp, namespace, {f"w{i}": i + 1 for i in range(5)})
    apply(cp, namespace, wallets_view())
    created(cp, namespace, *(f"w{i}" for i in range(5)))
    shop = Shop(cp, endpoint, namespace)
    assert len(shop.rows("wallets", "richest", min=0)) == 5
    failures: list[str] = []
    stop = threading.Event()

    def keep_querying() -> None:
        while not stop.is_set():
            answer = shop.query("wallets", "richest", min=0)
            if answer.status != 200 or len(answer.body["items"]) < 4:
                failures.append(answer.text)

    reader = threading.Thread(target=keep_querying)
    reader.start()
    try:
        columns = {
            **wallets_view()["spec"]["columns"],
            "doubled": {"type": "integer", "value": "${ state.balance * 2 }"},
        }
        queries = {
            **wallets_view()["spec"]["queries"],
            "doubled": {"sql": "SELECT owner, doubled FROM wallets ORDER BY doubled DESC"},
        }
        apply(cp, namespace, wallets_view(columns=columns, queries=queries, where=None))

        def switched() -> bool:
            answer = shop.query("wallets", "doubled")
            return answer.status == 200 and answer.body["items"][0] == {
                "owner": "w4",
                "doubled": 10,
            }

        eventually(switched, bool, 30, "the new spec's query")
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[:3]


def test_a_view_over_runs_and_the_shop_example(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    """The shop: a request starts a run whose first step queries a view, the next command
    the product it found and the customer's account; a View over the runs of the template
    shows them."""
    cp = control_plane
    for path in sorted(SHOP.glob("*.yaml")):
        apply(cp, namespace, path)
    apply(
        cp,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "View",
            "metadata": {"name": "orders"},
            "spec": {
                "source": {"workflows": {"templateRef": {"name": "order"}}},
                "columns": {
                    "run": {"type": "string", "value": "${ run.name }"},
                    "phase": {"type": "string", "value": "${ run.phase }"},
                    "product": {
                        "type": "string",
                        "value": "${ run.phase == 'Succeeded' ? output.product : '' }",
                    },
                },
                "queries": {"all": {"sql": "SELECT run, phase, product FROM orders ORDER BY run"}},
            },
        },
    )
    shop = Shop(cp, endpoint, namespace)
    eventually(lambda: status_of(cp, namespace, "products"), lambda s: s.get("rows") == 2)
    started = call(
        f"{shop.base}/workflows?wait=60s",
        "POST",
        shop.token,
        body={
            "templateRef": {"name": "order"},
            "name": "o1",
            "input": {"account": "carol", "qty": 1},
        },
        timeout=90,
    )
    assert started.status == 201, started.text
    assert started.body["phase"] == "Succeeded", started.text
    # The cheapest product with stock was ink (price 2, one left): reserved, then charged.
    assert started.body["output"] == {"product": "ink", "paid": 2, "balance": 98}
    second = call(
        f"{shop.base}/workflows?wait=60s",
        "POST",
        shop.token,
        body={
            "templateRef": {"name": "order"},
            "name": "o2",
            "input": {"account": "carol", "qty": 1},
        },
        timeout=90,
    )
    # ink is out of stock now: the view no longer has it, so the order takes a pen.
    assert second.body["output"] == {"product": "pen", "paid": 3, "balance": 95}, second.text
    expected = [
        {"run": "o1", "phase": "Succeeded", "product": "ink"},
        {"run": "o2", "phase": "Succeeded", "product": "pen"},
    ]
    eventually(lambda: shop.rows("orders", "all"), lambda rows: rows == expected, 30)
    # The CLI: `kurable query view/products cheapest --param qty=1`.
    auth = ["--endpoint", endpoint.url, "--token", shop.token]
    printed = subprocess.run(
        [
            KURABLE,
            "query",
            "view/products",
            "cheapest",
            "--param",
            "qty=1",
            "-n",
            namespace,
            "-o",
            "json",
            "--endpoint",
            endpoint.url,
            "--token",
            shop.token,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(printed.stdout) == [{"name": "pen", "price": 3, "stock": 9}]
    cheapest = [KURABLE, "query", "view/products", "cheapest", "--param", "qty=1"]
    as_yaml = subprocess.run(
        [*cheapest, "-n", namespace, "-o", "yaml", *auth],
        capture_output=True,
        text=True,
        check=True,
    )
    assert yaml.safe_load(as_yaml.stdout) == [{"name": "pen", "price": 3, "stock": 9}]
    refused = subprocess.run(
        [KURABLE, "query", "view/products", "cheapest", "-n", namespace, *auth],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "needs parameter qty" in refused.stderr, refused.stderr


def test_rows_after_a_sigkill_during_materialization_equal_a_fresh_rebuild(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    cp = control_plane
    names = [f"k{i}" for i in range(4)]
    wallets(cp, namespace, dict.fromkeys(names, 1))
    apply(cp, namespace, wallets_view())
    created(cp, namespace, *names)
    shop = Shop(cp, endpoint, namespace)
    state = tmp_path / "state"

    def reader() -> EndpointProcess:
        return EndpointProcess(
            cp.env(), tmp_path / "reader.log", extra_args=["--state-dir", str(state)]
        )

    killed = reader().start()
    base = f"{killed.url}/v1/namespaces/{namespace}"
    assert len(shop.rows("wallets", "richest", base=base, min=0)) == 4
    last = [0]

    def write() -> None:  # commands through the other endpoint while the reader dies
        for round_ in range(40):
            for name in names:
                last[0] = shop.command(name, "deposit", {"amount": round_ + 1})

    writer = threading.Thread(target=write)
    writer.start()
    eventually(lambda: last[0], lambda n: n > 0)
    killed.kill()
    writer.join()
    restarted = reader().start()
    fresh = EndpointProcess(
        cp.env(), tmp_path / "fresh.log", extra_args=["--state-dir", str(tmp_path / "fresh")]
    ).start()
    try:
        resumed = shop.rows(
            "wallets",
            "richest",
            base=f"{restarted.url}/v1/namespaces/{namespace}",
            min=0,
            minOffset=last[0],
        )
        rebuilt = shop.rows(
            "wallets",
            "richest",
            base=f"{fresh.url}/v1/namespaces/{namespace}",
            min=0,
            minOffset=last[0],
        )
    finally:
        restarted.stop()
        fresh.stop()
    expected = 1 + sum(range(1, 41))
    assert resumed == rebuilt == [{"owner": n, "balance": expected} for n in names]


NAPS = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "naps"},
    "spec": {"steps": [{"name": "nap", "sleep": {"duration": "1s"}}]},
}
RUNS_VIEW = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "View",
    "metadata": {"name": "naps"},
    "spec": {
        "source": {"workflows": {"templateRef": {"name": "naps"}}},
        "columns": {"owner": {"type": "string", "value": "${ run.name }"}},
        "queries": {"all": {"sql": "SELECT owner FROM naps"}},
    },
}


@pytest.mark.parametrize("source", ["entities", "runs"])
def test_a_reader_restarted_after_sources_were_deleted_has_no_rows_of_them(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
    tmp_path: Path,
    source: str,
) -> None:
    """A deletion while a reader is down is no stream item: the restarted reader drops
    the rows of the sources that are gone, and has the ones created meanwhile."""
    cp = control_plane
    if source == "entities":
        apply(cp, namespace, WALLET)
        apply(cp, namespace, wallets_view())
        view, query, params, kind = "wallets", "richest", {"min": 0}, "entity"

        def create(name: str) -> None:
            apply(cp, namespace, entity(name, "wallet", {"balance": 5}))
            created(cp, namespace, name)

    else:
        apply(cp, namespace, NAPS)
        apply(cp, namespace, RUNS_VIEW)
        view, query, params, kind = "naps", "all", {}, "workflow"

        def create(name: str) -> None:
            apply(cp, namespace, workflow(name, templateRef={"name": "naps"}))
            wait_phase(cp, namespace, name, ("Succeeded",))

    for name in ("d0", "d1", "d2"):
        create(name)
    shop = Shop(cp, endpoint, namespace)
    state = tmp_path / "state"

    def reader() -> EndpointProcess:
        return EndpointProcess(
            cp.env(), tmp_path / "reader.log", extra_args=["--state-dir", str(state)]
        )

    def owners(process: EndpointProcess) -> list[str]:
        base = f"{process.url}/v1/namespaces/{namespace}"
        return sorted(r["owner"] for r in shop.rows(view, query, base=base, **params))

    eventually(lambda: owners(endpoint), lambda found: len(found) == 3, 30, "three rows")
    first = reader().start()
    try:
        assert owners(first) == ["d0", "d1", "d2"]
    finally:
        first.stop()
    # While this reader is down: d1 is deleted (the operator forgets its state or journal)
    # and d3 is created; the always-up endpoint sees both.
    cp.kubectl("delete", "-n", namespace, f"{kind}/d1", "--wait=true")
    create("d3")
    expected = ["d0", "d2", "d3"]
    eventually(lambda: owners(endpoint), lambda found: found == expected, 30, "d1 gone, d3 in")
    restarted = reader().start()
    try:
        assert owners(restarted) == expected
    finally:
        restarted.stop()


def test_blobs_answer_as_base64_and_sources_whose_expressions_fail_are_shown(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    wallets(cp, namespace, {"alice": 10, "bob": 20})
    view = wallets_view(
        columns={
            "owner": {"type": "string", "value": "${ entity.name }"},
            # bob's balance of 20 divides by zero: bob gets no row, and status says why.
            "share": {"type": "integer", "value": "${ 100 / (20 - state.balance) }"},
        },
        indexes=[],
        queries={"q": {"sql": "SELECT owner, CAST(owner AS BLOB) AS raw FROM wallets"}},
    )
    apply(cp, namespace, view)
    status = eventually(
        lambda: status_of(cp, namespace, "wallets"),
        lambda s: s.get("phase") == "Ready" and s.get("failed") == 1,
        60,
        "the View Ready with one failed source",
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ExpressionFailed", status
    assert "1 source(s) have no row" in degraded["message"]
    assert "entity bob: columns.share" in degraded["message"], degraded
    assert "divide by zero" in degraded["message"], degraded
    shop = Shop(cp, endpoint, namespace)
    assert shop.rows("wallets", "q") == [{"owner": "alice", "raw": "YWxpY2U="}]
    # A workflow step reads the same rows: journaled as JSON, the run ends.
    step = {"name": "q", "view": {"name": "wallets", "query": "q"}}
    apply(cp, namespace, workflow("reads", steps=[step]))
    done = wait_phase(cp, namespace, "reads", ("Succeeded", "Failed"), timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # Fixed at the source: bob's next version computes, the failure goes.
    shop.command("bob", "withdraw", {"amount": 5})
    eventually(
        lambda: status_of(cp, namespace, "wallets"),
        lambda s: s.get("failed") == 0 and s.get("rows") == 2,
        60,
        "bob's row once his state computes",
    )
