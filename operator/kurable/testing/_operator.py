"""The operator as a real child process, so that tests and `kurable dev` can kill it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Self

from ._process import ChildProcess, free_port

READY_TIMEOUT = 60.0


class OperatorProcess(ChildProcess):
    """`kurable operator` in a subprocess, with its log in a file and a liveness probe.

    ``env`` points it at a control plane (``ControlPlane.env()``); ``namespaces``
    restricts what it watches (glob patterns allowed; default: all namespaces);
    ``etcd_prefix`` separates its etcd keys from other operators sharing the etcd.
    """

    what = "the operator"

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        namespaces: Sequence[str] = (),
        etcd_prefix: str | None = None,
        extra_args: Sequence[str] = (),
        metrics: bool = False,
    ) -> None:
        super().__init__(env, log_path, extra_args)
        self.namespaces = list(namespaces)
        self.etcd_prefix = etcd_prefix
        self.health_port = 0
        self.metrics_port = free_port() if metrics else 0
        """With ``metrics``: the port of its Prometheus metrics (``metrics_url``)."""

    @property
    def metrics_url(self) -> str | None:
        """``http://127.0.0.1:PORT/metrics`` when started with ``metrics``, else None."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    def start(self, wait: bool = True) -> Self:
        """Start it; with ``wait``, return once its liveness endpoint answers."""
        self.health_port = free_port()
        argv = ["operator", "--liveness", f"http://127.0.0.1:{self.health_port}/healthz"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        if self.etcd_prefix:
            argv += ["--etcd-prefix", self.etcd_prefix]
        if self.metrics_port:
            argv += ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        self._launch(argv)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._wait_for(f"http://127.0.0.1:{self.health_port}/healthz", timeout, 1)
