"""The problem vocabulary: typed kinds with default severities, plain strings in report.json."""
import json
import re

import pytest

from report_gen.core import Problem, ProblemKind, Severity


def test_kinds_are_unique_kebab_case_with_a_severity():
    values = [k.value for k in ProblemKind]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", v) for v in values)
    assert all(isinstance(k.severity, Severity) for k in ProblemKind)
    assert f"{ProblemKind.BAD_PROTO}" == str(ProblemKind.BAD_PROTO) == "bad-proto"


def test_problem_stores_plain_strings_and_serialises_like_a_string_kind():
    typed = Problem("a.pt", ProblemKind.TRUNCATED, "cut", offset=3)
    assert type(typed.kind) is str and type(typed.severity) is str
    assert json.dumps(typed.to_dict()) == json.dumps(
        {"file": "a.pt", "kind": "truncated", "message": "cut", "severity": "warning", "offset": 3})
    assert Problem("a.pt", "truncated", "cut", offset=3) == typed


def test_severity_defaults_to_the_kind_and_an_explicit_one_wins():
    assert Problem("f", ProblemKind.TRUNCATED_RECORD, "m").severity == "info"
    assert Problem("f", ProblemKind.NOTHING_READABLE, "m").severity == "error"
    assert Problem("f", ProblemKind.EMPTY_FILE, "m", severity="info").severity == "info"
    assert Problem("f", ProblemKind.EMPTY_FILE, "m", severity=Severity.ERROR).severity == "error"


def test_an_unknown_kind_or_severity_fails_where_the_problem_is_made():
    with pytest.raises(ValueError):
        Problem("f", "truncated-recrod", "typo")
    with pytest.raises(ValueError):
        Problem("f", ProblemKind.CORRUPT, "m", severity="fatal")
