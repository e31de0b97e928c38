"""What a command prints as data: a table for people, or `-o json|yaml` for programs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ._table import table

DATA_FORMATS = ("json", "yaml")
"""The values of `-o/--output` on every command whose output is data."""


def print_data(args: argparse.Namespace, value: Any) -> None:
    """Print `value` (JSON-shaped) as `args.output` says: YAML for `-o yaml`, else JSON
    (indented for `-o json`, on one line when no format was asked for)."""
    output = getattr(args, "output", None)
    if output == "yaml":
        import yaml

        print(yaml.safe_dump(value, sort_keys=False, allow_unicode=True), end="")
    elif output == "json":
        print(json.dumps(value, indent=2))
    else:
        print(json.dumps(value))


def print_rows(
    args: argparse.Namespace,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Sequence[int] = (),
) -> None:
    """A table under `header`; with `-o json|yaml`, a list of objects instead, keyed by
    the header's names in lower case (`COMMAND ID` becomes `commandId`)."""
    rows = list(rows)
    if getattr(args, "output", None) in DATA_FORMATS:
        keys = [_key(name) for name in header]
        print_data(args, [dict(zip(keys, row, strict=True)) for row in rows])
        return
    for line in table(header, rows, right=right):
        print(line)


def _key(name: str) -> str:
    first, *rest = name.lower().split()
    return first + "".join(word.capitalize() for word in rest)
