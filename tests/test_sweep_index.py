"""The sweep index from rows alone: hparam associations, sweep.json totals, the HTML pages sorted
without JavaScript, the Markdown that fits a PR comment, the terminal, the exit code."""
import io
import itertools
import json
import math
import random
import re

import pytest

from report_gen.render.markdown import MAX_CHARS
from report_gen.render.sweep import SORTED_PAGES, SweepProgress, print_sweep_summary, render_sweep, render_sweep_markdown
from report_gen.sweep import ASSOCIATION_ALPHA, associate, build_index, fisher_greater, sweep_exit_code


def row(name, verdict="pass", *, codes=(), hparams=None, loss=None, status="ok", reason=None, acc=None):
    sev = {"fail": "error", "warn": "warning"}.get(verdict, "info")
    findings = [{"code": c, "name": f"rule-{c}", "category": "x", "severity": sev, "count": 1} for c in codes]
    counts = {"error": len(codes) if verdict == "fail" else 0, "warning": len(codes) if verdict == "warn" else 0,
              "info": 0}
    main = None if not codes else {"code": codes[0], "name": f"rule-{codes[0]}", "severity": sev,
                                   "subject": "s", "message": f"message of {codes[0]}"}
    return {"name": name, "path": f"s3://b/{name}", "status": status, "reason": reason,
            "report": None if status != "ok" else f"runs/{name}-x/report.html",
            "verdict": None if status != "ok" else verdict, "counts": None if status != "ok" else counts,
            "main_finding": main, "findings": findings,
            "loss": None if loss is None else {"series": "val_loss", "tag": "val/loss", "best": loss,
                                                "final": loss if math.isfinite(loss) else None,
                                                "nonfinite": not math.isfinite(loss), "higher_is_better": False},
            "metric": None if acc is None else {"series": "val_acc", "tag": "val/acc", "best": acc, "final": acc,
                                                "nonfinite": False, "higher_is_better": True},
            "steps": [0, 1000], "event_files": 1, "checkpoints": 2, "problems": 0, "hparams": hparams or {}}


def big_sweep(n, seed=0):
    """n runs over lr x batch x optimizer; dead activations (A101, error) exactly when lr >= 0.1; a
    warning (U102) in a random tenth of the runs; 3 runs not diagnosed."""
    rng = random.Random(seed)
    grid = list(itertools.product([0.001, 0.01, 0.03, 0.1, 0.3], [32, 64, 128], ["adam", "sgd"]))
    rows = []
    for i in range(n):
        lr, bs, opt = grid[i % len(grid)]
        hp = {"lr": lr, "batch_size": bs, "optimizer": opt, "seed": 1}
        if i < 3:
            rows.append(row(f"sweep/run-{i:05d}", status="failed", reason="the worker process died (killed by SIGKILL)"))
        elif lr >= 0.1:
            rows.append(row(f"sweep/run-{i:05d}", "fail", codes=["A101"], hparams=hp, loss=rng.uniform(1, 3), acc=0.1))
        elif rng.random() < 0.1:
            rows.append(row(f"sweep/run-{i:05d}", "warn", codes=["U102"], hparams=hp, loss=rng.uniform(0, 1), acc=0.8))
        else:
            rows.append(row(f"sweep/run-{i:05d}", hparams=hp, loss=rng.uniform(0, 1), acc=rng.uniform(0.7, 0.9)))
    return rows


# ------------------------------------------------------------------------------ associations


def test_fisher_matches_the_hypergeometric_sum():
    for total, flagged, condition, a in [(10, 4, 5, 3), (30, 6, 6, 6), (412, 37, 40, 30), (8, 2, 2, 0)]:
        brute = sum(math.comb(flagged, x) * math.comb(total - flagged, condition - x)
                    for x in range(a, min(flagged, condition) + 1)) / math.comb(total, condition)
        assert fisher_greater(a, flagged, condition, total) == pytest.approx(brute, rel=1e-9)


def test_an_exact_threshold_is_stated_with_the_tightest_bound():
    rows = [r for r in big_sweep(412) if r["status"] == "ok"]
    a = associate([r["hparams"] for r in rows], ["A101" in [f["code"] for f in r["findings"]] for r in rows],
                  ["batch_size", "lr", "optimizer", "seed"])
    assert a["exact"] and (a["hparam"], a["op"], a["value"]) == ("lr", ">=", 0.1)
    assert a["flagged_with"] == a["flagged"] and a["others_with"] == 0
    assert a["p_value"] < ASSOCIATION_ALPHA


def test_a_partial_association_states_its_shares():
    hp = [{"lr": lr} for lr in [0.001] * 150 + [0.01] * 150 + [0.1] * 100]
    flags = [False] * 300 + [True] * 80 + [False] * 20
    flags[5] = flags[160] = True  # two flagged runs at low lr: no exact threshold
    a = associate(hp, flags, ["lr"])
    assert not a["exact"]
    assert (a["op"], a["value"], a["flagged_with"], a["flagged"], a["others_with"]) == (">=", 0.1, 80, 82, 20)


def test_nothing_is_claimed_from_a_handful_of_runs():
    hp = [{"lr": 0.1}, {"lr": 0.1}, {"lr": 0.001}, {"lr": 0.001}]
    assert associate(hp, [True, True, False, False], ["lr"]) is None  # exact, but 1 in 6 by chance


def test_no_association_when_flags_ignore_the_hparam():
    rng = random.Random(3)
    hp = [{"lr": rng.choice([0.001, 0.01, 0.1]), "opt": rng.choice(["a", "b"])} for _ in range(300)]
    flags = [rng.random() < 0.2 for _ in range(300)]
    assert associate(hp, flags, ["lr", "opt"]) is None


def test_a_categorical_hparam_is_matched_by_equality():
    hp = [{"optimizer": o} for o in ["sgd"] * 20 + ["adam"] * 30]
    a = associate(hp, [True] * 20 + [False] * 30, ["optimizer"])
    assert (a["op"], a["value"], a["exact"]) == ("==", "sgd", True)


# ---------------------------------------------------------------------------------- sweep.json


def test_index_totals_and_recurring_findings():
    index = build_index(big_sweep(412))
    s = index["summary"]
    assert (s["runs"], s["failed"], s["diagnosed"]) == (412, 3, 409)
    assert s["verdict"] == "fail" and sum(s["verdicts"].values()) == 409
    assert index["hparams"]["varying"] == ["batch_size", "lr", "optimizer"]
    assert index["hparams"]["constant"] == {"seed": 1}
    first = index["recurring"][0]
    assert first["code"] == "A101" and first["of"] == 409 and first["association"]["exact"]
    assert [r["name"] for r in index["runs"]] == sorted(r["name"] for r in index["runs"])
    json.dumps(index, allow_nan=False)


def test_exit_code_over_the_sweep():
    healthy = build_index([row("a"), row("b")])
    warned = build_index([row("a"), row("b", "warn", codes=["U102"])])
    failed = build_index([row("a"), row("b", status="failed", reason="x")])
    assert [sweep_exit_code(healthy, f) for f in ("error", "warning")] == [0, 0]
    assert [sweep_exit_code(warned, f) for f in ("error", "warning", "never")] == [0, 1, 0]
    assert [sweep_exit_code(failed, f) for f in ("error", "never")] == [1, 0]  # an unread run is no pass
    unknown = build_index([row("a"), row("b", "unknown")])
    assert [sweep_exit_code(unknown, "error"), sweep_exit_code(unknown, "never", fail_on_unknown=True)] == [0, 1]


# ------------------------------------------------------------------------------------- HTML


def _cells(html: str) -> list[list[str]]:
    body = html.split("<tbody>")[-1].split("</tbody>")[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", body)]


def _first(rows, verdict):
    return next(r for r in rows if r["verdict"] == verdict)


def test_html_pages_sort_every_column_without_scripts(tmp_path, monkeypatch):
    monkeypatch.setattr("report_gen.render.sweep.PAGE_ROWS", PAGE_ROWS := 20)  # small pages, same logic
    rows = big_sweep(PAGE_ROWS * (SORTED_PAGES + 1) + 17)
    _first(rows, "fail")["name"] = "sweep/<img src=x onerror=alert(1)>"
    _first(rows, "pass")["loss"] = None  # no loss logged: sorts last both ways
    index = build_index(rows)
    render_sweep(index, tmp_path)
    pages = {p.name for p in (tmp_path / "index").iterdir()}
    total_pages = math.ceil(len(rows) / PAGE_ROWS)
    assert {f"verdict-asc-{n}.html" for n in range(1, total_pages + 1)} <= pages  # the default order: every page
    assert f"loss-final-asc-{SORTED_PAGES}.html" in pages and f"loss-final-asc-{SORTED_PAGES + 1}.html" not in pages
    n_cols = 10 + 3  # fixed columns + varying hparams
    assert len(pages) == total_pages + (2 * n_cols - 1) * SORTED_PAGES

    asc = _cells((tmp_path / "index" / "loss-final-asc-1.html").read_text())
    values = [float(c[6]) for c in asc if c[6]]
    assert values == sorted(values) and len(values) == PAGE_ROWS
    desc = [c[6] for n in range(1, SORTED_PAGES + 1)
            for c in _cells((tmp_path / "index" / f"loss-final-desc-{n}.html").read_text())]
    assert len(desc) == PAGE_ROWS * SORTED_PAGES
    assert [float(v) for v in desc] == sorted((float(v) for v in desc), reverse=True)  # across pages
    capped = (tmp_path / "index" / "loss-final-asc-1.html").read_text()
    assert f"Only the first {SORTED_PAGES} of {total_pages} pages of this order are pre-rendered" in capped

    for path in [tmp_path / "index.html", *(tmp_path / "index").iterdir()]:
        html = path.read_text()
        assert "<script" not in html.lower() and "<img src=x" not in html
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    home = (tmp_path / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in home
    assert "rule-A101</strong> (A101) in" in home and "all with lr &gt;= 0.1" in home
    assert 'href="index/loss-final-asc-1.html"' in home and "data:image/png;base64," in home
    first = _cells(home)[0]
    assert first[1] == "NOT DIAGNOSED"  # errors first


# --------------------------------------------------------------------------------- Markdown


def test_markdown_fits_a_comment_at_5000_runs_and_says_what_it_left_out():
    rows = big_sweep(5000)
    _first(rows, "fail")["name"] = "sweep/@team <b>|x|</b>"
    index = build_index(rows)
    md = render_sweep_markdown(index)
    assert len(md) < MAX_CHARS
    shown = int(re.search(r"_(\d+) of 5000 runs shown, errors first", md).group(1))
    table = md.split("### Runs")[1]
    assert 50 < shown == table.count("](runs/") + 3  # the 3 not diagnosed have no report to link
    assert md.index("### Not diagnosed (3)") < md.index("### Recurring findings") < md.index("### Runs")
    flagged = sum(1 for r in rows if r["verdict"] == "fail")
    assert f"in {flagged} of 4997 runs, all with lr &gt;= 0.1" in md
    assert "@\u200bteam" in md and "<b>" not in md and "\\|x\\|" in md
    verdicts = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| ")][1:]  # not the header
    assert len(verdicts) == shown and verdicts[:3] == ["NOT DIAGNOSED"] * 3
    assert verdicts[3:] == ["FAIL"] * (shown - 3)  # the most severe first, the rest left out


def test_small_markdown_keeps_every_run():
    md = render_sweep_markdown(build_index(big_sweep(40)))
    assert "runs shown" not in md and md.count("](runs/") == 37


# --------------------------------------------------------------------------------- terminal


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_never_prints_control_characters_from_run_names():
    rows = [row("evil\x1b[2J\x07name", "fail", codes=["A101"], hparams={"lr": 1.0}),
            row("bad\x1b]0;title\x07", status="failed", reason="died\x1b[31m red")]
    out = io.StringIO()
    print_sweep_summary(build_index(rows), file=out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "bad" in text and "died" in text
    tty = _Tty()
    progress = SweepProgress(2, stream=tty)
    progress(1, 0, 2, "evil\x1b[2J\x07[bold]name")
    progress(2, 1, 2, "bad\x1b]0;title\x07")
    progress.close()
    shown = tty.getvalue()
    assert "\x1b[2J" not in shown and "\x07" not in shown and "\x1b]0;" not in shown
    plain = io.StringIO()
    progress = SweepProgress(10, stream=plain)
    for n in range(1, 11):
        progress(n, n // 4, 10, "x\x1b[2J")
    assert plain.getvalue().count("runs done") == 10 and "\x1b" not in plain.getvalue()
    assert "10/10 runs done, 2 failed" in plain.getvalue()


class _Replay:
    """An engine that hands back results made beforehand: the driver's writing, without processes."""

    name, workers = "replay", 1

    def __init__(self, results):
        self.results = results

    def run(self, task, settings, items):
        yield from zip(items, self.results)


def test_the_driver_never_writes_through_planted_symlinks(tmp_path):
    from report_gen.sweep import RunItem, TaskResult, TaskSettings, run_sweep

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.html").write_text("keep me")
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "index.html").symlink_to(outside / "victim.html")
    (out / "index").symlink_to(outside)
    (out / "runs" / "a-1").symlink_to(outside)
    items = [RunItem("a", "/x/a", "/x/a", "a-1"), RunItem("b", "/x/b", "/x/b", "b-2")]
    results = [TaskResult(row("a", hparams={"lr": 0.1}) | {"report": "runs/a-1/report.html"},
                          {"report.html": b"<html>a</html>", "report_files/p.png": b"png"}),
               TaskResult(row("b", "fail", codes=["L101"], hparams={"lr": 1.0}), {"report.json": b"{}"})]
    index = run_sweep(items, out, TaskSettings(None, ("html",)), _Replay(results))
    assert (outside / "victim.html").read_text() == "keep me" and sorted(p.name for p in outside.iterdir()) == ["victim.html"]
    assert not (out / "index.html").is_symlink() and "Sweep diagnosis" in (out / "index.html").read_text()
    assert (out / "runs" / "a-1" / "report.html").read_bytes() == b"<html>a</html>"
    assert (out / "runs" / "a-1" / "report_files" / "p.png").read_bytes() == b"png"
    assert index["summary"]["verdict"] == "fail"
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["name"] == "a"
