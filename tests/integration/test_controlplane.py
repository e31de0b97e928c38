"""The local control plane of kurable.testing: real etcd and kube-apiserver processes."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kurable.testing import ControlPlane, ControlPlaneError, ToolNotFound, find_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def pinned_kubernetes_version() -> str:
    """The Kubernetes release hack/tools.sh builds, as pinned in its wrapper module."""
    go_mod = (REPO / "hack" / "kube" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE)
    assert match, "hack/kube/go.mod does not require k8s.io/kubernetes"
    return match.group(1)


def widget_crd(*, with_size: bool = False) -> dict[str, object]:
    """A tiny namespaced CRD in a group of its own, so it cannot clash with Kurable's."""
    properties: dict[str, object] = {"colour": {"type": "string"}}
    if with_size:
        properties["size"] = {"type": "integer"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.kurable.dev"},
        "spec": {
            "group": "test.kurable.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": properties}},
                        }
                    },
                }
            ],
        },
    }


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited while we looked
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def own_plane() -> Iterator[ControlPlane]:
    """A control plane of its own (temporary state), for tests that stop or break it."""
    plane = ControlPlane()
    try:
        yield plane
    finally:
        plane.stop()


# -- locating binaries ----------------------------------------------------------------


def test_find_tool_prefers_env_var_then_tools_dir_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def executable(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    on_path = executable(tmp_path / "path" / "kube-apiserver")
    cached = executable(tmp_path / "tools" / "bin" / "kube-apiserver")
    explicit = executable(tmp_path / "explicit" / "kube-apiserver")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("KURABLE_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setenv("KURABLE_KUBE_APISERVER", str(explicit))

    assert find_tool("kube-apiserver") == str(explicit)
    monkeypatch.delenv("KURABLE_KUBE_APISERVER")
    assert find_tool("kube-apiserver") == str(cached)
    cached.unlink()
    assert find_tool("kube-apiserver") == str(on_path)


def test_missing_tool_error_says_to_run_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KURABLE_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.delenv("KURABLE_ETCD", raising=False)

    with pytest.raises(ToolNotFound, match="make tools"):
        find_tool("etcd")


# -- the shared control plane of the pytest plugin -----------------------------------


def test_apiserver_reports_the_pinned_kubernetes_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)

    assert version["serverVersion"]["gitVersion"] == pinned_kubernetes_version()


def test_admin_kubeconfig_and_env_point_at_the_running_servers(
    control_plane: ControlPlane,
) -> None:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())

    assert config["clusters"][0]["cluster"]["server"] == control_plane.server
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.env() == {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "KURABLE_ETCD_ENDPOINTS": control_plane.etcd_endpoint,
    }
    with control_plane.api_client() as api:
        namespaces = client.CoreV1Api(api).list_namespace()
    assert "default" in {ns.metadata.name for ns in namespaces.items if ns.metadata}


def test_rbac_forbids_a_user_without_bindings_and_allows_the_admin(
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl("get", "pods", "--namespace=default")

    denied = control_plane.kubectl("get", "pods", "--namespace=default", "--as=nobody", check=False)

    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert 'User "nobody" cannot list resource "pods"' in denied.stderr


def test_namespace_fixture_gives_a_fresh_namespace(
    control_plane: ControlPlane, namespace: str
) -> None:
    got = json.loads(control_plane.kubectl("get", "namespace", namespace, "-o", "json").stdout)

    assert namespace.startswith("test-")
    assert got["status"]["phase"] == "Active"


def test_installed_crd_serves_custom_objects_and_reinstall_updates_it(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    crd_file = tmp_path / "widgets.yaml"
    crd_file.write_text(yaml.safe_dump(widget_crd()))
    assert control_plane.install_crds(crd_file) == ["widgets.test.kurable.dev"]

    # Installing again with a changed schema takes the update path (409, then replace);
    # a field the first schema lacked would be pruned if the update were lost.
    crd_file.write_text(yaml.safe_dump(widget_crd(with_size=True)))
    control_plane.install_crds([crd_file])

    with control_plane.api_client() as api:
        objects = client.CustomObjectsApi(api)
        objects.create_namespaced_custom_object(
            "test.kurable.dev",
            "v1",
            namespace,
            "widgets",
            {
                "apiVersion": "test.kurable.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "blue"},
                "spec": {"colour": "blue", "size": 3},
            },
        )
        got = objects.get_namespaced_custom_object(
            "test.kurable.dev", "v1", namespace, "widgets", "blue"
        )
    assert isinstance(got, dict)
    assert got["spec"] == {"colour": "blue", "size": 3}
    listed = control_plane.kubectl("get", "widgets", f"--namespace={namespace}", "-o", "name")
    assert listed.stdout.split() == ["widget.test.kurable.dev/blue"]


# -- control planes of their own ------------------------------------------------------


def test_persistent_state_dir_keeps_objects_and_pki_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with ControlPlane(state_dir=state) as first:
        first.kubectl("create", "configmap", "kept", "--from-literal=answer=42")
        ca = (state / "pki" / "ca.crt").read_bytes()
        with pytest.raises(ControlPlaneError, match="in use by another running control plane"):
            ControlPlane(state_dir=state).start()

    with ControlPlane(state_dir=state) as second:
        got = second.kubectl("get", "configmap", "kept", "-o", "jsonpath={.data.answer}")
        assert got.stdout == "42"
        assert (state / "pki" / "ca.crt").read_bytes() == ca
        config = yaml.safe_load(second.kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == second.server

    assert processes_mentioning(str(state)) == []
    assert (state / "etcd").is_dir()


def test_stop_leaves_no_process_alive_and_removes_temporary_state(
    own_plane: ControlPlane,
) -> None:
    own_plane.start()
    state = own_plane.state_dir
    assert len(processes_mentioning(str(state))) == 2  # etcd and kube-apiserver

    own_plane.stop()
    own_plane.stop()  # idempotent

    assert processes_mentioning(str(state)) == []
    assert not state.exists()


def test_apiserver_and_etcd_restarts_keep_addresses_and_data(own_plane: ControlPlane) -> None:
    own_plane.start()
    server, etcd = own_plane.server, own_plane.etcd_endpoint
    own_plane.kubectl("create", "configmap", "survivor", "--from-literal=a=b")

    own_plane.stop_etcd(kill=True)
    own_plane.start_etcd()
    own_plane.stop_apiserver(kill=True)
    own_plane.start_apiserver()

    assert (own_plane.server, own_plane.etcd_endpoint) == (server, etcd)
    got = own_plane.kubectl("get", "configmap", "survivor", "-o", "jsonpath={.data.a}")
    assert got.stdout == "b"


def test_failed_start_reports_the_log_tail_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'error: no such flag --bogus' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("KURABLE_KUBE_APISERVER", str(broken))
    state = tmp_path / "state"

    with pytest.raises(ControlPlaneError) as failure:
        ControlPlane(state_dir=state).start()

    message = str(failure.value)
    assert "kube-apiserver exited with code 3" in message
    assert "error: no such flag --bogus" in message
    assert processes_mentioning(str(state)) == []
