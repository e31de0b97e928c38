"""`kurable dev` starts the endpoint and hands out an admin token it accepts."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .endpoint_http import call

pytestmark = pytest.mark.integration


def read_env(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = shlex.split(value)[0]
    return found


def test_dev_writes_the_endpoint_an_admin_token_and_the_metrics_into_its_env_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "dev"
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "kurable", "dev", "--state-dir", str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        env_file = state / "env"
        deadline = time.monotonic() + 120
        while not (env_file.exists() and "KURABLE_TOKEN" in env_file.read_text()):
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.5)
        env = read_env(env_file)
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        url = env["KURABLE_ENDPOINT"]
        assert url.startswith("http://127.0.0.1:")
        listed = call(f"{url}/v1/namespaces/default/workflows", token=env["KURABLE_TOKEN"])
        assert (listed.status, listed.body["items"]) == (200, [])
        assert call(f"{url}/v1/namespaces/default/workflows").status == 401
        assert "kurable_endpoint_requests_total" in call(f"{url}/metrics").text
        metrics = env["KURABLE_OPERATOR_METRICS"]
        assert metrics.startswith("http://127.0.0.1:") and metrics.endswith("/metrics")
        while "kurable_workflow_runs_in_flight" not in _text(metrics):
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
        log.close()
    assert process.returncode == 0


def _text(url: str) -> str:
    """The page at `url`, or "" while nothing answers there."""
    try:
        return call(url, timeout=5).text
    except OSError:
        return ""
