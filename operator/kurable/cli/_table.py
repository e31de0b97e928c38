"""Tables the CLI prints: columns as wide as their widest cell, so nothing overflows."""

from __future__ import annotations

from collections.abc import Sequence


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """The lines of a table: each column as wide as its widest cell (header included),
    two spaces apart; columns whose index is in `right` aligned right, the others left.
    The last column is not padded (it is free text: a record's detail)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            if i == len(row) - 1:
                cells.append(text)
            elif i in right:
                cells.append(text.rjust(widths[i]))
            else:
                cells.append(text.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines
