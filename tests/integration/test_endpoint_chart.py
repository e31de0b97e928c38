"""The chart's endpoint ServiceAccount is minimal, proven like the operator's
(test_chart.py): with exactly the chart's rules every route works; without any one
granted verb, some route fails."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess, ToolNotFound
from tests.conftest import ROOT

from .conftest import apply
from .endpoint_http import admin_token, call
from .test_chart import Manifest, find, helm_home, render  # noqa: F401  (helm_home: a fixture)

pytestmark = pytest.mark.integration

WALLET: dict[str, Any] = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())
TEMPLATE = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "one"},
    "spec": {"steps": [{"name": "a", "set": {"x": 1}}], "output": {"x": "${ vars.x }"}},
}
SCHEDULE = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "Schedule",
    "metadata": {"name": "daily"},
    "spec": {"cron": "@daily", "templateRef": {"name": "one"}},
}
TOPIC = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "Topic",
    "metadata": {"name": "orders"},
    "spec": {"messageSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
}
VIEW = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "View",
    "metadata": {"name": "wallets"},
    "spec": {
        "source": {"entityType": "wallet"},
        "columns": {"owner": {"type": "string", "value": "${ entity.name }"}},
        "queries": {"all": {"sql": "SELECT owner FROM wallets"}},
    },
}
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


@dataclass
class ChartEndpoint:
    """The endpoint as the chart deploys it, out of cluster: its ServiceAccount and RBAC
    (optionally one verb short), its container args, and a token of that account."""

    cp: ControlPlane
    manifests: list[Manifest]
    namespace: str
    tmp_path: Path

    def objects(self, without: tuple[int, str] | None = None) -> list[Manifest]:
        objects = [
            m for kind in RBAC_KINDS for m in find(self.manifests, kind, component="endpoint")
        ]
        if without is not None:
            index, verb = without
            (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
            rule = role["rules"][index]
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
            if not rule["verbs"]:
                del role["rules"][index]
        return objects

    def start(self, without: tuple[int, str] | None = None) -> EndpointProcess:
        self.cp.kubectl("create", "namespace", self.namespace)
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.objects(without)))
        (account,) = find(self.manifests, "ServiceAccount", component="endpoint")
        token = self.cp.kubectl(
            "create", "token", account["metadata"]["name"], "-n", self.namespace,
            "--duration=1h",
        ).stdout.strip()  # fmt: skip
        admin = yaml.safe_load(self.cp.kubeconfig.read_text())
        kubeconfig = self.tmp_path / "endpoint.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": admin["clusters"],
                    "users": [{"name": "endpoint", "user": {"token": token}}],
                    "contexts": [
                        {"name": "endpoint", "context": {"cluster": "kurable", "user": "endpoint"}}
                    ],
                    "current-context": "endpoint",
                }
            )
        )
        kubeconfig.chmod(0o600)
        (deployment,) = find(self.manifests, "Deployment", component="endpoint")
        args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        assert args[:2] == ["endpoint", "--bind"]
        env = {"KUBECONFIG": str(kubeconfig), "KURABLE_ETCD_ENDPOINTS": self.cp.etcd_endpoint}
        process = EndpointProcess(env, self.tmp_path / "endpoint.log", extra_args=args[3:])
        process.start(wait=False)
        return process


def chart_endpoint(cp: ControlPlane, home: dict[str, str], tmp_path: Path) -> ChartEndpoint:
    release = f"ep-{secrets.token_hex(3)}"
    namespace = f"kurable-{release}"
    return ChartEndpoint(
        cp, render(home, release=release, namespace=namespace), namespace, tmp_path
    )


def exercise(
    cp: ControlPlane, endpoint: EndpointProcess, namespace: str, first_problem: bool = False
) -> list[str]:
    """Every kind of request once; the ones that failed, with their answers (with
    `first_problem`, only the first: enough to show that a grant is needed)."""
    try:
        endpoint.wait_ready(30)
    except RuntimeError as e:
        return [f"not ready: {e}"]
    token = admin_token(cp, namespace)
    apply(cp, namespace, WALLET)
    apply(
        cp,
        namespace,
        {
            "apiVersion": "kurable.dev/v1alpha1",
            "kind": "Entity",
            "metadata": {"name": "alice"},
            "spec": {"type": "wallet", "initialState": {"balance": 10}},
        },
    )
    apply(cp, namespace, TEMPLATE)
    apply(cp, namespace, SCHEDULE)
    apply(cp, namespace, TOPIC)
    apply(cp, namespace, VIEW)
    base = f"{endpoint.url}/v1/namespaces/{namespace}"
    requests: list[tuple[str, str, Any, int]] = [
        ("POST", "entities/alice/commands/deposit", {"input": {"amount": 1}}, 200),
        ("GET", "entities/alice", None, 200),
        ("GET", "entities/alice/events", None, 200),
        ("POST", "workflows?wait=30s", {"templateRef": {"name": "one"}, "name": "r1"}, 201),
        ("GET", "workflows/r1", None, 200),
        ("GET", "workflows", None, 200),
        ("GET", "workflows/r1/history", None, 200),
        ("POST", "workflows/r1/signals/GO", {"x": 1}, 202),
        ("POST", "workflows/r1/suspend", None, 200),
        ("POST", "schedules/daily/trigger", None, 201),
        ("POST", "topics/orders/messages", {"key": "k", "data": {"n": 1}}, 201),
        ("GET", "views/wallets/queries/all?minOffset=1", None, 200),
    ]
    problems = []
    for method, path, body, expected in requests:
        answer = call(f"{base}/{path}", method, token, body=body, timeout=60)
        if answer.status != expected:
            problems.append(f"{method} {path}: {answer.status} {answer.text[:300]}")
            if first_problem:
                return problems
    if "notify failed" in endpoint.log_path.read_text():  # the entity's status patch
        problems.append("the entity's status was not projected")
    return problems


def _verbs() -> list[Any]:
    try:
        manifests = render({})
    except (ToolNotFound, pytest.fail.Exception) as e:
        return [pytest.param(0, "", id="no-helm", marks=pytest.mark.skip(str(e)))]
    (role,) = find(manifests, "ClusterRole", component="endpoint")
    return [
        pytest.param(index, verb, id=f"{rule['apiGroups'][0]}/{','.join(rule['resources'])}:{verb}")
        for index, rule in enumerate(role["rules"])
        for verb in rule["verbs"]
    ]


def test_the_endpoint_serves_every_route_with_the_charts_rbac_only(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    helm_home: dict[str, str],  # noqa: F811
    tmp_path: Path,
    namespace: str,
) -> None:
    chart = chart_endpoint(control_plane, helm_home, tmp_path)
    endpoint = chart.start()
    try:
        problems = exercise(control_plane, endpoint, namespace)
    finally:
        endpoint.stop()
    assert not problems, f"{problems}\n{endpoint.log_tail()}"


@pytest.mark.slow
@pytest.mark.parametrize(("index", "verb"), _verbs())
def test_without_any_one_granted_verb_some_route_fails(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    helm_home: dict[str, str],  # noqa: F811
    tmp_path: Path,
    namespace: str,
    index: int,
    verb: str,
) -> None:
    chart = chart_endpoint(control_plane, helm_home, tmp_path)
    endpoint = chart.start(without=(index, verb))
    try:
        problems = exercise(control_plane, endpoint, namespace, first_problem=True)
    finally:
        endpoint.stop()
    assert problems, f"every route worked without {verb} of rule {index}: grant less"
