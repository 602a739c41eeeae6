import pytest

from report_gen.config import Config, from_table, load_config, match_length
from report_gen.core import Finding, InputError
from report_gen.rules.base import all_rules, find_rule


def test_longest_selector_wins():
    cfg = from_table({"select": ["K"], "ignore": ["K1"], }, "t")
    k101 = find_rule("K101")
    assert not cfg.is_enabled(k101)
    cfg = from_table({"select": ["K101"], "ignore": ["K1"]}, "t")
    assert cfg.is_enabled(k101)
    assert not cfg.is_enabled(find_rule("K102"))
    assert not cfg.is_enabled(find_rule("L101"))  # select given: everything else off
    cfg = from_table({"ignore": ["dead-kernels"]}, "t")  # by name
    assert not cfg.is_enabled(k101) and cfg.is_enabled(find_rule("K102"))


def test_unknown_keys_and_bad_values_are_rejected():
    with pytest.raises(InputError, match="unknown key.*selct"):
        from_table({"selct": ["K"]}, "pyproject.toml")
    with pytest.raises(InputError, match="fail-on"):
        from_table({"fail-on": "sometimes"}, "x")
    with pytest.raises(InputError, match="severity"):
        from_table({"severity": {"K101": "fatal"}}, "x")
    with pytest.raises(ValueError, match="no option nope"):
        find_rule("K101").make_options({"nope": 1})
    with pytest.raises(ValueError, match="must be a number"):
        find_rule("K101").make_options({"threshold": "big"})


def test_options_severity_and_subject_ignores():
    cfg = from_table({"rules": {"K101": {"threshold": 0.02}}, "severity": {"K1": "info", "K101": "warning"},
                      "per-subject-ignores": {"backbone.*": ["K"]}}, "x")
    k101 = find_rule("K101")
    assert k101.make_options(cfg.options_for(k101)).threshold == 0.02
    assert cfg.severity_for(k101) == "warning"
    assert cfg.severity_for(find_rule("K102")) == "info"
    f = Finding("K101", "dead-kernels", "dead-kernels", "error", "r", "backbone.conv1.weight", "m")
    assert cfg.subject_ignored(f, {r.code: r for r in all_rules()}) == "backbone.*"
    g = Finding("K101", "dead-kernels", "dead-kernels", "error", "r", "head.weight", "m")
    assert cfg.subject_ignored(g, {r.code: r for r in all_rules()}) is None


def test_unused_selectors_are_reported():
    cfg = from_table({"ignore": ["Z9", "K101"], "per-subject-ignores": {"x": ["nonexistent-rule"]}}, "x")
    assert cfg.unused_selectors(all_rules()) == ["Z9", "nonexistent-rule"]


def test_pyproject_and_explicit_config(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.report_gen]\nignore = ["W104"]\nfail-on = "warning"\n')
    cfg = load_config(search_from=str(tmp_path))
    assert cfg.ignore == ["W104"] and cfg.fail_on == "warning"
    own = tmp_path / "rg.toml"
    own.write_text('select = ["L"]\n')
    assert load_config(str(own)).select == ["L"]
    bad = tmp_path / "bad.toml"
    bad.write_text("select = [")
    with pytest.raises(InputError, match="bad.toml: invalid TOML"):
        load_config(str(bad))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pyproject.toml").write_text('[project]\nname = "x"\n')  # nearest has no table
    assert load_config(search_from=str(tmp_path / "sub")).ignore == []


def test_match_length_names_rank_as_full_codes():
    r = find_rule("K101")
    assert match_length("dead-kernels", r) == match_length("K101", r) > match_length("K1", r) > match_length("ALL", r)
    assert match_length("L", r) == -1
    # a tie between select and ignore: ignore wins, whichever spelling each uses
    assert not from_table({"select": ["dead-kernels"], "ignore": ["K101"]}, "x").is_enabled(r)
    assert not from_table({"select": ["K101"], "ignore": ["dead-kernels"]}, "x").is_enabled(r)


def test_rule_options_apply_most_specific_last():
    cfg = from_table({"rules": {"L102": {"min_points": 20}, "L10": {"min_points": 50}, "L": {"min_points": 70}}}, "x")
    assert cfg.options_for(find_rule("L102")) == {"min_points": 20}
    assert cfg.options_for(find_rule("L105")) == {"min_points": 50}


def test_malformed_tables_are_input_errors(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('severity = "warning"\n')
    with pytest.raises(InputError, match="must be tables"):
        load_config(str(bad))
    bad.write_text("tool = 1\n")
    with pytest.raises(InputError, match="unknown key"):
        load_config(str(bad))


def test_option_values_are_type_checked():
    r = find_rule("L104")
    assert r.make_options({"window": 40.0}).window == 40  # a whole float is fine for an int option
    for bad, match in (({"window": 1.5}, "whole number"), ({"window": -5}, "negative"),
                       ({"window": True}, "number"), ({"min_relative_swing": "big"}, "number")):
        with pytest.raises(ValueError, match=match):
            r.make_options(bad)
