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
        assert "Options:" not in doc, r.code  # options are documented once, on their fields
        assert r.suggestion and r.suggestion in " ".join(doc.split()), r.code


def test_every_option_has_a_doc_and_explain_shows_it_with_its_default():
    for r in all_rules():
        text = r.explain()
        options = text[text.index("\nOptions:"):]
        for name, default, doc in r.option_docs():
            assert len(doc.split()) >= 4, (r.code, name, doc)  # a sentence, not a label
            assert f"    {name} = {default!r}\n" in options, (r.code, name)
            assert " ".join(doc.split()) in " ".join(options.split()), (r.code, name)
        if not r.option_docs():
            assert "(none)" in options, r.code


def test_category_defaults_to_the_name():
    rules = {r.code: r for r in all_rules()}
    assert rules["K101"].category == "dead-kernels" == rules["K101"].name
    assert rules["K104"].category == "dead-kernels" != rules["K104"].name  # given where it differs


def test_an_undocumented_option_or_a_missing_section_is_refused_at_declaration():
    import dataclasses

    import pytest

    from report_gen.rules.base import REGISTRY, opt, rule

    @dataclasses.dataclass(frozen=True)
    class Bare:
        documented: float = opt(1.0, "a documented option")
        bare: float = 2.0

    def func(run, opts):
        """
        What it detects:
            x
        Why it matters:
            x
        Typical causes:
            x
        What to try:
            x
        """

    with pytest.raises(ValueError, match="bare"):
        rule("Z998", "test-undocumented", "info", needs=(Signal.CHECKPOINT,), options=Bare,
             category="dead-kernels")(func)
    func.__doc__ = func.__doc__.replace("What to try:", "Try:")
    with pytest.raises(ValueError, match="What to try"):
        rule("Z999", "test-missing-section", "info", needs=(Signal.CHECKPOINT,), category="dead-kernels")(func)
    assert "Z998" not in REGISTRY and "Z999" not in REGISTRY


def test_every_contract_category_is_covered():
    assert CONTRACT_CATEGORIES <= set(CATEGORIES)
    covered = {r.category for r in all_rules()}
    assert CONTRACT_CATEGORIES <= covered, CONTRACT_CATEGORIES - covered


def test_every_rule_has_its_own_test_module():
    import pathlib

    here = pathlib.Path(__file__).parent / "rules"
    tested = {m.group(1) for p in here.glob("test_*.py") if (m := re.match(r"test_([A-Z]\d{3})_", p.name))}
    assert {r.code for r in all_rules()} <= tested
