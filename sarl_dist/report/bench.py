"""How benchmark scripts report: JSON for machines, then a table for people."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def emit(title: str, rows: list[dict], out: Path | None = None, result: object = None) -> None:
    """Print `result` (default: the rows) as JSON, save it to `out`, then the rows as a table."""
    text = json.dumps(rows if result is None else result, indent=1)
    print(text)
    if out is not None:
        out.write_text(text)
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=200).print(table)
