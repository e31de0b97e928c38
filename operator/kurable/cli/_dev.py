"""`kurable dev`: the local control plane plus the operator and the endpoint, in the foreground."""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType

from kurable.api import crd

from ._errors import UserError

try:
    from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess
except ModuleNotFoundError as e:  # cryptography, of the `testing` extra
    raise UserError(
        f"`kurable dev` needs the testing extra ({e}): pip install 'kurable[testing]'"
    ) from None

ADMIN_ACCOUNT = "kurable-admin"
"""The ServiceAccount (in `default`) whose token `kurable dev` hands out: cluster-admin."""
ADMIN_TOKEN_SECONDS = 7 * 24 * 3600
"""How long the admin's token lasts (a dev cluster lives a working day or a week)."""


def admin_token(plane: ControlPlane) -> str:
    """A token of the dev cluster's admin (ServiceAccount `kurable-admin`, bound to
    cluster-admin): the identity the endpoint sees for `$KURABLE_TOKEN`."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with plane.api_client() as api:
        core = client.CoreV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        try:
            core.create_namespaced_service_account(
                "default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=ADMIN_ACCOUNT))
            )
        except ApiException as e:
            if e.status != 409:
                raise
        binding = client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=ADMIN_ACCOUNT),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name=ADMIN_ACCOUNT, namespace="default")
            ],
        )
        try:
            rbac.create_cluster_role_binding(binding)
        except ApiException as e:
            if e.status != 409:
                raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=ADMIN_TOKEN_SECONDS)
        )
        answer = core.create_namespaced_service_account_token(ADMIN_ACCOUNT, "default", request)
    if answer.status is None or not answer.status.token:
        raise RuntimeError(f"the API server issued no token for {ADMIN_ACCOUNT}: {answer}")
    return str(answer.status.token)


def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    crd_files = crd.write_all(state_dir / "crds")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"starting etcd and kube-apiserver in {state_dir} ...", flush=True)
    with ControlPlane(state_dir=state_dir, crds=crd_files) as plane:
        env = plane.env()
        endpoint = EndpointProcess(env, state_dir / "endpoint.log").start()
        token = admin_token(plane)
        env_file = state_dir / "env"
        operator = None
        if not args.no_operator:
            operator = OperatorProcess(env, state_dir / "operator.log", metrics=True)
        exported = {**env, "KURABLE_ENDPOINT": endpoint.url, "KURABLE_TOKEN": token}
        if operator is not None and operator.metrics_url:
            exported["KURABLE_OPERATOR_METRICS"] = operator.metrics_url
        env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exported.items()))
        env_file.chmod(0o600)  # it holds the admin's token
        if operator is not None:
            operator.start()
        operator_note = f"log in {operator.log_path}" if operator else "not started (--no-operator)"
        print(
            "\nKurable dev cluster is up.\n"
            f"  API server:   {plane.server}\n"
            f"  etcd:         {plane.etcd_endpoint} (operator prefix /kurable/)\n"
            f"  kubeconfig:   {plane.kubeconfig}\n"
            f"  endpoint:     {endpoint.url} (docs: {endpoint.url}/docs; "
            f"log in {endpoint.log_path})\n"
            f"  operator:     {operator_note}\n"
            + (
                f"  metrics:      {operator.metrics_url} and {endpoint.url}/metrics\n"
                if operator
                else ""
            )
            + f"  console:      {endpoint.url}/ui/\n"
            "\nIn another shell:\n"
            f"  source {env_file}          # KUBECONFIG, KURABLE_ENDPOINT, KURABLE_TOKEN\n"
            "  kubectl apply -f examples/hello/workflow.yaml\n"
            "  kubectl get workflows -w\n"
            '  curl -H "Authorization: Bearer $KURABLE_TOKEN" '
            "$KURABLE_ENDPOINT/v1/namespaces/default/workflows\n"
            + ("  kurable operator            # run the operator by hand\n" if not operator else "")
            + "\nCtrl-C stops everything.",
            flush=True,
        )
        try:
            while not stop.wait(0.5):
                if operator and operator.process and operator.process.poll() is not None:
                    print(f"the operator exited:\n{operator.log_tail()}", flush=True)
                    return 1
                if endpoint.process and endpoint.process.poll() is not None:
                    print(f"the endpoint exited:\n{endpoint.log_tail()}", flush=True)
                    return 1
        finally:
            if operator:
                operator.stop()
            endpoint.stop()
            print("stopping the control plane ...", flush=True)
    return 0
