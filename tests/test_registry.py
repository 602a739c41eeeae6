"""The rule catalogue as a whole: codes, names, documentation, category coverage."""
import re

from report_gen.rules.base import CATEGORIES, CODE_RE, DOC_SECTIONS, NAME_RE, all_rules
from report_gen.vocab import Signal

CONTRACT_CATEGORIES = {
    "nonfinite-loss", "divergence", "plateau", "oscillation", "overfitting", "vanishing-gradients",
    "exploding-gradients", "unbalanced-updates", "frozen-layer", "nonfinite-weights", "dead-kernels",
    "low-kernel-diversity", "redundant-filters", "weight-collapse", "wide-weights", "bimodal-weights",
    "dead-activations", "saturated-activations", "growing-activations", "redundant-channels",
    "unstable-activations", "input-integrity",
}


def test_codes_and_names_unique_and_well_formed():
    rules = all_rules()
    assert len({r.code for r in rules}) == len(rules)
    assert len({r.name for r in rules}) == len(rules)
    for r in rules:
        assert CODE_RE.match(r.code) and NAME_RE.match(r.name), r.code
        assert r.severity in ("error", "warning", "info")
        assert r.needs and all(isinstance(n, Signal) for n in r.needs)


def test_every_rule_documented_with_all_sections_in_order():
    for r in all_rules():
        doc = r.doc
        positions = [doc.find(f"{s}:") for s in DOC_SECTIONS]
        assert all(p >= 0 for p in positions), (r.code, positions)
        assert positions == sorted(positions), r.code
        for field_name in r.option_defaults():
            assert field_name in doc.split("Options:")[1], (r.code, field_name)
        assert r.suggestion, r.code


def test_every_contract_category_is_covered():
    assert CONTRACT_CATEGORIES <= set(CATEGORIES)
    covered = {r.category for r in all_rules()}
    assert CONTRACT_CATEGORIES <= covered, CONTRACT_CATEGORIES - covered


def test_every_rule_has_its_own_test_module():
    import pathlib

    here = pathlib.Path(__file__).parent / "rules"
    tested = {m.group(1) for p in here.glob("test_*.py") if (m := re.match(r"test_([A-Z]\d{3})_", p.name))}
    assert {r.code for r in all_rules()} <= tested
