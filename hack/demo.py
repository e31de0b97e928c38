"""`make demo`: the embedded control plane, the operator, and a durable workflow, shown.

Starts etcd + kube-apiserver (kurable.testing.ControlPlane) and the operator, applies
examples/hello/workflow.yaml, follows its steps until it finishes, prints its final
status and journal, and shuts everything down. Exit status 0 when the run succeeded.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from kurable.api import crd
from kurable.cli import main as kurable
from kurable.testing import ControlPlane, OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello" / "workflow.yaml"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kurable-demo-") as tmp:
        state = Path(tmp)
        banner("starting the local control plane (etcd + kube-apiserver)")
        started = time.monotonic()
        with ControlPlane(state_dir=state / "cluster", crds=crd.write_all(state / "crds")) as cp:
            print(
                f"API server {cp.server}, etcd {cp.etcd_endpoint} "
                f"({time.monotonic() - started:.1f}s)"
            )
            os.environ.update(cp.env())
            banner("starting the operator")
            with OperatorProcess(cp.env(), state / "operator.log") as operator:
                banner(f"kubectl apply -f {EXAMPLE.relative_to(ROOT)}")
                print(cp.kubectl("apply", "-f", str(EXAMPLE)).stdout.strip())
                banner("watching the steps")
                code = kurable(["watch", "workflow/hello", "--timeout", "120"])
                banner("kubectl get workflows")
                print(cp.kubectl("get", "workflows", "-o", "wide").stdout.rstrip())
                banner("the journal in etcd (kurable history workflow/hello)")
                kurable(["history", "workflow/hello"])
                banner("kubectl get events")
                print(cp.kubectl("get", "events", "--sort-by=.lastTimestamp").stdout.rstrip())
                if code != 0:
                    print(f"\noperator log:\n{operator.log_tail()}", file=sys.stderr)
            banner("shutting down")
    print("done" if code == 0 else "the workflow did not succeed", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
