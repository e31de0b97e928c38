"""The endpoint as a real child process, for tests and `kurable dev`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Self

from ._process import ChildProcess, free_port

READY_TIMEOUT = 60.0


class EndpointProcess(ChildProcess):
    """`kurable endpoint` in a subprocess on a free loopback port, its log in a file.

    ``env`` points it at a control plane (``ControlPlane.env()``: the admin kubeconfig is
    the endpoint's own identity); ``etcd_prefix`` is the operator's etcd prefix;
    ``extra_args`` are more flags (``--max-body-bytes``, ``--allow-anonymous``...).
    :attr:`url` is where it listens, e.g. ``http://127.0.0.1:41234``.
    """

    what = "the endpoint"

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        etcd_prefix: str | None = None,
        extra_args: Sequence[str] = (),
        port: int = 0,
    ) -> None:
        super().__init__(env, log_path, extra_args)
        self.etcd_prefix = etcd_prefix
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Self:
        """Start it; with ``wait``, return once ``/readyz`` answers 200."""
        self.port = self.port or free_port()
        argv = ["endpoint", "--bind", f"127.0.0.1:{self.port}"]
        if self.etcd_prefix:
            argv += ["--etcd-prefix", self.etcd_prefix]
        self._launch(argv)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._wait_for(f"{self.url}/readyz", timeout, 2)
