"""GitHub-flavoured Markdown report, sized for a pull-request comment.

Always shorter than GitHub's 65,536-character comment limit. Findings about the training come first;
input notices (damaged or unreadable files) follow, identical problems grouped into one line with a
count and the files. When the text is too long, long tables are capped first, then input notices are
cut, and findings about the training only last (least severe first); the comment says what it cut. Images are written as PNG files beside the
report and linked relatively, because GitHub strips data: images. Every text taken from the report is
escaped with the `md` filter so it renders inertly: no raw HTML, no table breaks, no @mentions, no
issue references, no math.

GitHub links @mentions and issue references (``#123``, ``GH-77``, ``owner/repo#9``) in a filter that
runs on the text nodes of the HTML *after* Markdown was rendered (skipping ``pre``, ``code`` and ``a``).
By then ``\\#`` has become ``#`` and ``&#35;`` has been decoded to ``#``, so neither stops it. What does is
a character the pattern does not allow between the sign and the name or number: a zero-width space
(U+200B) after ``@``, ``#`` and ``GH-``. It is invisible and leaves the table syntax alone (checked
with markdown-it in the tests). Math (``$...$``) is found the same late way; GitHub's documented way
to show a literal dollar sign is ``<span>$</span>``, which splits the text node so no pair of
delimiters is ever in one node.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import jinja2

from report_gen.render.context import Limits, build_context, template_environment
from report_gen.render.notices import group_notices, split_findings
from report_gen.render.output import OutputFolder
from report_gen.render.plots import PlotStore

MAX_CHARS = 65_536
MARKER = "<!-- report_gen:report -->"
TEXT_LIMIT = 600
ZERO_WIDTH_SPACE = "\u200b"
_ESCAPES = {
    "\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "~": "\\~",
    "&": "&amp;", "<": "&lt;", ">": "&gt;",
    "@": "@" + ZERO_WIDTH_SPACE,  # breaks GitHub's @mention (and e-mail autolink) without changing the look
    "#": "\\#" + ZERO_WIDTH_SPACE,  # \# for headings, the space for #123 and owner/repo#9 references
    "$": "<span>$</span>",  # GitHub's documented literal dollar: no $...$ math
}
_TRANSLATION = str.maketrans({**_ESCAPES, "\n": " ", "\r": " "})
_GH_REFERENCE = re.compile(r"(?i)(?<![0-9a-z])(gh-)(?=[0-9])")


def escape_markdown(value: object) -> str:
    """Text that renders literally in GFM, also inside a table cell: one line, no markup, no mentions,
    no issue references, no math (see the module docstring)."""
    return _GH_REFERENCE.sub("\\1" + ZERO_WIDTH_SPACE, str(value).translate(_TRANSLATION))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = template_environment("markdown", autoescape=False, keep_trailing_newline=True)
    env.filters["md"] = escape_markdown
    return env


class _ImageLinks:
    """Relative links to PNG files for the plots a Markdown rendering uses; writes only those files."""

    def __init__(self, plots: PlotStore, image_dir: Path | None, prefix: str) -> None:
        self._plots, self._dir, self._prefix = plots, image_dir, prefix.strip("/")
        self.used: dict[str, str] = {}

    def __call__(self, key: str) -> str | None:
        if self._dir is None or self._plots.png(key) is None:
            return None
        name = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16] + ".png"
        self.used[key] = name
        return f"{quote(self._prefix)}/{name}" if self._prefix else name

    def write(self) -> None:
        """Write the used images into the image folder; a symlink planted as the folder or as an
        image name is replaced, never written through (`render.output.OutputFolder`)."""
        if self._dir is None or not self.used:
            return
        with OutputFolder(self._dir.parent) as parent, parent.subfolder(self._dir.name) as images:
            for key, name in self.used.items():
                images.write(name, self._plots.png(key) or b"")


@dataclass(frozen=True)
class _Cut:
    """How much of the report one Markdown attempt shows (None: everything).

    max_rows: long secondary tables (layers, coverage, suppressed, input problems);
    max_files: files listed per group of identical input notices; problems: show the per-run input
    problems tables; max_notices / max_training: groups of input notices / findings about the training
    kept in each findings table (the least severe go first; the training findings go last of all).
    """

    max_rows: int | None = None
    max_files: int | None = None
    problems: bool = True
    max_notices: int | None = None
    max_training: int | None = None


# tried in turn; after the last, input notices are cut, then (only if still too long) training findings
_LEVELS = (_Cut(), _Cut(max_rows=50), _Cut(max_rows=10), _Cut(max_rows=10, problems=False),
           _Cut(max_rows=10, problems=False, max_files=50), _Cut(max_rows=10, problems=False, max_files=10))


def _block(views: list[dict], run_paths: dict[str, str], cut: _Cut) -> dict:
    """One findings table: findings about the training first, then the input notices, grouped."""
    training, notices = split_findings(views)
    groups = group_notices(notices, run_paths)
    kept_training = training if cut.max_training is None else training[: max(cut.max_training, 0)]
    kept_groups = groups if cut.max_notices is None else groups[: max(cut.max_notices, 0)]
    files_cut = 0
    for group in kept_groups:
        shown = group["files"] if cut.max_files is None else group["files"][: cut.max_files]
        group["files_cut"] = group["count"] - len(shown)
        files_cut += group["files_cut"]
        by_run: dict[str, list[str]] = {}
        for run, file in shown:
            by_run.setdefault(run, []).extend([file] if file else [])  # "": the run folder itself
        group["by_run"] = list(by_run.items())
    return {"training": kept_training, "groups": kept_groups, "training_cut": len(training) - len(kept_training),
            "notices_cut": sum(g["count"] for g in groups[len(kept_groups):]), "files_cut": files_cut,
            "empty": not views}


def _pr_view(ctx: dict, cut: _Cut) -> dict:
    """What the PR comment shows of the context: tables split and grouped, and what was cut."""
    paths = {run["name"]: run["path"] for run in ctx["runs"]}
    b = ctx["baseline"]
    blocks = {"all": _block(ctx["findings"], paths, cut)}
    if b:
        blocks.update(new=_block(b["new"], paths, cut), persisting=_block(b["persisting"], paths, cut),
                      resolved=_block(b["resolved"], paths, cut))
    shown = [blocks["new"], blocks["persisting"]] if b else [blocks["all"]]
    counted = shown + ([blocks["resolved"]] if b else [])
    suggestions: list[str] = []
    for block in shown:
        for group in block["groups"]:
            if group["suggestion"] and group["suggestion"] not in suggestions:
                suggestions.append(group["suggestion"])
    training_cut = sum(block["training_cut"] for block in counted)
    notices_cut = sum(block["notices_cut"] for block in counted)
    files_cut = sum(block["files_cut"] for block in counted)
    problems_cut = not cut.problems and any(run["problems"]["rows"] for run in ctx["runs"])
    cuts = []
    if training_cut:
        cuts.append(f"{training_cut} less severe finding{'s' if training_cut != 1 else ''} about the training")
    if notices_cut:
        cuts.append(f"{notices_cut} input notice{'s' if notices_cut != 1 else ''} (damaged or unreadable files)")
    if files_cut:
        cuts.append(f"{files_cut} file name{'s' if files_cut != 1 else ''} from the input-notice lists")
    if problems_cut:
        cuts.append("the per-run input problems tables")
    return {**blocks, "details": [v for block in shown for v in block["training"]], "suggestions": suggestions,
            "problems": cut.problems, "cuts": cuts, "training_cut": training_cut, "notices_cut": notices_cut,
            "rows_capped": cut.max_rows is not None}


def render_markdown(report: dict, image_dir: Path | None, image_prefix: str = "report_files", *,
                    plots: PlotStore | None = None) -> str:
    """The report as GFM text under MAX_CHARS; plot PNGs go to image_dir (None: no images)."""
    if plots is None:
        plots = PlotStore(report)
    if image_dir is not None:
        plots.prepare(build_context(report)["plot_order"])
    template = _environment().get_template("report.md.j2")
    contexts: dict[int | None, dict] = {}

    def attempt(cut: _Cut) -> tuple[str, _ImageLinks]:
        if cut.max_rows not in contexts:
            contexts[cut.max_rows] = build_context(report, Limits(max_rows=cut.max_rows, max_text=TEXT_LIMIT))
        ctx = contexts[cut.max_rows]
        links = _ImageLinks(plots, Path(image_dir) if image_dir is not None else None, image_prefix)
        text = template.render(ctx=ctx, pr=_pr_view(ctx, cut), plot_src=links, marker=MARKER)
        return text, links

    text, links = _fit(attempt, len(report.get("findings") or []) if isinstance(report.get("findings"), list) else 0)
    links.write()
    return text


def _fits(text: str) -> bool:
    return len(text) < MAX_CHARS


def _largest(attempt, make, high: int):
    """The attempt keeping the most items (0..high) that fits, or None when even 0 does not."""
    best = attempt(make(0))
    if not _fits(best[0]):
        return None
    low = 0  # invariant: keeping `low` items fits
    while low < high:
        middle = (low + high + 1) // 2
        candidate = attempt(make(middle))
        if _fits(candidate[0]):
            low, best = middle, candidate
        else:
            high = middle - 1
    return best


def _fit(attempt, total_findings: int) -> tuple[str, _ImageLinks]:
    """The most complete rendering that fits: cap tables first, then cut input notices (least severe
    first), and only then findings about the training (least severe first)."""
    for cut in _LEVELS:
        result = attempt(cut)
        if _fits(result[0]):
            return result
    last = _LEVELS[-1]
    result = _largest(attempt, lambda n: dataclasses.replace(last, max_notices=n), total_findings)
    if result is not None:
        return result
    no_notices = dataclasses.replace(last, max_notices=0)
    result = _largest(attempt, lambda n: dataclasses.replace(no_notices, max_training=n), total_findings)
    if result is not None:
        return result
    text, links = attempt(dataclasses.replace(no_notices, max_training=0))
    note = "\n\n**Report cut here: it does not fit in a GitHub comment; see report.html.**\n"
    cut = text[: MAX_CHARS - len(note) - 1]
    return cut[: cut.rfind("\n") + 1] + note, links
