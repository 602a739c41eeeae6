"""The shared vocabulary: plot kinds serialise to report.json's exact dicts and parse back; signals are strings."""
import json

import pytest

from report_gen.core import Finding
from report_gen.vocab import (PLOT_KINDS, ActivationSeriesPlot, CurvePlot, DistributionPlot, GradDepthPlot, ImagePlot,
                              Key, KernelsPlot, LayerFact, LayerSeriesPlot, ProbeSeriesPlot, Signal, missing_reason,
                              parse_plot)

# the JSON report.json carried for each plot kind before the kinds were typed (key order included)
TODAY = [
    (CurvePlot("r", [Signal.TRAIN_LOSS], 339), '{"kind": "curve", "run": "r", "series": ["train_loss"], "mark_step": 339}'),
    (CurvePlot("r", [Signal.TRAIN_LOSS, Signal.VAL_LOSS]), '{"kind": "curve", "run": "r", "series": ["train_loss", "val_loss"]}'),
    (CurvePlot("r", [Key.UPDATE_RATIO.of("fc.bias")]), '{"kind": "curve", "run": "r", "series": ["update_ratio:fc.bias"]}'),
    (DistributionPlot.of("r", Key.WEIGHT, "fc.weight"), '{"kind": "distribution", "run": "r", "key": "weight:fc.weight"}'),
    (GradDepthPlot("r"), '{"kind": "grad_depth", "run": "r"}'),
    (LayerSeriesPlot("r", "conv2.weight", LayerFact.REL_UPDATE),
     '{"kind": "layer_series", "run": "r", "param": "conv2.weight", "fact": "rel_update"}'),
    (ActivationSeriesPlot("r", "act2"), '{"kind": "activation_series", "run": "r", "layer": "act2"}'),
    (ProbeSeriesPlot("r", "act2"), '{"kind": "probe_series", "run": "r", "layer": "act2"}'),
    (KernelsPlot.of("r", "conv1.weight"), '{"kind": "kernels", "run": "r", "image": "kernels:conv1.weight"}'),
    (ImagePlot.of("r", Key.PROBE, "relu2"), '{"kind": "image", "run": "r", "image": "probe:relu2"}'),
]


@pytest.mark.parametrize("plot, text", TODAY, ids=[p.kind for p, _ in TODAY])
def test_plots_serialise_to_todays_json_and_parse_back(plot, text):
    assert json.dumps(plot.to_dict()) == text
    assert parse_plot(json.loads(text)) == plot


def test_every_kind_is_covered_and_a_finding_round_trips_its_plot():
    assert {type(p) for p, _ in TODAY} == set(PLOT_KINDS.values())
    finding = Finding("L102", "divergence", "divergence", "error", "r", "train/loss", "m", plot=TODAY[0][0])
    d = json.loads(json.dumps(finding.to_dict()))
    assert d["plot"] == json.loads(TODAY[0][1])
    assert Finding.from_dict(d) == finding


def test_hand_edited_plots_parse_leniently_or_not_at_all():
    assert parse_plot({"kind": "curve", "run": 3, "series": "train_loss", "mark_step": True}) == CurvePlot("3", [])
    assert parse_plot({"kind": "curve", "series": ["a", 1], "mark_step": 2.5}) == CurvePlot("", ["a", "1"], 2.5)
    assert parse_plot({"kind": "probe_maps", "run": "r", "layer": "x"}) is None  # never reached report.json
    assert parse_plot({"kind": "layer_series", "run": "r", "param": "p", "fact": "weight_norm"}).fact is LayerFact.WEIGHT_NORM
    for bad in (None, [], "curve", {"run": "r"}, {"kind": ["curve"]}, {"kind": "layer_series", "fact": "x"}):
        assert parse_plot(bad) is None, bad


def test_the_baseline_overlay_flag_appears_only_when_set():
    assert "baseline" not in CurvePlot("r", ["val_loss"]).to_dict()
    assert CurvePlot("r", ["val_loss"], baseline=True).to_dict()["baseline"] is True


def test_signals_are_their_names_in_text_json_sets_and_sorting():
    assert str(Signal.TRAIN_LOSS) == f"{Signal.TRAIN_LOSS}" == "train_loss"
    assert json.dumps({Signal.GRAD_HIST: [Signal.LR]}) == '{"grad_hist": ["lr"]}'
    assert "lr" in {Signal.LR} and Signal("val_acc") is Signal.VAL_ACC
    assert [s.value for s in sorted({Signal.VAL_LOSS, Signal.ACT_HIST})] == ["act_hist", "val_loss"]


def test_missing_reason_joins_distinct_reasons_and_gives_the_first_hint():
    reason, enable = missing_reason((Signal.CHECKPOINT_SERIES, Signal.WEIGHT_HIST, Signal.CHECKPOINT))
    assert reason == "fewer than two readable checkpoints; no weight histograms logged; no readable checkpoint found"
    assert enable == Signal.CHECKPOINT_SERIES.enable and "torch.save" in enable
    assert missing_reason((Signal.GRAD_HIST,)) == (Signal.GRAD_HIST.missing, Signal.GRAD_HIST.enable)
    assert all(s.missing and s.enable for s in Signal if s is not Signal.INPUT_PROBLEMS)


def test_details_keys_split_back_into_their_name():
    assert Key.KERNELS.of("a:b") == "kernels:a:b" and Key.KERNELS.name_in("kernels:a:b") == "a:b"
    assert Key.PROBE.name_in("kernels:x") is None and Key.PROBE.name_in("probe") is None
