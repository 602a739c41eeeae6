"""A short terminal summary with rich: the verdict line, then a table of the top findings.

Nothing from the report reaches the terminal as markup or raw control characters: texts are rich
`Text` objects (never markup-parsed) built from `clean_text` (C0/C1 controls and bidi overrides
removed), and `terminal_text` does the same for anything else printed (progress, log lines, errors).
"""
from __future__ import annotations

import logging
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from report_gen.render.context import Limits, build_context, clean_text


def terminal_text(value: Any, limit: int = 2000) -> str:
    """Text safe to print on a terminal: one line, no escape sequence (ESC ]0;title BEL, CSI, ...),
    no bidi override, non-UTF-8 bytes as backslash escapes. Not markup: print it with markup off."""
    return " ".join(clean_text(value, limit).splitlines())


class TerminalSafeFormatter(logging.Formatter):
    """A logging formatter whose output goes through `terminal_text` (file names in log messages
    come from the artifact being diagnosed)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record), 4000)

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
