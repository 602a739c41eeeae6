"""report.json writing and loading, and re-rendering from the JSON alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

from report_gen.core import InputError
from report_gen.render import load_report, render, write_json
from builders.sample_report import make_report_dict, rendered_sample


def test_write_json_is_strict_utf8_with_non_finite_as_strings(tmp_path):
    report = {"schema_version": 1, "x": float("nan"), "y": [float("inf"), np.float32(0.5), np.int64(3)],
              "name": "Größe ✓"}
    path = write_json(report, tmp_path / "report.json")
    raw = path.read_bytes().decode("utf-8")
    assert "Größe ✓" in raw and "NaN" not in raw and "Infinity" not in raw
    assert raw.startswith('{\n "schema_version": 1')  # indent=1
    assert json.loads(raw) == {"schema_version": 1, "x": "nan", "y": ["inf", 0.5, 3], "name": "Größe ✓"}
    assert load_report(path)["y"][0] == "inf"
    assert not (tmp_path / "report.json.tmp").exists()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not valid JSON (line 1, column 2)"),
    ("[1, 2]", "not a report"),
    ('{"schema_version": 2}', "unsupported schema_version 2"),
    ("{}", "unsupported schema_version None"),
    (b"\xff\xfe\x00", "cannot read"),
])
def test_load_report_rejects_bad_files_with_one_line(tmp_path, content, message):
    path = tmp_path / "report.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_report(path)
    text = str(error.value)
    assert str(path) in text and message in text and "\n" not in text


def test_rerender_from_json_alone_gives_the_same_markdown(tmp_path):
    first = rendered_sample()
    again = render(load_report(first / "report.json"), tmp_path, formats=("md",))
    assert (first / "report.md").read_text(encoding="utf-8") == again["md"].read_text(encoding="utf-8")
    assert sorted(p.name for p in (first / "report_files").iterdir()) == \
        sorted(p.name for p in (tmp_path / "report_files").iterdir())


def test_render_rejects_unknown_formats_and_unwritable_dirs(tmp_path):
    with pytest.raises(InputError, match="unknown format pdf"):
        render(make_report_dict(), tmp_path, formats=("pdf",))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create output directory"):
        render(make_report_dict(), blocker / "out", formats=("json",))


def test_load_report_rejects_wrong_shapes(tmp_path):
    import json as _json

    import pytest

    from report_gen.core import InputError
    from report_gen.render import load_report

    base = {"schema_version": 1, "summary": {"verdict": "pass", "counts": {}}, "inputs": {"runs": []}, "findings": []}
    cases = [({"findings": [{"code": "K101", "subject": ["a"]}]}, "findings\\[0\\].subject"),
             ({"inputs": [1, 2]}, "inputs.runs"), ({"findings": "x"}, "findings")]
    for patch, where in cases:
        p = tmp_path / "r.json"
        p.write_text(_json.dumps({**base, **patch}))
        with pytest.raises(InputError, match=where):
            load_report(p)


def test_banner_is_recomputed_from_the_findings(tmp_path):
    from report_gen.render.context import build_context

    f = {"code": "L104", "severity": "warning", "run": "r", "subject": "s", "message": "m"}
    ctx = build_context({"schema_version": 1, "summary": {"verdict": "@org/team|<b>", "counts": {"error": 7}},
                         "findings": [f]})
    assert ctx["verdict"] == "warn" and ctx["verdict_label"] == "WARN"
    assert dict(ctx["counts"]) == {"error": 0, "warning": 1, "info": 0}


def test_bom_deep_nesting_and_unknown_severity(tmp_path):
    import json as _json

    import pytest

    from report_gen.core import InputError
    from report_gen.render import load_report

    p = tmp_path / "r.json"
    p.write_bytes(b"\xef\xbb\xbf" + _json.dumps({"schema_version": 1, "findings": []}).encode())
    assert load_report(p)["schema_version"] == 1
    p.write_text("[" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_report(p)
    p.write_text(_json.dumps({"schema_version": 1, "findings": [{"severity": "critical"}]}))
    with pytest.raises(InputError, match="severity"):
        load_report(p)
