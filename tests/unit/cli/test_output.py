"""What the CLI prints: tables that fit their content, a quiet stop on a closed pipe,
`--version`, hints that match what was given."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from kurable.cli import BROKEN_PIPE_EXIT
from kurable.cli._entities import unapplied_hint
from kurable.cli._table import table


def test_table_columns_are_as_wide_as_their_widest_cell() -> None:
    lines = table(
        ("SEQ", "AT", "STEP", "DETAIL"),
        [
            ("1", "2026-01-01T00:00:00.123456Z", "charge-the-card:compensate", "{}"),
            ("12", "2026-01-01T00:00:01.000Z", "a", ""),
        ],
        right=(0,),
    )
    assert lines == [
        "SEQ  AT                           STEP                        DETAIL",
        "  1  2026-01-01T00:00:00.123456Z  charge-the-card:compensate  {}",
        " 12  2026-01-01T00:00:01.000Z     a",
    ]


def _closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `kurable argv` with a stdout nobody reads (`kurable ... | head -0`)."""
    code = f"import sys; from kurable.cli import main; sys.exit(main({argv!r}))"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the child can write: the reader has gone
    _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def test_a_closed_stdout_stops_the_cli_quietly(tmp_path: Path) -> None:
    for argv in (["crds", "--output", str(tmp_path)], ["--version"]):
        result = _closed_pipe(argv)
        assert result.stderr == "", argv
        assert result.returncode == BROKEN_PIPE_EXIT, argv


def test_version_comes_from_the_package_metadata() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kurable.cli import main; sys.exit(main())",
            "--version",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kurable {version('kurable')}\n"


def test_the_retry_hint_names_the_id_only_when_one_was_given() -> None:
    assert "--id" not in unapplied_hint(None)
    assert "send the command again" in unapplied_hint(None)
    assert "the same --id pay-1" in unapplied_hint("pay-1")
