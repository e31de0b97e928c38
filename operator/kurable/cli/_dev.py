"""`kurable dev`: the local control plane plus the operator, in the foreground."""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType

from kurable.api import crd
from kurable.testing import ControlPlane, OperatorProcess


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
        env_file = state_dir / "env"
        env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        operator = None
        if not args.no_operator:
            operator = OperatorProcess(env, state_dir / "operator.log").start()
        operator_note = f"log in {operator.log_path}" if operator else "not started (--no-operator)"
        print(
            "\nKurable dev cluster is up.\n"
            f"  API server:   {plane.server}\n"
            f"  etcd:         {plane.etcd_endpoint} (operator prefix /kurable/)\n"
            f"  kubeconfig:   {plane.kubeconfig}\n"
            f"  operator:     {operator_note}\n"
            "\nIn another shell:\n"
            f"  source {env_file}\n"
            "  kubectl apply -f examples/hello/workflow.yaml\n"
            "  kubectl get workflows -w\n"
            + ("  kurable operator            # run the operator by hand\n" if not operator else "")
            + "\nCtrl-C stops everything.",
            flush=True,
        )
        try:
            while not stop.wait(0.5):
                if operator and operator.process and operator.process.poll() is not None:
                    print(f"the operator exited:\n{operator.log_tail()}", flush=True)
                    return 1
        finally:
            if operator:
                operator.stop()
            print("stopping the control plane ...", flush=True)
    return 0
