"""Printing the kubectl way: a table by default, ``-o json|yaml`` for scripts; colour only on a terminal."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["add_output_flag", "console", "emit", "table"]


def console(stderr: bool = False) -> Console:
    """Colour only on a terminal (and never with NO_COLOR); off a terminal, lines are never wrapped, so scripts
    and tests see one row per line."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(file=stream, width=None if terminal else 10_000, highlight=False, soft_wrap=not terminal)


def table(headers: list[str], rows: list[list[str | Text]], *, show_header: bool = True) -> Table:
    """Cells are plain text (a regex like ``[0-9]+`` is not markup); pass ``Text`` for colour."""
    t = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 3, 0, 0), show_header=show_header
    )
    for h in headers:
        t.add_column(h, no_wrap=True)
    for row in rows:
        t.add_row(*(Text(c) if isinstance(c, str) else c for c in row))
    return t


def emit(data: Any, output: str, render: Any = None) -> None:
    """``render``: a rich renderable (or a function making one) for the table form."""
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif render is not None:
        console().print(render() if callable(render) else render)


def add_output_flag(parser: Any, table_default: bool = True) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml") if table_default else ("yaml", "json"),
        default="table" if table_default else "yaml",
        help="table (default), json or yaml",
    )
