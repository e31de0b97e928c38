"""A Kurable command as a real child process, with its log in a file: what the operator
and the endpoint processes of tests and `kurable dev` share."""

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
from typing import IO, Self


class ChildProcess:
    """`python -m kurable ARGS` in its own session (signals reach its children too), its
    output appended to `log_path`. Subclasses say how it starts and when it is ready."""

    what = "the process"
    """How errors name it."""

    def __init__(
        self, env: Mapping[str, str], log_path: str | os.PathLike[str], extra_args: Sequence[str]
    ) -> None:
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, wait: bool = True) -> Self:
        raise NotImplementedError

    def _launch(self, argv: Sequence[str]) -> None:
        """Start `python -m kurable *argv` with the extra args, its log appended."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kurable", *argv, *self.extra_args],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_for(self, url: str, timeout: float, request_timeout: float) -> None:
        """Return once `url` answers 200; RuntimeError with the log's tail when the process
        exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.what} exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=request_timeout) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.what} was not ready in {timeout:.0f}s:\n{self.log_tail()}")

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
        """SIGTERM (a graceful stop), then SIGKILL after `grace` seconds."""
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
