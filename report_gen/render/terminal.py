"""A short terminal summary with rich: the verdict line, then a table of the top findings."""
from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from report_gen.render.context import Limits, build_context

TOP_FINDINGS = 10
_STYLES = {"fail": "bold red", "warn": "bold yellow", "unknown": "bold magenta", "pass": "bold green",
           "error": "red", "warning": "yellow", "info": "blue"}


def verdict_line(context: dict) -> Text:
    """'FAIL  1 error, 2 warnings, 0 info in 2 runs' as styled (never markup-parsed) text."""
    counts = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in context["counts"])
    runs = len(context["runs"])
    line = Text(context["verdict_label"], style=_STYLES.get(context["verdict"], "bold"))
    line.append(f"  {counts} in {runs} run{'s' if runs != 1 else ''}")
    return line


def print_summary(report: dict, *, quiet: bool = False, file: IO[str] | None = None) -> None:
    """Print the verdict and counts; unless quiet, also the most severe findings as a table."""
    context = build_context(report, Limits(max_findings=TOP_FINDINGS, max_rows=0, max_text=160))
    console = Console(file=file, highlight=False, soft_wrap=False)
    console.print(verdict_line(context))
    if quiet or not context["findings"]:
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("severity", "code", "run", "subject", "message"):
        table.add_column(column, overflow="fold")
    for f in context["findings"]:
        table.add_row(Text(f["severity"], style=_STYLES.get(f["severity"], "")), Text(f["code"]), Text(f["run"]),
                      Text(f["subject"]), Text(f["message"]))
    console.print(table)
    if context["findings_cut"]:
        console.print(Text(f"… and {context['findings_cut']} more (see the report)", style="dim"))
