"""A short terminal summary with rich: the verdict line, then the top findings, then input notices grouped.

Nothing from the report reaches the terminal as markup or raw control characters: texts are rich
`Text` objects (never markup-parsed) built from `clean_text` (C0/C1 controls and bidi overrides
removed), and `terminal_text` does the same for anything else printed (progress, log lines, errors).
"""
from __future__ import annotations

import builtins
import logging
import os
import sys
import textwrap
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when something is printed
    from rich.console import Console
    from rich.text import Text

from report_gen.render.context import Limits, build_context, clean_text
from report_gen.render.notices import group_notices, split_findings


def terminal_text(value: Any, limit: int = 2000) -> str:
    """Text safe to print on a terminal: one line, no escape sequence (ESC ]0;title BEL, CSI, ...),
    no bidi override, non-UTF-8 bytes as backslash escapes. Not markup: print it with markup off."""
    return " ".join(clean_text(value, limit).splitlines())


class TerminalSafeFormatter(logging.Formatter):
    """A logging formatter whose output goes through `terminal_text` (file names in log messages
    come from the artifact being diagnosed)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record), 4000)

TOP_FINDINGS = 10  # findings about the training shown
TOP_NOTICES = 5  # groups of identical input notices shown
TOP_FILES = 3  # files listed per group
INDENT = "    "
_STYLES = {"fail": "bold red", "warn": "bold yellow", "unknown": "bold magenta", "pass": "bold green",
           "error": "red", "warning": "yellow", "info": "blue"}


def _verdict(context: dict) -> tuple[str, str]:
    """('FAIL  1 error, 2 warnings, 0 info in 2 runs', the line's style); with a baseline, '; vs
    baseline: 1 new, 2 resolved, 3 persisting' follows."""
    counts = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in context["counts"])
    runs = len(context["runs"])
    line = f"{context['verdict_label']}  {counts} in {runs} run{'s' if runs != 1 else ''}"
    b = context.get("baseline")
    if b:
        line += (f"; vs baseline: {len(b['new'])} new, {len(b['resolved'])} resolved, "
                 f"{len(b['persisting'])} persisting")
    return line, _STYLES.get(context["verdict"], "bold")


def verdict_line(context: dict) -> "Text":
    """The verdict line as styled (never markup-parsed) rich text: the verdict's style on the whole line."""
    from rich.text import Text

    return Text(*_verdict(context))


def _plain_output(file: IO[str] | None) -> bool:
    """True when rich would print no style at all, so plain text is what it would write: the output
    is not a terminal (isatty() false or missing), and nothing can make rich treat it as one
    (FORCE_COLOR, TTY_COMPATIBLE) or render it elsewhere (an IPython/Jupyter shell). Saves importing
    rich (~30 ms) for the one verdict line of a CI run or a pipe."""
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ or hasattr(builtins, "get_ipython"):
        return False
    isatty = getattr(sys.stdout if file is None else file, "isatty", None)
    try:
        return isatty is None or not isatty()
    except ValueError:  # closed: rich treats it as no terminal too
        return True
    except Exception:  # noqa: BLE001 - anything odd: let rich decide, as before
        return False


def _console(file: IO[str] | None) -> "Console":
    """Width from COLUMNS (else the terminal, else 80: a CI log); no colour when NO_COLOR is set (and,
    as rich does, none unless the output is a terminal or FORCE_COLOR asks for it)."""
    from rich.console import Console

    no_color = True if os.environ.get("NO_COLOR", "") != "" else None
    return Console(file=file, highlight=False, soft_wrap=True, no_color=no_color, emoji=False)


def _safe_line(line: str) -> str:
    """A line that cannot be read as a GitHub Actions workflow command (`::set-output ...`): the
    runner takes any log line starting, after blanks, with '::' as one; a name from the artifact could."""
    stripped = line.lstrip()
    return line if not stripped.startswith("::") else line[: len(line) - len(stripped)] + ": :" + stripped[2:]


def _wrapped(text: str, width: int, first: str = INDENT, rest: str = INDENT) -> list[str]:
    """Text wrapped at word boundaries only: a name or path longer than the line stays whole."""
    lines = textwrap.wrap(text, width=max(width, 20), initial_indent=first, subsequent_indent=rest,
                          break_long_words=False, break_on_hyphens=False)
    return [_safe_line(line) for line in lines]


def _where(run: str, subject: str, width: int) -> list[str]:
    """'run NAME · SUBJECT' on one line when it fits, else one line each; names are never broken."""
    one = f"{INDENT}run {run} · {subject}" if subject else f"{INDENT}run {run}"
    if len(one) <= width or not subject:
        return [_safe_line(one)]
    return [_safe_line(f"{INDENT}run {run}"), _safe_line(f"{INDENT}{subject}")]


def _header(severity: str, code: str, name: str, status: str) -> "Text":
    from rich.text import Text

    line = Text(f"{severity:<8}", style=_STYLES.get(severity, ""))
    line.append(f" {code} {name}".rstrip())
    if status == "new":
        line.append("  new", style="bold")
    return line


def print_summary(report: dict, *, quiet: bool = False, file: IO[str] | None = None) -> None:
    """Print the verdict and counts; unless quiet, the most severe findings about the training, then
    the input notices grouped (identical problems once, with a count and the files).

    Laid out for 80 columns and CI logs: prose is wrapped at word boundaries at the console width
    (COLUMNS), never cut; run names, subjects and paths are never broken inside.

    The verdict line alone (quiet, or nothing found) on an output rich would not style is written
    without rich, through the same `terminal_text`; anything else is printed by rich.
    """
    context = build_context(report, Limits(max_rows=0, max_text=4000))
    if (quiet or not context["findings"]) and _plain_output(file):
        out = sys.stdout if file is None else file
        if out is not None:  # no stdout (pythonw): rich writes nowhere too
            out.write(terminal_text(_verdict(context)[0]) + "\n")
            out.flush()
        return
    from rich.text import Text  # rich costs an import only when something is styled or laid out

    console = _console(file)
    width = console.width
    console.print(verdict_line(context))
    if quiet or not context["findings"]:
        return
    training, notices = split_findings(context["findings"])
    if context["baseline"]:  # what this change made worse first
        training.sort(key=lambda v: v["status"] != "new")
    groups = group_notices(notices, {run["name"]: run["path"] for run in context["runs"]})
    if training:
        console.print()
    for view in training[:TOP_FINDINGS]:
        console.print(_header(view["severity"], view["code"], view["name"], view["status"]))
        for line in _where(view["run"], view["subject"], width) + _wrapped(view["message"], width):
            console.print(Text(line))
        if view["suggestion"]:
            for line in _wrapped(view["suggestion"], width, INDENT + "try: ", INDENT + "     "):
                console.print(Text(line, style="dim"))
    if groups:
        console.print()
        console.print(Text("Input notices (damaged or unreadable files)", style="bold"))
    for group in groups[:TOP_NOTICES]:
        line = _header(group["severity"], group["code"], group["name"], group["status"])
        noun = "run" if not any(shown for _, shown in group["files"]) else "file"  # "": the run folder
        line.append(f"  {group['count']} {noun}{'s' if group['count'] != 1 else ''}")
        console.print(line)
        for text in _wrapped(group["problem"], width):
            console.print(Text(text))
        for run, shown in group["files"][:TOP_FILES]:
            console.print(Text(_safe_line(f"{INDENT}{run}: {shown}" if shown else f"{INDENT}{run}")))
        if group["count"] > TOP_FILES:
            console.print(Text(f"{INDENT}… and {group['count'] - TOP_FILES} more", style="dim"))
        if group["suggestion"]:
            for text in _wrapped(group["suggestion"], width, INDENT + "try: ", INDENT + "     "):
                console.print(Text(text, style="dim"))
    cut_training = max(len(training) - TOP_FINDINGS, 0)
    cut_notices = sum(g["count"] for g in groups[TOP_NOTICES:])
    if cut_training or cut_notices:
        console.print()
        console.print(Text(f"… and {cut_training + cut_notices} more (see the report)", style="dim"))
