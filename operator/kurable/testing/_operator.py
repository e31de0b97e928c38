"""The operator as a real child process, so that tests and `kurable dev` can kill it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

READY_TIMEOUT = 60.0


class OperatorProcess:
    """`kurable operator` in a subprocess, with its log in a file and a liveness probe.

    ``env`` points it at a control plane (``ControlPlane.env()``); ``namespaces``
    restricts what it watches (glob patterns allowed; default: all namespaces);
    ``etcd_prefix`` separates its etcd keys from other operators sharing the etcd.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        namespaces: Sequence[str] = (),
        etcd_prefix: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.namespaces = list(namespaces)
        self.etcd_prefix = etcd_prefix
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.health_port = 0

    def start(self, wait: bool = True) -> OperatorProcess:
        """Start it; with ``wait``, return once its liveness endpoint answers."""
        self.health_port = _free_port()
        argv = [
            sys.executable,
            "-m",
            "kurable",
            "operator",
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
        ]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        if self.etcd_prefix:
            argv += ["--etcd-prefix", self.etcd_prefix]
        argv += self.extra_args
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the operator exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the operator was not ready in {timeout:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease revocation; a crash."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (a long GC pause, a stalled node)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self._signal(signal.SIGCONT)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (kopf stops gracefully), then SIGKILL after `grace` seconds."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
