"""GitHub-flavoured Markdown report, sized for a pull-request comment.

Always shorter than GitHub's 65,536-character comment limit: long tables are capped first, then the
least severe findings are cut (and the cut is stated). Images are written as PNG files beside the
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

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import jinja2

from report_gen.render.context import Limits, build_context, template_root
from report_gen.render.output import OutputFolder
from report_gen.render.plots import PlotStore

MAX_CHARS = 65_536
MARKER = "<!-- report_gen:report -->"
ROW_CAPS = (None, 50, 10)  # long secondary tables, tried in turn before findings are cut
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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root() / "markdown")),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
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


def render_markdown(report: dict, image_dir: Path | None, image_prefix: str = "report_files", *,
                    plots: PlotStore | None = None) -> str:
    """The report as GFM text under MAX_CHARS; plot PNGs go to image_dir (None: no images)."""
    if plots is None:
        plots = PlotStore(report)
    if image_dir is not None:
        plots.prepare(build_context(report)["plot_order"])
    template = _environment().get_template("report.md.j2")

    def attempt(limits: Limits) -> tuple[str, _ImageLinks]:
        links = _ImageLinks(plots, Path(image_dir) if image_dir is not None else None, image_prefix)
        return template.render(ctx=build_context(report, limits), plot_src=links, marker=MARKER), links

    text, links = _fit(attempt, len(report.get("findings") or []))
    links.write()
    return text


def _fits(text: str) -> bool:
    return len(text) < MAX_CHARS


def _fit(attempt, total_findings: int) -> tuple[str, _ImageLinks]:
    """The most complete rendering that fits: cap tables first, then keep the most severe findings."""
    for max_rows in ROW_CAPS:
        result = attempt(Limits(max_rows=max_rows, max_text=TEXT_LIMIT))
        if _fits(result[0]):
            return result
        smallest = attempt(Limits(max_findings=0, max_rows=max_rows, max_text=TEXT_LIMIT))
        if not _fits(smallest[0]):
            continue
        low, high, best = 0, total_findings, smallest  # invariant: keeping `low` findings fits
        while low < high:
            middle = (low + high + 1) // 2
            candidate = attempt(Limits(max_findings=middle, max_rows=max_rows, max_text=TEXT_LIMIT))
            if _fits(candidate[0]):
                low, best = middle, candidate
            else:
                high = middle - 1
        return best
    text, links = smallest
    note = "\n\n**Report cut here: it does not fit in a GitHub comment; see report.html.**\n"
    cut = text[: MAX_CHARS - len(note) - 1]
    return cut[: cut.rfind("\n") + 1] + note, links
