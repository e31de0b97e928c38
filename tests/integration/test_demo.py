"""`make demo` as a newcomer runs it: the whole script, on its own control plane."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_runs_to_the_end_with_every_outcome_as_expected() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "done: every outcome as expected" in done.stdout, output[-6000:]
    for part in ("balances", "alice's event log", "examples/choreography/", "examples/shop/"):
        assert part in done.stdout, f"the demo did not show {part}:\n{output[-3000:]}"
