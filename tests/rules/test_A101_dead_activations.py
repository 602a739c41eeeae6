import numpy as np
import torch

from builders.rulekit import hist, hits, make_run, series
from report_gen.facts.activations import ProbeResult, activation_stats
from report_gen.readers.signals import Signals


def _probe_run(dead_units: int, units: int = 20):
    x = torch.relu(torch.randn(64, units))
    x[:, :dead_units] = 0
    st = activation_stats("fc1.act", "ReLU", x)
    return make_run(probe=[(100, ProbeResult(activations={"fc1.act": st}))])


def test_most_units_dead_on_the_probe_is_an_error():
    [h] = hits(_probe_run(19), "A101")
    assert h.subject == "fc1.act" and h.severity == "error"
    assert abs(h.evidence["dead_share"] - 0.95) < 1e-6


def test_half_dead_is_a_warning():
    [h] = hits(_probe_run(12), "A101")
    assert h.severity == "warning"


def test_dead_share_at_the_warning_threshold_is_fine():
    assert hits(_probe_run(10), "A101") == []  # exactly 50%: not above


def test_all_zero_logged_activation_stats():
    z = np.zeros(30)
    stats = {"mean": series("activation_stats/relu2/mean", z), "max": series("activation_stats/relu2/max", z),
             "min": series("activation_stats/relu2/min", z), "std": series("activation_stats/relu2/std", z)}
    [h] = hits(make_run(signals=Signals(act_stats={"relu2": stats})), "A101")
    assert h.subject == "relu2" and h.evidence["source"] == "activation_stats"
    alive = dict(stats, max=series("activation_stats/relu2/max", np.full(30, 0.3)))
    assert hits(make_run(signals=Signals(act_stats={"relu2": alive})), "A101") == []


def test_activation_histogram_mostly_zero():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(1000), 0)
    x[:950] = 0
    h = hist("activations/relu1", [x])
    [f] = hits(make_run(signals=Signals(act_hist={"relu1": h})), "A101")
    assert f.severity == "error"
    healthy = hist("activations/relu1", [np.maximum(rng.standard_normal(1000), 0)])
    assert hits(make_run(signals=Signals(act_hist={"relu1": healthy})), "A101") == []


def test_probe_too_small_to_judge_units_is_not_reported():
    x = torch.relu(torch.randn(8, 20))  # 8 cells per unit: too few to call a unit dead
    x[:, :19] = 0
    run = make_run(probe=[(1, ProbeResult(activations={"fc1.act": activation_stats("fc1.act", "ReLU", x)}))])
    assert hits(run, "A101") == []
    assert len(hits(run, "A101", min_cells=8)) == 1


def _bn_relu_outputs():
    """The real trained BN+ReLU network of torch_tb/bn_relu_healthy (its model.pt) on a batch of its input
    distribution, BatchNorm in training mode as during the logged steps: the two ReLUs' outputs."""
    from builders import realfix
    from torch import nn

    sd = torch.load(realfix.case("torch_tb", "bn_relu_healthy") / "model.pt", weights_only=True)
    block = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU())
    block.load_state_dict({k[len("block."):]: v for k, v in sd.items() if k.startswith("block.")})
    block.train()
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h1 = block[:3](x)
        h2 = block[3:](h1)
    return {"block.2": h1.numpy(), "block.5": h2.numpy()}


def test_half_zeros_after_batchnorm_is_what_a_healthy_relu_does():
    """Logged with TensorBoard's default buckets (which resolve exact zeros), the real BN+ReLU layers output 0
    for about half their inputs: no dead-activations finding."""
    outs = _bn_relu_outputs()
    shares = {k: float((v == 0).mean()) for k, v in outs.items()}
    assert max(shares.values()) > 0.5 and all(0.4 < s < 0.6 for s in shares.values())  # over 0.5: main warned
    s = Signals(act_hist={k: hist(f"activations/{k}", [v, v]) for k, v in outs.items()})
    assert hits(make_run(signals=s), "A101") == []


def test_a_relu_layer_whose_zeros_grow_far_beyond_half_is_dying():
    outs = _bn_relu_outputs()["block.5"]
    dying = outs.copy()
    dying[: int(0.9 * len(dying))] = 0.0  # 90% of the samples now give 0 everywhere
    s = Signals(act_hist={"block.5": hist("activations/block.5", [outs, dying])})
    [h] = hits(make_run(signals=s), "A101")
    assert h.severity == "warning" and h.evidence["normal_zero_share"] >= 0.5 and h.evidence["excess"] > 0.5
