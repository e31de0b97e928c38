"""`kurable --help` answers without importing the operator's heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "kopf",
    "kubernetes",
    "kubernetes_asyncio",
    "aetcd",
    "pydantic",
    "cel_expr_python",
    "fastapi",
    "uvicorn",
)

PROBE = """
import contextlib, io, json, sys
from kurable.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps({"help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["command", "--help"], ["operator", "--help"], ["endpoint", "--help"]]
)
def test_help_imports_neither_kopf_nor_the_kubernetes_and_etcd_clients(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    seen = json.loads(result.stdout)
    assert "usage: kurable" in seen["help"]
    loaded = {m.split(".")[0] for m in seen["modules"]}
    assert not loaded & set(HEAVY), f"--help imported {sorted(loaded & set(HEAVY))}"
