"""Input notices (input-integrity findings) apart from findings about the training, and grouped.

A damaged folder gives one I101 finding per file, each naming the file in its subject, its message and
its evidence: eighteen LFS pointers make eighteen near-identical entries. Readers of a PR comment or a
CI log want what went wrong with the *training* first, then each distinct input problem once, with a
count and the files it affects. This module works on finding views (`context._finding_view`), so the
Markdown report and the terminal summary group the same way; it decides nothing about severity.
"""
from __future__ import annotations

from typing import Iterable

INPUT_CATEGORY = "input-integrity"


def is_input_notice(view: dict) -> bool:
    """A finding about the files read (unreadable, truncated, unsafe ...), not about the training."""
    return view.get("category") == INPUT_CATEGORY


def split_findings(views: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """(findings about the training, input notices), each in the order given."""
    training, notices = [], []
    for view in views:
        (notices if is_input_notice(view) else training).append(view)
    return training, notices


def shown_file(file: str, run_path: str) -> str:
    """A file relative to its run folder (the run is named beside it), "" for the run folder itself,
    else the file as given."""
    base = run_path.rstrip("/\\")
    if base and file == base:
        return ""
    for sep in ("/", "\\"):
        if base and file.startswith(base + sep):
            return file[len(base) + 1:]
    return file


def problem_text(message: str, file: str) -> str:
    """The message without the file name it repeats: what identical problems have in common."""
    if not file:
        return message
    return message.replace(f"{file}: ", "").replace(f": {file}", "").replace(file, "this file")


def group_notices(notices: Iterable[dict], run_paths: dict[str, str]) -> list[dict]:
    """One group per identical problem (same severity, code, status, problem text and suggestion).

    Each group: severity, code, name, status, problem, suggestion, count, runs (names, first-seen
    order) and files [(run, file shown relative to its run folder)]. Most severe first, then the
    largest group; within a severity the input order (already sorted) breaks ties.
    """
    groups: dict[tuple, dict] = {}
    for view in notices:
        file = str(view.get("subject", ""))
        problem = problem_text(str(view.get("message", "")), file)
        key = (view.get("severity"), view.get("code"), view.get("status"), problem, view.get("suggestion"))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"severity": view.get("severity"), "code": view.get("code"),
                                   "name": view.get("name"), "status": view.get("status"), "problem": problem,
                                   "suggestion": view.get("suggestion"), "runs": [], "files": []}
        run = str(view.get("run", ""))
        if run not in group["runs"]:
            group["runs"].append(run)
        group["files"].append((run, shown_file(file, run_paths.get(run, ""))))
    ranked = list(groups.values())
    for group in ranked:
        group["count"] = len(group["files"])
    order = {"error": 0, "warning": 1, "info": 2}
    ranked.sort(key=lambda g: (order.get(str(g["severity"]), 3), -g["count"]))
    return ranked
