"""The Helm chart against the real control plane: lint, render, install, least privilege.

The least-privilege tests run the operator out of cluster with a token of the chart's
own ServiceAccount (TokenRequest API), under the chart's own RBAC, and prove that the
examples complete; then that taking away any single verb of the chart's rules makes
them fail to complete, so the chart grants nothing the operator does not use. With
peering, a second replica of higher priority comes and goes first, and the operator
must stand by for it meanwhile.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.testing import ControlPlane, OperatorProcess, ToolNotFound, find_tool
from tests.conftest import ROOT

from .conftest import get, journal

CHART = ROOT / "charts" / "kurable"
VALUES_ALL = CHART / "ci" / "values-all.yaml"
HELLO = ROOT / "examples" / "hello" / "workflow.yaml"
TRANSFER = ROOT / "examples" / "transfer"

Manifest = dict[str, Any]


# -- helm ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm's cache, config and data directories, away from the user's."""
    home = tmp_path_factory.mktemp("helm")
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(
    home: dict[str, str],
    *args: str,
    kubeconfig: Path | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **home}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [find_tool("helm"), *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def render(
    home: dict[str, str],
    release: str = "kurable",
    namespace: str = "kurable-system",
    values: dict[str, Any] | None = None,
    values_file: Path | None = None,
    include_crds: bool = False,
) -> list[Manifest]:
    """`helm template` as a list of manifests."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values_file is not None:
        args += ["--values", str(values_file)]
    if values:
        args += ["--values", "-"]
    if include_crds:
        args.append("--include-crds")
    out = helm(home, *args, input=yaml.safe_dump(values) if values else None).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(
    manifests: list[Manifest], kind: str, name: str | None = None, component: str | None = None
) -> list[Manifest]:
    """The manifests of `kind` (and `name`); the endpoint's (component `endpoint`) only
    when `component="endpoint"` asks for them (test_endpoint_chart.py proves them)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and is_endpoint(m) == (component == "endpoint")
    ]


def is_endpoint(manifest: Manifest) -> bool:
    """Whether the chart renders `manifest` for the endpoint (component `endpoint`)."""
    labels = manifest["metadata"].get("labels") or {}
    return bool(labels.get("app.kubernetes.io/component") == "endpoint")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def create_namespace(cp: ControlPlane, name: str) -> str:
    cp.kubectl("create", "namespace", name)
    return name


# -- lint and render -------------------------------------------------------------------


def test_helm_lint_strict_passes_for_default_and_all_option_values(
    helm_home: dict[str, str],
) -> None:
    helm(helm_home, "lint", "--strict", str(CHART))
    helm(helm_home, "lint", "--strict", str(CHART), "--values", str(VALUES_ALL))


def test_values_all_exercises_every_value_of_the_schema() -> None:
    """ci/values-all.yaml sets every leaf the schema declares (so that rendering it
    really exercises every option)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load(VALUES_ALL.read_text())

    def leaves(node: dict[str, Any], path: str = "") -> list[str]:
        if node.get("type") == "object" and "properties" in node:
            out = []
            for key, child in node["properties"].items():
                out += leaves(child, f"{path}.{key}")
            return out
        return [path]

    def has(path: str) -> bool:
        node: Any = values
        for part in path.strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    # `global` is Helm's own.
    missing = [p for p in leaves(schema) if not has(p) and p not in (".global",)]
    assert not missing, f"ci/values-all.yaml does not set {missing}"


def test_wrong_values_fail_with_the_schemas_message(helm_home: dict[str, str]) -> None:
    cases = {
        "replicas: two": ("/replicas", "got string, want integer"),
        "etcd: {replicas: 4}": ("/etcd/replicas", "must be one of"),
        # Two members only on the way from 1 to 3 (docs/operations.md, "Scaling etcd").
        "etcd: {replicas: 2}": ("/etcd/initialClusterState", "must be 'existing'"),
        "watchNamespaces: ['team-*']": ("/watchNamespaces/0", "does not match pattern"),
        "image: {pullPolicy: Sometimes}": ("/image/pullPolicy", "must be one of"),
        "peering: {name: -peers}": ("/peering/name", "does not match pattern"),
        "logFormat: xml": ("/logFormat", "must be one of"),
        "replica: 2": ("", "additional properties 'replica' not allowed"),
    }
    for text, (where, message) in cases.items():
        result = helm(
            helm_home, "template", "r", str(CHART), "--values", "-", input=text, check=False
        )
        assert result.returncode != 0, f"helm accepted {text!r}"
        assert "values don't meet the specifications of the schema" in result.stderr, text
        assert f"at '{where}'" in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize("values", ["default", "all", "all-with-bundled-etcd"])
def test_rendered_manifests_pass_server_side_dry_run(
    control_plane: ControlPlane, helm_home: dict[str, str], values: str
) -> None:
    namespace = create_namespace(control_plane, unique("chart"))
    watched = [create_namespace(control_plane, unique("team")) for _ in range(2)]
    # kopf's peering CRDs (the chart's crds/ folder) must exist for the peering objects
    # to be checked; installing them for real is what `helm install` does too.
    control_plane.install_crds(CHART / "crds")
    overrides: dict[str, Any] = {"watchNamespaces": watched}
    if values == "all-with-bundled-etcd":
        # cert-manager's kinds are not installed here: the chart's own certificates
        # (test_etcd_certificates_come_from_cert_manager_when_asked renders the others).
        overrides["etcd"] = {"endpoints": [], "tls": {"source": "helm"}}
    manifests = render(
        helm_home,
        release=unique("r"),
        namespace=namespace,
        values_file=None if values == "default" else VALUES_ALL,
        values=None if values == "default" else overrides,
        include_crds=True,
    )
    kinds = {m["kind"] for m in manifests}
    if values == "default":
        assert {"ClusterRole", "ClusterRoleBinding", "StatefulSet", "Deployment"} <= kinds
        assert {"CustomResourceDefinition", "NetworkPolicy", "Service"} <= kinds
    else:
        assert {"Role", "RoleBinding", "KopfPeering", "Deployment"} <= kinds
        assert "ClusterKopfPeering" not in kinds
        # Cluster-wide, only reads kopf needs (CRDs, namespaces); Kurable's rules are Roles.
        (cluster_role,) = find(manifests, "ClusterRole")
        groups = {g for rule in cluster_role["rules"] for g in rule["apiGroups"]}
        assert groups == {"apiextensions.k8s.io", ""}
        assert {v for rule in cluster_role["rules"] for v in rule["verbs"]} == {"list", "watch"}
        assert ("StatefulSet" in kinds) == (values == "all-with-bundled-etcd")
        budgets = {b["metadata"]["labels"]["app.kubernetes.io/component"]
                   for b in find(manifests, "PodDisruptionBudget")}  # fmt: skip
        assert budgets == ({"operator", "etcd"} if "bundled" in values else {"operator"})
        assert ("CronJob" in kinds) == (values == "all-with-bundled-etcd")  # backups
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(manifests), check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(manifests)


def test_rendered_crds_are_the_generated_ones_plus_helm_metadata(
    helm_home: dict[str, str],
) -> None:
    rendered = {
        m["metadata"]["name"]: m for m in find(render(helm_home), "CustomResourceDefinition")
    }
    files = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    generated = [d for d in files if d["kind"] == "CustomResourceDefinition"]
    assert set(rendered) == {c["metadata"]["name"] for c in generated}
    # The Workflow's admission policy and its binding ship beside the CRDs.
    for document in (d for d in files if d["kind"] != "CustomResourceDefinition"):
        (shipped,) = find(render(helm_home), document["kind"])
        assert json.loads(json.dumps(shipped["spec"])) == document["spec"]
    for crd in generated:
        mine = rendered[crd["metadata"]["name"]]
        assert mine["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"].get("labels", {}).items() <= mine["metadata"]["labels"].items()
        # Numbers may change representation (10.0 -> 10) through Helm; values may not.
        assert json.loads(json.dumps(mine["spec"])) == json.loads(json.dumps(crd["spec"]))
    unkept = find(render(helm_home, values={"crds": {"keep": False}}), "CustomResourceDefinition")
    assert all(
        "helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in unkept
    )
    assert not find(
        render(helm_home, values={"crds": {"install": False}}), "CustomResourceDefinition"
    )


def test_deployment_meets_the_restricted_pod_security_standard(
    control_plane: ControlPlane, helm_home: dict[str, str]
) -> None:
    """The API server's own PodSecurity admission, enforcing `restricted`, admits the
    operator's and etcd's pods (a dry run in a namespace labelled to enforce it)."""
    namespace = unique("restricted")
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        ),
    )
    manifests = render(helm_home, namespace=namespace, values={"etcd": {"replicas": 3}})
    workloads = find(manifests, "Deployment") + find(manifests, "StatefulSet")
    for workload in workloads + find(manifests, "Deployment", component="endpoint"):
        spec = workload["spec"]["template"]["spec"]
        # A StatefulSet's pods get their claims' volumes from the controller.
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            spec.setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"], "emptyDir": {}}
            )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": unique("probe"), "namespace": namespace},
            "spec": spec,
        }
        result = control_plane.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False
        )
        assert result.returncode == 0, f"{workload['kind']}: {result.stderr}"
        assert "Warning" not in result.stderr, result.stderr
    # And the check can fail: a privileged container is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False
    )
    assert result.returncode != 0 and "allowPrivilegeEscalation" in result.stderr


def test_deployment_takes_image_probe_env_and_args_from_values(helm_home: dict[str, str]) -> None:
    values = yaml.safe_load(VALUES_ALL.read_text())
    (deployment,) = find(
        render(helm_home, values_file=VALUES_ALL, values={"watchNamespaces": ["a", "b"]}),
        "Deployment",
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert container["imagePullPolicy"] == values["image"]["pullPolicy"]
    assert container["resources"] == values["resources"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"][0]["containerPort"] == values["healthPort"]
    args = container["args"]
    assert args[:3] == ["operator", "--liveness", f"http://0.0.0.0:{values['healthPort']}/healthz"]
    assert _pairs(args, "--namespace") == ["a", "b"]
    assert _pairs(args, "--peering") == [values["peering"]["name"]]
    operator = values["operator"]
    assert _pairs(args, "--lease-ttl") == [str(operator["leaseTTL"])]
    assert _pairs(args, "--resync-interval") == [str(operator["resyncInterval"])]
    assert _pairs(args, "--api-timeout") == [str(operator["apiTimeout"])]
    env = {e["name"]: e for e in container["env"]}
    assert env["KURABLE_EXECUTOR_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KURABLE_ETCD_ENDPOINTS"]["value"] == ",".join(values["etcd"]["endpoints"])
    assert env["KURABLE_ETCD_PREFIX"]["value"] == values["etcd"]["prefix"]
    # An existing etcd: the client certificate and password from the Secrets named.
    assert env["KURABLE_ETCD_USER"]["value"] == values["etcd"]["auth"]["user"]
    assert env["KURABLE_ETCD_PASSWORD_FILE"]["value"] == "/etc/kurable/etcd-auth/password"
    assert env["KURABLE_ETCD_CACERT"]["value"] == "/etc/kurable/etcd-tls/ca.crt"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"]
    assert volumes["etcd-tls"]["secret"]["secretName"] == values["etcd"]["tls"]["clientSecret"]
    assert volumes["etcd-auth"]["secret"]["secretName"] == values["etcd"]["auth"]["existingSecret"]
    assert volumes["views"]["emptyDir"]["sizeLimit"] == values["viewsSizeLimit"]
    assert [m["name"] for m in container["volumeMounts"]] == [
        "tmp",
        "etcd-tls",
        "etcd-auth",
        "views",
    ]
    assert "initContainers" not in pod  # an existing etcd's users are its owner's
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"

    (single,) = find(render(helm_home), "Deployment")
    assert single["spec"]["strategy"]["type"] == "Recreate"
    assert "--peering" not in single["spec"]["template"]["spec"]["containers"][0]["args"]

    # Replicas without peering share the runs, all active: no kopf peering at all.
    shared = render(helm_home, values={"replicas": 3})
    (deployment,) = find(shared, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not find(shared, "ClusterKopfPeering") and not find(shared, "KopfPeering")


def test_operator_pods_take_spread_priority_log_format_and_budget_from_values(
    helm_home: dict[str, str],
) -> None:
    values = yaml.safe_load(VALUES_ALL.read_text())
    manifests = render(helm_home, values_file=VALUES_ALL, values={"watchNamespaces": ["a"]})
    (deployment,) = find(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert _pairs(container["args"], "--log-format") == ["json"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    (spread,) = pod["topologySpreadConstraints"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    # An entry without labelSelector selects the operator's own pods.
    assert spread == {
        **values["topologySpreadConstraints"][0],
        "labelSelector": {"matchLabels": selector},
    }
    (budget,) = find(manifests, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": "50%", "selector": {"matchLabels": selector}}

    # Defaults: one replica, so no budget; plain logs.
    defaults = render(helm_home)
    assert not find(defaults, "PodDisruptionBudget")
    (single,) = find(defaults, "Deployment")
    (container,) = single["spec"]["template"]["spec"]["containers"]
    assert _pairs(container["args"], "--log-format") == ["plain"]
    assert "topologySpreadConstraints" not in single["spec"]["template"]["spec"]
    (budget,) = find(render(helm_home, values={"replicas": 3}), "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_bundled_etcd_has_tls_auth_and_spread_members_by_default(
    helm_home: dict[str, str],
) -> None:
    manifests = render(helm_home, values={"etcd": {"replicas": 3}})
    (etcd,) = find(manifests, "StatefulSet")
    assert etcd["spec"]["podManagementPolicy"] == "Parallel"
    spec = etcd["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    for flag in ("--client-cert-auth", "--peer-client-cert-auth", "--initial-cluster-state=new"):
        assert flag in args
    assert "--listen-client-urls=https://0.0.0.0:2379" in args
    (cluster,) = [a for a in args if a.startswith("--initial-cluster=")]
    assert cluster.count("=https://") == 3
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    tls = {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"]

    secrets = {m["metadata"]["name"]: m for m in find(manifests, "Secret")}
    assert secrets[tls]["type"] == "kubernetes.io/tls"
    assert set(secrets[tls]["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert set(secrets["kurable-etcd-auth"]["data"]) == {"password", "root-password"}
    assert all(
        s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for s in secrets.values()
    )

    # Every client: all three members by name over https, a client certificate, a user.
    (operator,) = find(manifests, "Deployment")
    (endpoint,) = find(manifests, "Deployment", component="endpoint")
    for deployment in (operator, endpoint):
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        urls = env["KURABLE_ETCD_ENDPOINTS"].split(",")
        assert len(urls) == 3 and all(u.startswith("https://kurable-etcd-") for u in urls)
        assert env["KURABLE_ETCD_USER"] == "kurable" and env["KURABLE_ETCD_CERT"]
        auth = {v["name"]: v for v in pod["volumes"]}["etcd-auth"]["secret"]
        assert auth["items"] == [{"key": "password", "path": "password"}]  # never root's
    (init,) = operator["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][0] == "etcd-auth"
    assert {e["name"]: e.get("value") for e in init["env"]}["KURABLE_ETCD_USER"] == "root"

    # Off on request: plaintext, no users, no init container.
    plain = render(
        helm_home, values={"etcd": {"tls": {"enabled": False}, "auth": {"enabled": False}}}
    )
    (operator,) = find(plain, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KURABLE_ETCD_ENDPOINTS"].startswith("http://") and "KURABLE_ETCD_USER" not in env
    assert "initContainers" not in operator["spec"]["template"]["spec"] and not find(
        plain, "Secret"
    )


def test_the_charts_etcd_certificates_and_init_container_work_with_a_real_etcd(
    helm_home: dict[str, str], tmp_path: Path
) -> None:
    """The default render's Secrets, as files: an etcd member serves with the chart's
    certificate, the operator's init container (`kurable etcd-auth` as root, with the
    chart's client certificate and its environment) turns authentication on, and then
    Kurable's user reaches its prefix with its certificate and password."""
    import asyncio
    import base64

    from kurable.store.etcd import EtcdConfig, connect
    from kurable.testing import EtcdCluster
    from kurable.testing._etcd import EtcdPKI

    manifests = render(helm_home)
    data = {m["metadata"]["name"]: m["data"] for m in find(manifests, "Secret")}
    files = {
        "ca.crt": data["kurable-etcd-server-tls"]["ca.crt"],
        "member.crt": data["kurable-etcd-server-tls"]["tls.crt"],
        "member.key": data["kurable-etcd-server-tls"]["tls.key"],
        "kurable.crt": data["kurable-etcd-client-tls"]["tls.crt"],
        "kurable.key": data["kurable-etcd-client-tls"]["tls.key"],
        "password": data["kurable-etcd-auth"]["password"],
        "root-password": data["kurable-etcd-auth"]["root-password"],
    }
    pki = tmp_path / "pki"
    pki.mkdir()
    for name, encoded in files.items():
        (pki / name).write_bytes(base64.b64decode(encoded))
    (operator,) = find(manifests, "Deployment")
    (init,) = operator["spec"]["template"]["spec"]["initContainers"]
    mounted = {
        "/etc/kurable/etcd-tls/tls.crt": "kurable.crt",
        "/etc/kurable/etcd-tls/tls.key": "kurable.key",
    }
    mounted |= {"/etc/kurable/etcd-tls/ca.crt": "ca.crt"}
    mounted |= {f"/etc/kurable/etcd-auth/{k}": k for k in ("password", "root-password")}

    def local(value: str) -> str:  # the container's mount paths, here
        return str(pki / mounted[value]) if value in mounted else value

    with EtcdCluster(members=1, state_dir=tmp_path / "etcd", pki=EtcdPKI(pki), auth=False) as etcd:
        env = {e["name"]: local(e["value"]) for e in init["env"]}
        env["KURABLE_ETCD_ENDPOINTS"] = etcd.endpoints[0]  # not the in-cluster name
        result = subprocess.run(
            [sys.executable, "-m", "kurable", *(local(a) for a in init["args"])],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "authentication turned on" in result.stdout

        async def use() -> None:
            user = EtcdConfig(
                etcd.endpoints[0],
                cacert=str(pki / "ca.crt"),
                cert=str(pki / "kurable.crt"),
                key=str(pki / "kurable.key"),
                user="kurable",
                password=(pki / "password").read_text(),
            )
            client = await connect(user)
            try:
                await client.put(b"/kurable/chart", b"ok")
                assert (await client.get(b"/kurable/chart")).value == b"ok"
            finally:
                await client.close()

        asyncio.run(use())


def test_etcd_certificates_come_from_cert_manager_when_asked(helm_home: dict[str, str]) -> None:
    own = render(helm_home, values={"etcd": {"tls": {"source": "cert-manager"}}})
    certificates = {m["metadata"]["name"]: m for m in find(own, "Certificate")}
    assert set(certificates) == {
        "kurable-etcd-ca",
        "kurable-etcd-server-tls",
        "kurable-etcd-client-tls",
    }
    assert certificates["kurable-etcd-ca"]["spec"]["isCA"] is True
    client = certificates["kurable-etcd-client-tls"]["spec"]
    assert client["commonName"] == "kurable" and client["issuerRef"]["name"] == "kurable-etcd-ca"
    assert {m["metadata"]["name"] for m in find(own, "Issuer")} == {
        "kurable-etcd-selfsigned",
        "kurable-etcd-ca",
    }
    assert [m["metadata"]["name"] for m in find(own, "Secret")] == ["kurable-etcd-auth"]

    issuer = {"name": "platform-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    values = {"etcd": {"tls": {"source": "cert-manager", "certManager": {"issuerRef": issuer}}}}
    theirs = render(helm_home, values=values)
    assert not find(theirs, "Issuer")
    assert all(c["spec"]["issuerRef"] == issuer for c in find(theirs, "Certificate"))


@pytest.mark.parametrize("members", [2, 3])
def test_etcd_scales_out_joining_the_existing_members(
    helm_home: dict[str, str], members: int
) -> None:
    """Steps 2 and 4 of docs/operations.md, "Scaling etcd": the members listed in
    --initial-cluster are exactly the cluster's after `member add` (etcd refuses to join
    otherwise), and the state is `existing`."""
    values = {"etcd": {"replicas": members, "initialClusterState": "existing"}}
    manifests = render(helm_home, values=values)
    (etcd,) = find(manifests, "StatefulSet")
    args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--initial-cluster-state=existing" in args
    (cluster,) = [a for a in args if a.startswith("--initial-cluster=")]
    assert [m.split("=")[0] for m in cluster.split("=", 1)[1].split(",")] == [
        f"kurable-etcd-{i}" for i in range(members)
    ]
    # A PodDisruptionBudget only where one member may go: never with two.
    assert bool(find(manifests, "PodDisruptionBudget")) == (members == 3)


def test_etcd_metrics_and_backups_pass_the_network_policy(helm_home: dict[str, str]) -> None:
    monitoring = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    values = {"etcd": {"metrics": {"from": monitoring}, "backup": {"enabled": True}}}
    manifests = render(helm_home, values=values)
    (policy,) = find(manifests, "NetworkPolicy")
    rules = policy["spec"]["ingress"]
    (metrics,) = [r for r in rules if r["ports"] == [{"port": 2381}]]
    assert metrics["from"] == monitoring
    assert all({"port": 2381} not in r["ports"] for r in rules if r is not metrics)
    (cronjob,) = find(manifests, "CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    (snapshot,) = job["spec"]["containers"]
    assert snapshot["args"][:3] == ["etcd-snapshot", "--output", "/backup"]
    backup = {
        "app.kubernetes.io/name": "kurable",
        "app.kubernetes.io/instance": "kurable",
        "app.kubernetes.io/component": "etcd-backup",
    }
    assert backup.items() <= job["metadata"]["labels"].items()
    backup_pods = [r for r in rules if r.get("from") == [{"podSelector": {"matchLabels": backup}}]]
    assert backup_pods and backup_pods[0]["ports"] == [{"port": 2379}]
    (claim,) = find(manifests, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in job["spec"]["volumes"]}
    assert volumes["backup"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volumes["etcd-auth"]["secret"]["items"] == [
        {"key": "root-password", "path": "root-password"}
    ]


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_metrics_port_traces_and_the_pod_monitor_come_from_values(
    helm_home: dict[str, str],
) -> None:
    values = yaml.safe_load(VALUES_ALL.read_text())
    (deployment,) = find(
        render(helm_home, values_file=VALUES_ALL, values={"watchNamespaces": ["a"]}),
        "Deployment",
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = values["metrics"]["port"]
    assert _pairs(container["args"], "--metrics") == [f"0.0.0.0:{port}"]
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == values["tracing"]["otlpEndpoint"]
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"

    default = render(helm_home)
    (container,) = find(default, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "--metrics" in container["args"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in {e["name"] for e in container["env"]}
    assert not [m for m in default if m["kind"] == "PodMonitor"]

    monitored = render(
        helm_home, values={"metrics": {"podMonitor": {"enabled": True, "labels": {"r": "p"}}}}
    )
    (monitor,) = [m for m in monitored if m["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["r"] == "p"
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        ("metrics", "/metrics"),
        ("http", "/metrics"),
    ]
    (component,) = monitor["spec"]["selector"]["matchExpressions"]
    assert component["values"] == ["operator", "endpoint"]  # not etcd's own metrics port
    off = render(helm_home, values={"metrics": {"enabled": False}})
    (container,) = find(off, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "--metrics" not in container["args"]


def test_kinds_with_handlers_are_exactly_the_kinds_the_rbac_grants(
    helm_home: dict[str, str],
) -> None:
    """When a handler for a new kind lands, the chart's rules must grow with it."""
    import kopf

    import kurable.handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    handled = {
        handler.selector.plural or handler.selector.any_name
        for registry_part in (registry._watching, registry._spawning, registry._changing)
        for handler in registry_part.get_all_handlers()
        if handler.selector is not None and handler.selector.group == "kurable.dev"
    }
    (role,) = find(render(helm_home), "ClusterRole")
    granted = {
        resource
        for rule in role["rules"]
        if rule["apiGroups"] == ["kurable.dev"] and "watch" in rule["verbs"]
        for resource in rule["resources"]
    }
    assert handled == granted


# -- install, upgrade, uninstall -------------------------------------------------------


@pytest.fixture
def empty_control_plane() -> Iterator[ControlPlane]:
    """A control plane of its own, without CRDs: Helm installs them, and what an
    uninstall leaves behind is not mixed up with other tests' objects."""
    with ControlPlane() as plane:
        yield plane


def cluster_scoped_objects(cp: ControlPlane) -> set[str]:
    kinds = cp.kubectl("api-resources", "--namespaced=false", "--verbs=list", "-o", "name")
    names: set[str] = set()
    for kind in kinds.stdout.split():
        listed = cp.kubectl("get", kind, "-o", "name", check=False)
        names.update(listed.stdout.split())
    return names


@pytest.mark.slow
def test_install_upgrade_and_uninstall_leave_only_the_kept_crds(
    empty_control_plane: ControlPlane, helm_home: dict[str, str], tmp_path: Path
) -> None:
    cp = empty_control_plane
    namespace = create_namespace(cp, "kurable-system")
    before = cluster_scoped_objects(cp)
    release = "kurable"
    # CRDs created outside Helm (`kubectl apply -f crds/`) are adopted as the chart's
    # README says, then installed over by the release.
    cp.kubectl("apply", "-f", str(ROOT / "crds"))
    adopt_crds(cp, release, namespace)
    install = helm(
        helm_home, "install", release, str(CHART), "-n", namespace, kubeconfig=cp.kubeconfig
    )
    assert "STATUS: deployed" in install.stdout
    assert "rollout status deployment/kurable" in install.stdout  # NOTES.txt
    deployment = json.loads(
        cp.kubectl("get", "-n", namespace, "deploy/kurable", "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 1
    assert cp.kubectl("get", "statefulset/kurable-etcd", "-n", namespace).returncode == 0

    # The etcd certificates and passwords the chart generated survive an upgrade (the
    # members' data holds the users; a new CA would lock every client out).
    def etcd_secrets() -> dict[str, Any]:
        names = ("kurable-etcd-auth", "kurable-etcd-server-tls", "kurable-etcd-client-tls")
        return {
            n: json.loads(cp.kubectl("get", "-n", namespace, f"secret/{n}", "-o", "json").stdout)[
                "data"
            ]
            for n in names
        }

    generated = etcd_secrets()
    helm(
        helm_home, "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
        kubeconfig=cp.kubeconfig,
    )  # fmt: skip
    assert etcd_secrets() == generated

    # Changed values: replicas sharing the runs, an external etcd (the StatefulSet goes).
    upgrade = helm(
        helm_home,
        "upgrade",
        release,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "replicas=2",
        "--set",
        "etcd.endpoints={etcd-0.example:2379}",
        "--set",
        "logFormat=json",
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set-json",
        'topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"kubernetes.io/hostname",'
        '"whenUnsatisfiable":"ScheduleAnyway"}]',
        kubeconfig=cp.kubeconfig,
    )
    assert "STATUS: deployed" in upgrade.stdout
    budget = json.loads(cp.kubectl("get", "-n", namespace, "pdb/kurable", "-o", "json").stdout)
    assert budget["spec"]["maxUnavailable"] == 1
    deployment = json.loads(
        cp.kubectl("get", "-n", namespace, "deploy/kurable", "-o", "json").stdout
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert (
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        == (deployment["spec"]["selector"]["matchLabels"])
    )
    assert _pairs(container["args"], "--log-format") == ["json"]
    assert "--peering" not in container["args"]  # all active: no kopf peering
    assert cp.kubectl("get", "clusterkopfpeering/kurable", check=False).returncode
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert cp.kubectl("get", "statefulset/kurable-etcd", "-n", namespace, check=False).returncode
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KURABLE_ETCD_ENDPOINTS"] == "etcd-0.example:2379"

    # CRDs upgrade with the release: a chart whose Workflow CRD changed changes it.
    changed = tmp_path / "kurable"
    shutil.copytree(CHART, changed)
    crd_file = changed / "files" / "crds" / "kurable.dev_workflows.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["description"] = "changed by the upgrade test"
    crd_file.write_text(yaml.safe_dump(crd))
    helm(
        helm_home, "upgrade", release, str(changed), "-n", namespace, "--reuse-values",
        kubeconfig=cp.kubeconfig,
    )  # fmt: skip
    stored = json.loads(cp.kubectl("get", "crd/workflows.kurable.dev", "-o", "json").stdout)
    assert stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] == (
        "changed by the upgrade test"
    )

    helm(helm_home, "uninstall", release, "-n", namespace, kubeconfig=cp.kubeconfig)
    left = cluster_scoped_objects(cp) - before
    crds = {f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in _chart_crd_names()}
    # The admission policy that keeps a Workflow's input and output as they were is kept
    # with the CRDs: the Workflows it protects outlive the release too.
    crds |= {
        f"{d['kind'].lower()}.admissionregistration.k8s.io/{d['metadata']['name']}"
        for f in (ROOT / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"].startswith("ValidatingAdmissionPolicy")
    }
    # The API server registers an APIService per group version its CRDs serve.
    crds |= {
        f"apiservice.apiregistration.k8s.io/{version}.{group}"
        for group, version in (("kurable.dev", "v1alpha1"), ("kopf.dev", "v1"))
    }
    assert left == crds, f"left behind: {sorted(left - crds)}; missing: {sorted(crds - left)}"
    # Nothing of the release is left in its namespace either.
    for kind in (
        "deployment", "statefulset", "service", "serviceaccount", "networkpolicy",
        "poddisruptionbudget",
    ):  # fmt: skip
        assert cp.kubectl("get", kind, "-n", namespace, "-o", "name").stdout.strip() == ""


def adopt_crds(cp: ControlPlane, release: str, namespace: str) -> None:
    """The chart README's commands ("Adopting CRDs created outside Helm"): Helm installs
    over objects that carry its ownership label and annotations."""
    for kind in ("crd", "validatingadmissionpolicy", "validatingadmissionpolicybinding"):
        selector = "app.kubernetes.io/part-of=kurable"
        cp.kubectl(
            "label", kind, "-l", selector, "app.kubernetes.io/managed-by=Helm", "--overwrite"
        )
        cp.kubectl(
            "annotate", kind, "-l", selector, f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}", "--overwrite",
        )  # fmt: skip


def _chart_crd_names() -> set[str]:
    """Kurable's CRDs (kept) and kopf's peering CRDs (Helm's crds/ folder: never deleted)."""
    files = [*(ROOT / "crds").glob("*.yaml"), CHART / "crds" / "kopf-peering.yaml"]
    return {
        d["metadata"]["name"]
        for f in files
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"] == "CustomResourceDefinition"
    }


# -- least privilege -------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """An example a user applies, and how to tell that the operator completed it."""

    paths: tuple[Path, ...]
    kind: str
    name: str
    output: Any = None
    """The output the run must end with, when it says something about the rights used."""
    expires: bool = False
    """The run deletes itself (ttlSecondsAfterFinished) instead of being deleted here."""
    phases: tuple[tuple[str, str], ...] = ()
    """(ref, phase) of objects the operator's handlers must have brought to that phase
    (their handlers run only once kopf has patched its finalizer onto them)."""

    def run(self, cp: ControlPlane, namespace: str, prefix: str, timeout: float) -> str | None:
        """Apply it and follow it to the end; the first thing that went wrong, or None."""
        for path in self.paths:
            cp.kubectl("apply", "-n", namespace, "-f", str(path))
        ref = f"{self.kind.lower()}/{self.name}"
        if self.expires:
            return self._expired(cp, namespace, prefix, ref, timeout)
        done = _poll(
            lambda: (get(cp, namespace, ref).get("status") or {}).get("phase") == "Succeeded",
            timeout,
        )
        if not done:
            return f"{ref} did not succeed: status {get(cp, namespace, ref).get('status')}"
        for other, phase in self.phases:
            if not _poll(
                lambda o=other, p=phase: (
                    (get(cp, namespace, o).get("status") or {}).get("phase") == p
                ),
                timeout,
            ):
                return f"{other} is not {phase}: status {get(cp, namespace, other).get('status')}"
        obj = get(cp, namespace, ref)
        if self.output is not None and obj["status"].get("output") != self.output:
            return f"{ref} ended with output {obj['status'].get('output')}, not {self.output}"
        # Kubernetes Events for the phase changes status shows (DESIGN.md: every phase
        # change); a run this fast shows one: its end.
        wanted = {"Succeeded"}
        if not _poll(lambda: wanted <= _event_reasons(cp, namespace, self.kind, self.name), 10):
            return f"{ref}: events {_event_reasons(cp, namespace, self.kind, self.name)}"
        # Deleting it (no finalizer holds it) removes its journal once the operator sees it.
        cp.kubectl("delete", "-n", namespace, ref, "--wait=false")
        gone = _poll(
            lambda: cp.kubectl("get", "-n", namespace, ref, check=False).returncode != 0, 10
        )
        if not gone:
            return f"{ref} was not finalised after deletion"
        if not _poll(lambda: not journal(cp, obj["metadata"]["uid"], prefix), 10):
            return f"{ref}: its journal is still in etcd after deletion"
        return None

    def _expired(
        self, cp: ControlPlane, namespace: str, prefix: str, ref: str, timeout: float
    ) -> str | None:
        uid = get(cp, namespace, ref)["metadata"]["uid"]
        gone = _poll(
            lambda: cp.kubectl("get", "-n", namespace, ref, check=False).returncode != 0,
            timeout,
        )
        if not gone:
            return f"{ref} was not deleted after its ttl: {get(cp, namespace, ref).get('status')}"
        if "Succeeded" not in _event_reasons(cp, namespace, self.kind, self.name):
            return f"{ref} was deleted without succeeding first"
        if journal(cp, uid, prefix):
            return f"{ref}: its journal is still in etcd after its ttl deletion"
        return None


EXAMPLES = [
    Example((HELLO,), "Workflow", "hello"),
    # Templates, entities and entity types read, entity status patched; the entity and
    # type handlers ran (kopf patched their finalizers on).
    Example(
        (TRANSFER, TRANSFER / "runs"),
        "Workflow",
        "transfer-ok",
        phases=(("entitytype/wallet", "Valid"), ("entity/alice", "Ready"), ("entity/bob", "Ready")),
    ),
    # A child Workflow created and read.
    Example((ROOT / "examples" / "child" / "child.yaml",), "Workflow", "parent"),
    # A Secret read for a header: the call then fails to connect, not to read it.
    Example(
        (ROOT / "examples" / "secret-header" / "workflow.yaml",),
        "Workflow",
        "call-with-token",
        output={"failure": "ConnectionError"},
    ),
    # A finished run deleted after ttlSecondsAfterFinished.
    Example(
        (ROOT / "examples" / "ttl" / "workflow.yaml",), "Workflow", "short-lived", expires=True
    ),
]


def _poll(probe: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def _event_reasons(cp: ControlPlane, namespace: str, kind: str, name: str) -> set[str]:
    events = json.loads(
        cp.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind={kind},involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return {e["reason"] for e in events}


@dataclass
class ChartOperator:
    """The operator as the chart deploys it, but out of cluster: the chart's
    ServiceAccount, RBAC, peering objects and container args, with a token from the
    TokenRequest API in a kubeconfig of its own."""

    cp: ControlPlane
    helm_home: dict[str, str]
    tmp_path: Path
    values: dict[str, Any]
    release: str = ""
    namespace: str = ""
    prefix: str = ""
    identity: str = ""
    log: str = ""
    crds_after_operator: bool = False
    namespace_after_operator: bool = False
    deferred: list[Manifest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.release = unique("lp")
        self.namespace = unique("kurable")
        self.prefix = f"/{self.release}/"
        self.identity = f"{self.release}-0"
        self.manifests = render(
            self.helm_home, release=self.release, namespace=self.namespace, values=self.values
        )

    def rules(self) -> list[dict[str, Any]]:
        roles = find(self.manifests, "ClusterRole") + find(self.manifests, "Role")
        return [rule for role in roles for rule in role["rules"]]

    def install(self, without: tuple[str, int, str] | None = None) -> None:
        """Create the ServiceAccount, RBAC and peering objects as the admin; `without`
        (role kind, rule index, verb) takes one verb away from every such role."""
        create_namespace(self.cp, self.namespace)
        wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        wanted |= {"ClusterKopfPeering", "KopfPeering"}
        objects = [m for m in self.manifests if m["kind"] in wanted and not is_endpoint(m)]
        if without is not None:
            kind, index, verb = without
            for role in objects:
                if role["kind"] == kind:
                    rule = role["rules"][index]
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                    if not rule["verbs"]:
                        del role["rules"][index]
        if self.namespace_after_operator:
            watched = set(self.values["watchNamespaces"])
            self.deferred = [o for o in objects if o["metadata"].get("namespace") in watched]
            objects = [o for o in objects if o not in self.deferred]
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def install_deferred(self) -> None:
        for namespace in self.values.get("watchNamespaces", []):
            create_namespace(self.cp, namespace)
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.deferred))

    def kubeconfig(self, identity: str) -> Path:
        (account,) = find(self.manifests, "ServiceAccount")
        token = self.cp.kubectl(
            "create", "token", account["metadata"]["name"], "-n", self.namespace,
            "--duration=1h",
        ).stdout.strip()  # fmt: skip
        admin = yaml.safe_load(self.cp.kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [
                {"name": "operator", "context": {"cluster": "kurable", "user": "operator"}}
            ],
            "current-context": "operator",
        }
        path = self.tmp_path / f"{identity}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def operator(self, identity: str = "", priority: int | None = None) -> OperatorProcess:
        """`kurable operator` with the Deployment's arguments (but its own liveness and
        metrics ports),
        as the pod `identity` (default: the first replica's), with a peering `priority`
        when given (a replica draws a random one)."""
        identity = identity or self.identity
        (deployment,) = find(self.manifests, "Deployment")
        args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        assert args[:2] == ["operator", "--liveness"]
        if priority is not None:
            args += ["--priority", str(priority)]
        metrics = "--metrics" in args
        if metrics:  # its own port, as for liveness (replicas share this machine)
            at = args.index("--metrics")
            del args[at : at + 2]
        env = {
            "KUBECONFIG": str(self.kubeconfig(identity)),
            "KURABLE_ETCD_ENDPOINTS": self.cp.etcd_endpoint,
            "KURABLE_ETCD_PREFIX": self.prefix,
            "POD_ID": identity,  # what the downward API gives kopf in a pod
            "KURABLE_EXECUTOR_ID": identity,
        }
        return OperatorProcess(
            env, self.tmp_path / f"{identity}.log", extra_args=args[3:], metrics=metrics
        )


@pytest.fixture(scope="module")
def rbac_control_plane() -> Iterator[ControlPlane]:
    """A control plane for operators that watch all namespaces: the session's operator
    must not complete the examples for them, nor they for each other (one at a time)."""
    with ControlPlane(crds=[ROOT / "crds", CHART / "crds"]) as plane:
        yield plane


@dataclass(frozen=True)
class Configuration:
    """Chart values, and which of the rules they grant this configuration proves needed
    (each rule is taken away in exactly one configuration)."""

    values: dict[str, Any]
    proves: tuple[str, ...]  # API groups of the rules ("" is the core group)
    crds_after_operator: bool = False  # CRDs are installed once the operator runs
    # The watched namespace (and the chart's objects in it) appear once the operator
    # runs, as when a GitOps tool syncs them together.
    namespace_after_operator: bool = False


CONFIGURATIONS = {
    "all-namespaces": Configuration({}, ("kurable.dev", "")),
    "crds-after-operator": Configuration({}, ("apiextensions.k8s.io",), True),
    "peering": Configuration({"replicas": 2, "peering": {"enabled": True}}, ("kopf.dev",)),
    # WATCHED: a fresh namespace.
    "namespaced": Configuration(
        {"replicas": 2, "peering": {"enabled": True}, "watchNamespaces": ["WATCHED"]},
        ("kopf.dev", ""),
        False,
        True,
    ),
}


@pytest.fixture
def plane_for(rbac_control_plane: ControlPlane) -> Iterator[Callable[[str], ControlPlane]]:
    """The module's control plane, or a fresh one without CRDs when the configuration
    installs them after the operator started."""
    planes: list[ControlPlane] = []

    def plane(config: str) -> ControlPlane:
        if not CONFIGURATIONS[config].crds_after_operator:
            return rbac_control_plane
        planes.append(ControlPlane(crds=CHART / "crds").start())
        return planes[-1]

    yield plane
    for p in planes:
        p.stop()


def _peers(chart: ChartOperator, namespace: str) -> dict[str, Any]:
    """The status of the chart's peering object: kopf's peers by identity."""
    name = find(chart.manifests, "Deployment")[0]["metadata"]["name"]
    if chart.values.get("watchNamespaces"):
        peering = get(chart.cp, namespace, f"kopfpeering/{name}")
    else:
        peering = json.loads(
            chart.cp.kubectl("get", f"clusterkopfpeering/{name}", "-o", "json").stdout
        )
    status: dict[str, Any] = peering.get("status") or {}
    return status


def attempt_examples(
    chart: ChartOperator, namespace: str, timeout: float, first_problem: bool = False
) -> list[str]:
    """Run the chart's operator and every example; what went wrong (nothing: []).
    With `first_problem`, stop at the first thing that went wrong (enough to show that
    a grant is needed; each failing example waits out its `timeout`).

    With peering (`replicas > 1`), the operator first stands by for a second replica of
    higher priority, then runs the examples once that replica has stopped."""
    peering = chart.values.get("replicas", 1) > 1
    operator = chart.operator(priority=1 if peering else None)
    problems = []
    try:
        operator.start()
    except RuntimeError as e:
        return [f"the operator did not start: {e}"]
    other_logs = ""
    try:
        if chart.crds_after_operator:
            chart.cp.install_crds(ROOT / "crds")
        if chart.namespace_after_operator:
            chart.install_deferred()
        if peering:
            problem, other_logs = stand_by_for_a_peer(chart, namespace, operator)
            if problem is not None:
                return [problem]
        for example in EXAMPLES:
            problem = example.run(chart.cp, namespace, chart.prefix, timeout)
            if problem is not None:
                problems.append(problem)
                # Leave nothing for the next operator on this control plane to pick up.
                ref = f"{example.kind.lower()}/{example.name}"
                chart.cp.kubectl(
                    "patch", "-n", namespace, ref, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
                chart.cp.kubectl("delete", "-n", namespace, ref, "--wait=false", check=False)
                if first_problem:
                    return problems
        # Peering: the operator announces itself (kopf's keep-alive) in the peering object.
        if peering and not _poll(lambda: chart.identity in _peers(chart, namespace), 10):
            problems.append(f"not a peer: {_peers(chart, namespace)}")
    finally:
        operator.stop()
        # The operator's own log last: a failure message shows its tail.
        chart.log = other_logs + operator.log_path.read_text()
    return problems


PEER_TIMEOUT = 60.0
"""Seconds to wait for one step of peering (a keep-alive, a pause, a resume): generous,
since a step that works takes well under a second, and one that fails never comes."""

# kopf's log lines (kopf/_core/engines/peering.py) when a peer pauses and resumes.
PAUSING = "Pausing operations in favour of"
RESUMING = "Resuming operations after the pause"


def stand_by_for_a_peer(
    chart: ChartOperator, namespace: str, standby: OperatorProcess
) -> tuple[str | None, str]:
    """Start a second replica of higher priority next to the running `standby`
    (priority 1): the standby must pause in its favour, and resume once it has stopped.
    What went wrong (or None), and the second replica's log.

    With a peering name, kopf starts paused and resumes once it has listed the peering
    object; the second replica starts only then, so that the standby can learn of it
    only by watching that object (kopf lists it once). Only a watch event tells it
    that the replica left, too. kopf's log is its only record of pausing and resuming."""
    if not _poll(lambda: _logged(standby, (RESUMING,)), PEER_TIMEOUT):
        return f"{chart.identity} did not read the peering object", ""
    if not _poll(lambda: chart.identity in _peers(chart, namespace), PEER_TIMEOUT):
        return f"{chart.identity} did not announce itself: {_peers(chart, namespace)}", ""
    identity = f"{chart.release}-1"
    paused = ((RESUMING,), (PAUSING, identity))
    active = chart.operator(identity, priority=2)
    problem = None
    try:
        active.start()
        if not _poll(lambda: identity in _peers(chart, namespace), PEER_TIMEOUT):
            problem = f"{identity} did not announce itself: {_peers(chart, namespace)}"
        elif not _poll(lambda: _logged(standby, *paused), PEER_TIMEOUT):
            problem = f"{chart.identity} did not pause in favour of {identity} (priority 2)"
    except RuntimeError as e:
        problem = f"the second replica did not start: {e}"
    finally:
        active.stop()
    log = f"--- {identity} ---\n{active.log_path.read_text()}--- {chart.identity} ---\n"
    # Stopped, the replica removes itself from the peering object; killed, its entry
    # expires after kopf's peering lifetime (60s): wait long enough for either.
    if problem is None and not _poll(
        lambda: _logged(standby, *paused, (RESUMING,)), 2 * PEER_TIMEOUT
    ):
        problem = f"{chart.identity} did not resume after {identity} stopped"
    return problem, log


def _logged(operator: OperatorProcess, *lines: tuple[str, ...]) -> bool:
    """Whether the operator's log has, in this order, lines containing all of each
    tuple's parts."""
    wanted = iter(lines)
    parts = next(wanted, None)
    for line in operator.log_path.read_text().splitlines():
        if parts is None:
            break
        if all(part in line for part in parts):
            parts = next(wanted, None)
    return parts is None


def _setup(
    cp: ControlPlane, helm_home: dict[str, str], tmp_path: Path, config: str
) -> tuple[ChartOperator, str]:
    watched = unique("watched")
    configuration = CONFIGURATIONS[config]
    values = json.loads(json.dumps(configuration.values).replace("WATCHED", watched))
    chart = ChartOperator(cp, helm_home, tmp_path, values)
    chart.crds_after_operator = configuration.crds_after_operator
    chart.namespace_after_operator = configuration.namespace_after_operator
    if values.get("watchNamespaces"):
        if not configuration.namespace_after_operator:
            create_namespace(cp, watched)
        return chart, watched
    return chart, create_namespace(cp, unique("app"))


def _roles(config: str, home: dict[str, str]) -> list[Manifest]:
    """The ClusterRole and (the first) Role a configuration renders."""
    values = json.loads(json.dumps(CONFIGURATIONS[config].values).replace("WATCHED", "w"))
    manifests = render(home, values=values)
    return find(manifests, "ClusterRole") + find(manifests, "Role")[:1]


def _grant(rule: dict[str, Any], verb: str) -> str:
    return f"{rule['apiGroups'][0] or 'core'}/{','.join(rule['resources'])}:{verb}"


def _verbs_to_take_away() -> list[Any]:
    """(configuration, role kind, rule index, verb) for every verb the chart grants,
    rendered at collection so that a rule added to the chart is tested without editing
    this file."""
    params = []
    try:
        for config, configuration in CONFIGURATIONS.items():
            for role in _roles(config, {}):
                for index, rule in enumerate(role["rules"]):
                    if rule["apiGroups"][0] in configuration.proves:
                        params += [
                            pytest.param(
                                config, role["kind"], index, verb,
                                id=f"{config}:{role['kind']}:{_grant(rule, verb)}",
                            )
                            for verb in rule["verbs"]
                        ]  # fmt: skip
    except (ToolNotFound, pytest.fail.Exception) as e:  # collected on a machine without helm
        params.append(pytest.param("", "", 0, "", id="no-helm", marks=pytest.mark.skip(str(e))))
    return params


def test_every_granted_verb_is_taken_away_in_some_configuration(
    helm_home: dict[str, str],
) -> None:
    taken = set()
    for param in _verbs_to_take_away():
        config, kind, index, verb = param.values
        (role,) = [r for r in _roles(config, helm_home) if r["kind"] == kind]
        taken.add(_grant(role["rules"][index], verb))
    granted = {
        _grant(rule, verb)
        for config in CONFIGURATIONS
        for role in _roles(config, helm_home)
        for rule in role["rules"]
        for verb in rule["verbs"]
    }
    assert granted == taken


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGURATIONS))
def test_operator_completes_the_examples_with_the_charts_rbac_only(
    plane_for: Callable[[str], ControlPlane],
    helm_home: dict[str, str],
    tmp_path: Path,
    config: str,
) -> None:
    chart, namespace = _setup(plane_for(config), helm_home, tmp_path, config)
    chart.install()
    problems = attempt_examples(chart, namespace, timeout=60)
    assert not problems, f"{problems}\n{chart.log[-4000:]}"
    # Nothing refused (but the watched namespace's objects while they were being created).
    refused = [
        line
        for line in chart.log.splitlines()
        if "Forbidden" in line and not (chart.namespace_after_operator and namespace in line)
    ]
    assert not refused, refused


@pytest.mark.slow
@pytest.mark.parametrize(("config", "kind", "index", "verb"), _verbs_to_take_away())
def test_without_any_one_granted_verb_the_examples_do_not_complete(
    plane_for: Callable[[str], ControlPlane],
    helm_home: dict[str, str],
    tmp_path: Path,
    config: str,
    kind: str,
    index: int,
    verb: str,
) -> None:
    chart, namespace = _setup(plane_for(config), helm_home, tmp_path, config)
    chart.install(without=(kind, index, verb))
    problems = attempt_examples(chart, namespace, timeout=15, first_problem=True)
    assert problems, f"the examples completed without {verb} of {kind} rule {index}: grant less"


# -- GitOps ----------------------------------------------------------------------------

GITOPS = ROOT / "examples" / "gitops"


def _gitops_manifests(cp: ControlPlane) -> str:
    """What Argo CD or Flux applies: the kustomization of definitions, plus a run."""
    definitions = cp.kubectl("kustomize", str(GITOPS)).stdout
    return definitions + "---\n" + HELLO.read_text()


def _snapshot(cp: ControlPlane, namespace: str) -> dict[str, tuple[int, Any]]:
    objects = json.loads(
        cp.kubectl(
            "get", "-n", namespace, "workflows,workflowtemplates,entitytypes", "-o", "json"
        ).stdout
    )["items"]
    return {
        f"{o['kind']}/{o['metadata']['name']}": (o["metadata"]["generation"], o["spec"])
        for o in objects
    }


@pytest.mark.parametrize("apply_mode", ["client-side", "server-side"])
def test_reapplying_the_same_manifests_after_the_operator_ran_changes_no_spec(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, apply_mode: str
) -> None:
    cp = control_plane
    manifests = _gitops_manifests(cp)
    flags = ["--server-side", "--field-manager=gitops"] if apply_mode == "server-side" else []
    cp.kubectl("apply", "-n", namespace, *flags, "-f", "-", input=manifests)
    # The operator has processed the run: status, phase Succeeded.
    done = _poll(
        lambda: (
            (get(cp, namespace, "workflow/hello").get("status") or {}).get("phase") == "Succeeded"
        ),
        60,
    )
    assert done, (
        f"status {get(cp, namespace, 'workflow/hello').get('status')}; "
        f"the operator's log ends:\n{operator.log_tail(80)}"
    )
    before = _snapshot(cp, namespace)
    assert set(before) == {"Workflow/hello", "WorkflowTemplate/greeting", "EntityType/counter"}

    diff = cp.kubectl("diff", "-n", namespace, *flags[:2], "-f", "-", input=manifests, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    again = cp.kubectl("apply", "-n", namespace, *flags, "-f", "-", input=manifests).stdout
    if apply_mode == "client-side":
        assert again.count("unchanged") == 3, again
    assert _snapshot(cp, namespace) == before

    # Argo CD would show the run Healthy (its health check on the real status).
    from tests.unit.chart.test_argocd_health import health

    assert health("workflow", get(cp, namespace, "workflow/hello"))["status"] == "Healthy"
