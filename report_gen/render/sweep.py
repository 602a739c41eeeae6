"""The sweep index: index.html (+ pre-rendered sorted pages), index.md and their plot, from sweep.json.

Reads only the sweep dict (sweep.py's `build_index`); decides no threshold: verdicts, counts and
hparam associations are sweep.py's, this module sorts, pages, rounds and escapes.

* **Sorting without JavaScript**: every column header links to a pre-rendered page of the table in
  that order (`index/<column>-<asc|desc>-<page>.html`); nothing on any page runs a script, and the
  pages obey the report's Content-Security-Policy (no request leaves the file).
* **Size**: pages of `PAGE_ROWS`; the default order (errors first) has every page, the other orders
  their first `SORTED_PAGES` pages (the first PAGE_ROWS × SORTED_PAGES runs of that order, the rest
  reachable by the opposite order, the default order or sweep.json), which every page says.
* **Markdown** fits a GitHub comment (`render.markdown.MAX_CHARS`): the runs table keeps the most
  severe runs that fit and states how many it left out; the runs that could not be diagnosed and
  the recurring findings come first.
"""
from __future__ import annotations

import base64
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from markupsafe import escape

from report_gen.render.output import OutputFolder

from report_gen.render.context import VERDICT_LABELS, clean_text, format_duration, format_value

PAGE_ROWS = 200
SORTED_PAGES = 5
MAX_HPARAM_COLUMNS = 12
MAX_PLOT_PANELS = 4
MAX_CATEGORIES = 12
MD_FAILED_CAP = 50
IMAGE_DIR = "index_files"
PLOT_FILE = "metric_vs_hparams.png"
MARKER = "<!-- report_gen:sweep -->"
VERDICT_RANK = {"failed": 0, "fail": 1, "warn": 2, "unknown": 3, "pass": 4}
SWEEP_LABELS = {**VERDICT_LABELS, "unknown": "UNKNOWN", "failed": "NOT DIAGNOSED"}
VERDICT_COLOURS = {"failed": "#000000", "fail": "#D55E00", "warn": "#E69F00", "unknown": "#999999", "pass": "#009E73"}


@dataclass(frozen=True)
class Column:
    key: str  # file-name safe
    title: str
    value: Callable[[dict], Any]  # sort value (None sorts last in both directions)
    text: Callable[[dict], str]
    natural: str  # the first direction a header link offers: "asc" or "desc"
    numeric: bool = False


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _curve_value(row: dict, which: str, part: str) -> float | None:
    c = row.get(which) or {}
    value = _num(c.get(part))
    if value is None and part == "final" and c.get("nonfinite"):
        return math.inf if which == "loss" else -math.inf  # a NaN loss sorts as the worst loss
    return value


def _curve_text(row: dict, which: str, part: str) -> str:
    c = row.get(which) or {}
    if not c:
        return ""
    value = _num(c.get(part))
    if value is None:
        return "non-finite" if part == "final" and c.get("nonfinite") else ""
    return format_value(value)


def _verdict_key(row: dict) -> str:
    return "failed" if row.get("status") != "ok" else str(row.get("verdict") or "unknown")


def _main_text(row: dict, limit: int = 160) -> str:
    if row.get("status") != "ok":
        return clean_text(row.get("reason") or "", limit)
    m = row.get("main_finding")
    if not m:
        return ""
    return clean_text(f"{m['code']} {m.get('name', '')}: {m.get('message', '')}", limit)


def _hp_sort(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return (1, str(v))
    if isinstance(v, (int, float)):
        return (0, float(v)) if math.isfinite(v) else (2, str(v))
    return (1, str(v))


def columns(index: dict) -> tuple[list[Column], int]:
    """The table's columns (run facts, then the varying hparams) and how many hparams did not fit."""
    cols = [
        Column("name", "run", lambda r: r["name"], lambda r: clean_text(r["name"], 200), "asc"),
        Column("verdict", "verdict", lambda r: VERDICT_RANK.get(_verdict_key(r), 3),
               lambda r: SWEEP_LABELS.get(_verdict_key(r), "?"), "asc"),
        Column("errors", "errors", lambda r: (r.get("counts") or {}).get("error"),
               lambda r: str((r.get("counts") or {}).get("error", "")), "desc", True),
        Column("warnings", "warnings", lambda r: (r.get("counts") or {}).get("warning"),
               lambda r: str((r.get("counts") or {}).get("warning", "")), "desc", True),
        Column("finding", "main finding", lambda r: _finding_key(r), _main_text, "asc"),
        Column("loss-best", "best loss", lambda r: _curve_value(r, "loss", "best"),
               lambda r: _curve_text(r, "loss", "best"), "asc", True),
        Column("loss-final", "final loss", lambda r: _curve_value(r, "loss", "final"),
               lambda r: _curve_text(r, "loss", "final"), "asc", True),
        Column("metric-best", "best accuracy", lambda r: _curve_value(r, "metric", "best"),
               lambda r: _curve_text(r, "metric", "best"), "desc", True),
        Column("metric-final", "final accuracy", lambda r: _curve_value(r, "metric", "final"),
               lambda r: _curve_text(r, "metric", "final"), "desc", True),
        Column("steps", "last step", lambda r: (r.get("steps") or [None, None])[1],
               lambda r: format_value((r.get("steps") or [None, None])[1]) if r.get("steps") else "", "desc", True),
    ]
    varying = list(index.get("hparams", {}).get("varying", []))
    for i, name in enumerate(varying[:MAX_HPARAM_COLUMNS]):
        cols.append(Column(f"hp{i + 1}", clean_text(name, 60), (lambda r, n=name: _hp_sort(r.get("hparams", {}).get(n))),
                           (lambda r, n=name: format_value(r["hparams"][n]) if n in r.get("hparams", {}) else ""),
                           "asc", True))
    return cols, max(len(varying) - MAX_HPARAM_COLUMNS, 0)


def _finding_key(row: dict) -> Any:
    if row.get("status") != "ok":
        return (0, "")
    m = row.get("main_finding")
    if not m:
        return None
    return ({"error": 1, "warning": 2, "info": 3}.get(m.get("severity"), 4), m.get("code", ""))


def default_order(rows: list[dict]) -> list[dict]:
    """Errors first: not diagnosed, fail, warn, unknown, pass; then most errors, warnings; then name."""
    def key(r: dict):
        c = r.get("counts") or {}
        return (VERDICT_RANK.get(_verdict_key(r), 3), -(c.get("error") or 0), -(c.get("warning") or 0), r["name"])
    return sorted(rows, key=key)


def sort_rows(rows: list[dict], col: Column, direction: str) -> list[dict]:
    """Rows by one column; rows without a value last in both directions; ties by the default order."""
    base = default_order(rows)
    present = [r for r in base if col.value(r) is not None]
    missing = [r for r in base if col.value(r) is None]
    return sorted(present, key=col.value, reverse=direction == "desc") + missing


def page_file(col: str, direction: str, page: int) -> str:
    return f"{col}-{direction}-{page}.html"


# ------------------------------------------------------------------------------------ view model


def association_text(a: dict | None) -> str:
    """'all with lr >= 0.1' when the condition separates exactly, else the shares it holds for."""
    if not a:
        return ""
    op = "=" if a["op"] == "==" else a["op"]
    cond = f"{clean_text(a['hparam'], 60)} {op} {format_value(a['value'])}"
    if a.get("exact"):
        return f"all with {cond}"
    return (f"{a['flagged_with']} of these {a['flagged']} have {cond} "
            f"(vs {a['others_with']} of the {a['others']} others; p = {a['p_value']:.2g}, "
            f"{a['conditions_tried']} conditions tried)")


def _recurring(index: dict) -> list[dict]:
    out = []
    for g in index.get("recurring", []):
        out.append({"code": clean_text(g["code"], 20), "name": clean_text(g["name"], 80), "severity": g["severity"],
                    "runs": g["runs"], "of": g["of"], "association": association_text(g.get("association")),
                    "text": f"{clean_text(g['name'], 80)} in {g['runs']} of {g['of']} runs"})
    return out


def build_sweep_context(index: dict) -> dict[str, Any]:
    summary = index.get("summary", {})
    rows = index.get("runs", [])
    cols, hp_cut = columns(index)
    verdict = summary.get("verdict", "unknown")
    counts = summary.get("counts", {})
    verdicts = summary.get("verdicts", {})
    parts = [f"{verdicts.get(v, 0)} {v}" for v in ("fail", "warn", "pass", "unknown") if verdicts.get(v)]
    if summary.get("failed"):
        parts.append(f"{summary['failed']} not diagnosed")
    return {
        "verdict": verdict,
        "verdict_label": SWEEP_LABELS.get(verdict, verdict.upper()),
        "runs": summary.get("runs", len(rows)),
        "breakdown": ", ".join(parts) or "no runs",
        "counts": [(s, counts.get(s, 0)) for s in ("error", "warning", "info")],
        "interrupted": bool(summary.get("interrupted")),
        "generator": f"{index.get('generator', {}).get('name', 'report_gen')} {index.get('generator', {}).get('version', '')}".strip(),
        "created": clean_text(index.get("created", ""), 40),
        "inputs": [clean_text(i, 300) for i in index.get("inputs", [])],
        "failed": [{"name": clean_text(r["name"], 200), "reason": clean_text(r.get("reason") or "", 400),
                    "path": clean_text(r.get("path") or "", 300)} for r in default_order(rows) if r.get("status") != "ok"],
        "recurring": _recurring(index),
        "constant": [(clean_text(k, 60), format_value(v)) for k, v in index.get("hparams", {}).get("constant", {}).items()],
        "hparams_cut": hp_cut,
        "columns": cols,
        "timing": index.get("timing", {}),
    }


def _cells(row: dict, cols: list[Column]) -> list[tuple[str, str]]:
    """(text, css class) per column; the verdict cell is styled by the verdict."""
    return [(c.text(row), f"v-{_verdict_key(row)}" if c.key == "verdict" else "num" if c.numeric else "") for c in cols]


class _CellCache:
    """Each row's cells computed (and for HTML escaped) once, however many sorted pages show it."""

    def __init__(self, cols: list[Column], *, html: bool = False) -> None:
        self.cols, self.html, self._cells = cols, html, {}

    def __call__(self, row: dict) -> list[tuple[str, str]]:
        key = id(row)
        if key not in self._cells:
            cells = _cells(row, self.cols)
            self._cells[key] = [(escape(text), cls) for text, cls in cells] if self.html else cells
        return self._cells[key]


def _table(rows: list[dict], cols: list[Column], *, base: str, order: tuple[str, str], page: int, pages: int,
           rendered_pages: int, total: int, cells: Callable[[dict], list] | None = None) -> dict[str, Any]:
    """One page of the table: header links to the other orders, the rows, the pager."""
    col_key, direction = order
    headers = []
    for c in cols:
        if c.key == col_key:
            nxt = "desc" if direction == "asc" else "asc"
            mark = " ▲" if direction == "asc" else " ▼"
        else:
            nxt, mark = c.natural, ""
        headers.append({"title": c.title, "href": f"{base}index/{page_file(c.key, nxt, 1)}", "mark": mark,
                        "numeric": c.numeric})
    start = (page - 1) * PAGE_ROWS
    cells = cells or (lambda r: _cells(r, cols))
    body = []
    for r in rows[start:start + PAGE_ROWS]:
        link = r.get("report")
        body.append((f"{base}{quote(link)}" if link else None, cells(r)))
    pager = [{"n": n, "href": f"{base}index/{page_file(col_key, direction, n)}", "current": n == page}
             for n in range(1, rendered_pages + 1)]
    return {"headers": headers, "rows": body, "pager": pager, "first": start + 1 if body else 0,
            "last": start + len(body), "total": total, "pages": pages, "rendered_pages": rendered_pages,
            "rendered_rows": rendered_pages * PAGE_ROWS,
            "order_title": next(c.title for c in cols if c.key == col_key), "direction": direction,
            "is_default": order == ("verdict", "asc")}


# ------------------------------------------------------------------------------------------ plot


def plot_choice(index: dict) -> tuple[str, str, list[str]] | None:
    """(row key, label, hparams) for the metric plot: final accuracy when runs log it, else final loss;
    against the varying hparams, those with an association first."""
    rows = [r for r in index.get("runs", []) if r.get("status") == "ok"]
    varying = list(index.get("hparams", {}).get("varying", []))
    if not rows or not varying:
        return None
    for which in ("metric", "loss"):
        series = [r[which]["series"] for r in rows if r.get(which) and _num(r[which].get("final")) is not None]
        if series:
            label = f"final {max(set(series), key=series.count)}"
            break
    else:
        return None
    associated = [g["association"]["hparam"] for g in index.get("recurring", []) if g.get("association")]
    ordered = list(dict.fromkeys([h for h in associated if h in varying] + varying))
    return which, label, ordered[:MAX_PLOT_PANELS]


def draw_plot(index: dict) -> tuple[bytes, str] | None:
    """PNG of the metric against each varying hparam (points coloured by verdict) and its caption."""
    choice = plot_choice(index)
    if choice is None:
        return None
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from report_gen.render.plots import STYLE

    which, label, hps = choice
    rows = [r for r in index["runs"] if r.get("status") == "ok"]
    unplotted = sum(1 for r in rows if not r.get(which) or _num(r[which].get("final")) is None)
    with rc_context(STYLE):
        fig = Figure(figsize=(3.0 * len(hps), 2.6), dpi=90)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.12 if len(hps) == 1 else 0.07, right=0.98, top=0.86, bottom=0.2, wspace=0.3)
        for i, hp in enumerate(hps):
            ax = fig.add_subplot(1, len(hps), i + 1)
            pts = [(r["hparams"][hp], _num(r[which].get("final")), _verdict_key(r)) for r in rows
                   if hp in r.get("hparams", {}) and r.get(which) and _num(r[which].get("final")) is not None]
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x, _, _ in pts)
            if numeric:
                pts = [(float(x), y, v) for x, y, v in pts]
                if pts and min(x for x, _, _ in pts) > 0 and max(x for x, _, _ in pts) / min(x for x, _, _ in pts) >= 100:
                    ax.set_xscale("log")
            else:
                cats = sorted({str(x) for x, _, _ in pts})[:MAX_CATEGORIES]
                pos = {c: j for j, c in enumerate(cats)}
                pts = [(float(pos[str(x)]), y, v) for x, y, v in pts if str(x) in pos]
                ax.set_xticks(range(len(cats)))
                ax.set_xticklabels([clean_text(c, 12) for c in cats], rotation=30, ha="right")
            for verdict in ("pass", "unknown", "warn", "fail"):
                sel = [(x, y) for x, y, v in pts if v == verdict]
                if sel:
                    ax.scatter([x for x, _ in sel], [y for _, y in sel], s=10, alpha=0.7,
                               color=VERDICT_COLOURS[verdict], label=SWEEP_LABELS[verdict].lower())
            ax.set_xlabel(clean_text(hp, 40))
            if i == 0:
                ax.set_ylabel(label)
        handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
        if handles:
            fig.legend(handles, labels, loc="upper right", ncol=4)
        fig.suptitle(f"{label} against the hparams that vary", x=0.02, ha="left", fontsize=9)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    caption = f"{label} of each run against {', '.join(clean_text(h, 40) for h in hps)}"
    if unplotted:
        caption += f"; {unplotted} run{'s' if unplotted != 1 else ''} without a finite value not shown"
    return buffer.getvalue(), caption


# ---------------------------------------------------------------------------------------- writers


def render_sweep(index: dict, out: "str | Path | OutputFolder") -> dict[str, Path]:
    """Write index.html, the sorted pages under index/, index.md and its plot; return {format: path}.
    Every file goes through render.output.OutputFolder (no planted symlink is followed)."""
    if not isinstance(out, OutputFolder):
        with OutputFolder(out) as folder:
            return render_sweep(index, folder)
    ctx = build_sweep_context(index)
    plot = draw_plot(index)
    with out.subfolder("index") as pages:
        html = _write_html(index, ctx, plot, out, pages)
    md = out.write_text("index.md", render_sweep_markdown(index, ctx, f"{IMAGE_DIR}/{PLOT_FILE}" if plot else None))
    if plot:
        with out.subfolder(IMAGE_DIR) as images:
            images.write(PLOT_FILE, plot[0])
    return {"html": html, "md": md}


def _write_html(index: dict, ctx: dict, plot: tuple[bytes, str] | None, out: OutputFolder,
                pages_folder: OutputFolder) -> Path:
    from report_gen.render.html import _environment

    template = _environment().get_template("sweep.html.j2")
    rows = index.get("runs", [])
    total = len(rows)
    pages = max(math.ceil(total / PAGE_ROWS), 1)
    figure = None if plot is None else {"src": "data:image/png;base64," + base64.b64encode(plot[0]).decode("ascii"),
                                        "caption": plot[1]}
    first_page = None
    cells = _CellCache(ctx["columns"], html=True)
    for col in ctx["columns"]:
        for direction in ("asc", "desc"):
            ordered = default_order(rows) if (col.key, direction) == ("verdict", "asc") else sort_rows(rows, col, direction)
            rendered = pages if (col.key, direction) == ("verdict", "asc") else min(pages, SORTED_PAGES)
            for page in range(1, rendered + 1):
                table = _table(ordered, ctx["columns"], base="../", order=(col.key, direction), page=page,
                               pages=pages, rendered_pages=rendered, total=total, cells=cells)
                pages_folder.write_text(page_file(col.key, direction, page),
                                        template.render(ctx=ctx, table=table, full=False, figure=None, base="../"))
            if (col.key, direction) == ("verdict", "asc"):
                first_page = _table(ordered, ctx["columns"], base="", order=("verdict", "asc"), page=1,
                                    pages=pages, rendered_pages=rendered, total=total, cells=cells)
    return out.write_text("index.html", template.render(ctx=ctx, table=first_page, full=True, figure=figure, base=""))


def render_sweep_markdown(index: dict, ctx: dict | None = None, plot_link: str | None = None) -> str:
    """index.md under the GitHub comment limit: as many runs (errors first) as fit, the cut stated."""
    from report_gen.render.markdown import MAX_CHARS, _environment

    ctx = ctx or build_sweep_context(index)
    template = _environment().get_template("sweep.md.j2")
    ordered = default_order(index.get("runs", []))
    cols = ctx["columns"]

    cells = _CellCache(cols)

    def attempt(n_rows: int, n_failed: int) -> str:
        rows = [(r.get("report"), [text for text, _ in cells(r)]) for r in ordered[:n_rows]]
        return template.render(ctx=ctx, columns=cols, rows=rows, shown=n_rows, total=len(ordered),
                               failed=ctx["failed"][:n_failed], failed_cut=len(ctx["failed"]) - n_failed,
                               plot_link=plot_link, marker=MARKER)

    n_failed = min(len(ctx["failed"]), MD_FAILED_CAP)
    text = attempt(len(ordered), n_failed)
    if len(text) < MAX_CHARS:
        return text
    while n_failed > 0 and len(attempt(0, n_failed)) >= MAX_CHARS:
        n_failed //= 2
    low, high = 0, len(ordered)  # invariant: `low` rows fit
    while low < high:
        mid = (low + high + 1) // 2
        if len(attempt(mid, n_failed)) < MAX_CHARS:
            low = mid
        else:
            high = mid - 1
    return attempt(low, n_failed)


# --------------------------------------------------------------------------------------- terminal


class SweepProgress:
    """Progress on stderr: a live bar on a terminal (done, failed, ETA), else a line every tenth of
    the sweep or minute. Run names are shown through clean_text and never parsed as markup."""

    def __init__(self, total: int, *, quiet: bool = False, stream=None) -> None:
        self.total, self.stream = total, stream or sys.stderr
        self.live = None
        self._last_line = 0.0
        self._step = max(total // 10, 1)
        self._t0 = time.monotonic()
        self.quiet = quiet
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self._task = self.live.add_task("diagnosing", total=total)
            self.live.start()

    def __call__(self, done: int, failed: int, total: int, name: str) -> None:
        if self.quiet:
            return
        if self.live is not None:
            from rich.markup import escape

            self.live.update(self._task, completed=done,
                             description=f"{failed} failed · last: {escape(clean_text(name, 40))}")
            return
        now = time.monotonic()
        if done == total or done % self._step == 0 or now - self._last_line >= 60:
            self._last_line = now
            elapsed = now - self._t0
            eta = elapsed / done * (total - done) if done else math.nan
            print(f"report-gen: {done}/{total} runs done, {failed} failed, ETA {format_duration(eta)}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def print_sweep_summary(index: dict, written: dict | None = None, *, quiet: bool = False, file=None) -> None:
    """The sweep's verdict line, then (unless quiet) the recurring findings and where the index is."""
    from rich.console import Console
    from rich.text import Text

    from report_gen.render.terminal import _STYLES

    ctx = build_sweep_context(index)
    console = Console(file=file, highlight=False, soft_wrap=True)
    line = Text(ctx["verdict_label"], style=_STYLES.get(ctx["verdict"], "bold"))
    line.append(f"  {ctx['runs']} runs: {ctx['breakdown']}")
    console.print(line)
    if quiet:
        return
    for g in ctx["recurring"][:8]:
        text = Text(f"  {g['severity']:<8}", style=_STYLES.get(g["severity"], ""))
        text.append(f"{g['code']} {g['text']}" + (f", {g['association']}" if g["association"] else ""))
        console.print(text)
    if len(ctx["recurring"]) > 8:
        console.print(Text(f"  … and {len(ctx['recurring']) - 8} more findings (see the index)", style="dim"))
    for f in ctx["failed"][:5]:
        console.print(Text(f"  not diagnosed: {f['name']}: {f['reason']}", style="red"))
    if len(ctx["failed"]) > 5:
        console.print(Text(f"  … and {len(ctx['failed']) - 5} more not diagnosed", style="dim"))
