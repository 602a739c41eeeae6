"""details (evidence.py): the layer table applies the rules' own options, findings are only read, and
images leave evidence as pixels that render encodes."""
import base64
import copy
import json

import numpy as np
import torch

from report_gen.config import Config
from report_gen.core import Finding
from report_gen.engine import Options, diagnose
from report_gen.evidence import build_details
from report_gen.render.jsonout import dumps
from report_gen.rules.base import REGISTRY, all_rules
from report_gen.vocab import Key, KernelsPlot, Picture
from builders.rulekit import cnn_state, make_run, mem_checkpoint


def _faint_kernels_state(n_faint: int = 8) -> dict[str, torch.Tensor]:
    """conv2 (32 kernels, max |w| ~0.25) with `n_faint` kernels scaled to max |w| ~0.015."""
    state = cnn_state(0, out=16)
    w = state["conv2.weight"].clone()
    w[:n_faint] *= 0.015 / w[:n_faint].abs().amax()
    state["conv2.weight"] = w
    return state


def _layer_fact(report: dict, param: str, fact: str):
    [run] = report["details"]["runs"].values()
    return next(row for row in run["layers"] if row["param"] == param)["facts"][fact]


def test_a_configured_dead_kernel_threshold_changes_the_layer_table(tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({"model": _faint_kernels_state(8), "step": 10}, tmp_path / "run" / "step_10.pt")
    default = diagnose([str(tmp_path / "run")], Options())
    assert _layer_fact(default, "conv2.weight", "dead_kernel_ratio") == 0.0  # max |w| 0.015 > 0.01: alive
    assert not [f for f in default["findings"] if f["code"] == "K101"]

    strict = diagnose([str(tmp_path / "run")], Options(config=Config(rule_options={"K101": {"threshold": 0.05}})))
    [finding] = [f for f in strict["findings"] if f["code"] == "K101"]
    assert finding["evidence"]["dead"] == 8 and finding["evidence"]["threshold"] == 0.05
    assert _layer_fact(strict, "conv2.weight", "dead_kernel_ratio") == 8 / 32  # the table agrees with the rule
    row = next(r for r in strict["details"]["runs"]["run"]["layers"] if r["param"] == "conv2.weight")
    assert row["flags"]["dead_kernel_ratio"] == finding["severity"]


def _run_and_findings(state):
    run = make_run(checkpoints=[mem_checkpoint(state, 10)])
    all_rules()
    rule = REGISTRY["K101"]
    opts = rule.make_options({"threshold": 0.05})
    findings = [Finding(rule.code, rule.name, rule.category, h.severity or rule.severity, run.name, h.subject,
                        h.message, dict(h.evidence), rule.suggestion, plot=h.plot) for h in rule.func(run, opts)]
    return run, findings, {rule.code: opts}


def test_small_weights_by_design_are_not_dead_in_the_table_either():
    state = cnn_state(0, out=16)
    state["conv2.weight"] = state["conv2.weight"] * 0.02  # every kernel's max |w| < 0.05, none far below the rest
    run, findings, options = _run_and_findings(state)
    assert findings == []
    rows = {r["param"]: r for r in build_details(run, findings, options)["layers"]}
    assert rows["conv2.weight"]["facts"]["dead_kernel_ratio"] == 0.0


def test_details_only_read_the_findings_and_images_are_pixels_until_render():
    run, findings, options = _run_and_findings(_faint_kernels_state(8))
    [finding] = findings
    assert finding.plot == KernelsPlot.of("run", "conv2.weight")
    before = copy.deepcopy([f.to_dict() for f in findings])
    details = build_details(run, findings, options)
    assert [f.to_dict() for f in findings] == before

    picture = details["images"][Key.KERNELS.of("conv2.weight")]
    assert isinstance(picture, Picture) and picture.png is None
    pixels = np.asarray(picture.pixels)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and 0.0 <= pixels.min() and pixels.max() <= 1.0
    as_json = json.loads(dumps({"details": {"runs": {"run": details}}}))
    image = as_json["details"]["runs"]["run"]["images"]["kernels:conv2.weight"]
    assert list(image) == ["title", "png_base64"]
    png = base64.b64decode(image["png_base64"])
    assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") == pixels.shape[1]
