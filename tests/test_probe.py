"""Post-hoc probe: model factories, probe inputs, state dicts, hooks, attention, series."""
import numpy as np
import pytest
import torch
from torch import nn

from report_gen.core import InputError
from report_gen.probe import (apply_state_dict, load_factory, load_probe_input, probe,
                              probe_series)


def _all_hooks_gone(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def _mlp(act: nn.Module, bias: float | None = None, weight_scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), act, nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight.mul_(weight_scale)
        if bias is not None:
            model[0].bias.fill_(bias)
    return model


# --------------------------------------------------------------------------- probe


def test_resnet18_probe_captures_relu_and_conv_and_nothing_is_dead():
    model = load_factory("torchvision.models:resnet18", {"num_classes": 10})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch, description = load_probe_input(None, "2,3,32,32")
    result = probe(model, batch, description=description)

    kinds = {s.kind for s in result.activations.values()}
    assert {"relu-like", "linear"} <= kinds
    assert {"conv1", "relu", "layer1.0.relu", "layer1.0.relu#2", "layer4.1.conv2", "fc"} <= set(result.activations)
    assert result.activations["conv1"].shape == (2, 64, 16, 16)
    assert result.activations["conv1"].maps.shape == (4, 16, 16)
    assert max(s.dead_unit_frac for s in result.activations.values()) == 0.0
    # never-updated BN layers used batch statistics, and their buffers were restored
    assert "bn1" in result.batchnorm_batch_stats
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and _all_hooks_gone(model)
    assert result.input_description.startswith("synthetic")


def test_relu_with_bias_minus_ten_is_dead():
    model = _mlp(nn.ReLU(), bias=-10.0, weight_scale=0.01)
    result = probe(model, torch.randn(16, 8))
    assert result.activations["1"].dead_unit_frac == pytest.approx(1.0)
    assert result.activations["0"].dead_unit_frac == 0.0  # the Linear itself is not "dead"


def test_sigmoid_with_huge_weights_saturates_and_sane_one_does_not():
    saturated = probe(_mlp(nn.Sigmoid(), weight_scale=100.0), torch.randn(16, 8)).activations["1"]
    sane = probe(_mlp(nn.Sigmoid()), torch.randn(16, 8)).activations["1"]
    assert saturated.saturated_frac > 0.9
    assert sane.saturated_frac < 0.05


def test_hooks_are_removed_when_forward_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU()

        def forward(self, x):
            self.act(self.fc(x))
            raise RuntimeError("boom\nsecond line")

    model = Broken()
    with pytest.raises(InputError) as info:
        probe(model, torch.randn(2, 4), description="x.pt")
    assert "boom" in str(info.value) and "x.pt" in str(info.value) and "\n" not in str(info.value)
    assert _all_hooks_gone(model)


def test_shape_mismatch_is_an_input_error():
    model = _mlp(nn.ReLU())
    with pytest.raises(InputError, match="forward pass of Sequential failed"):
        probe(model, torch.randn(2, 5))
    assert _all_hooks_gone(model)


def test_explicit_layers_and_unknown_layer():
    model = _mlp(nn.ReLU())
    assert list(probe(model, torch.randn(4, 8), layers=["1"]).activations) == ["1"]
    with pytest.raises(InputError, match="nope"):
        probe(model, torch.randn(4, 8), layers=["nope"])


class _Attention(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, num_heads=1, batch_first=True)
        with torch.no_grad():
            eye = torch.eye(4)
            self.attn.in_proj_weight.copy_(torch.cat([eye * scale, eye * scale, eye]))
            self.attn.in_proj_bias.zero_()

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_uniform_attention_has_entropy_one():
    model = _Attention(scale=1.0)
    result = probe(model, torch.ones(2, 5, 4))
    stats = result.attention["attn"]
    assert (stats.heads, stats.seq_len, stats.maps.shape) == (1, 5, (1, 5, 5))
    assert stats.entropy[0] == pytest.approx(1.0, abs=1e-6)
    assert model.attn.forward.__func__ is nn.MultiheadAttention.forward  # patch undone
    assert _all_hooks_gone(model)


def test_one_hot_attention_has_entropy_zero():
    tokens = 3.0 * torch.eye(4).unsqueeze(0).repeat(2, 1, 1)
    stats = probe(_Attention(scale=10.0), tokens).attention["attn"]
    assert stats.entropy[0] == pytest.approx(0.0, abs=1e-3)
    assert stats.max_weight[0] == pytest.approx(1.0, abs=1e-3)


def test_transformer_encoder_attention_is_seen_despite_the_fast_path():
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, batch_first=True), num_layers=2,
                                    enable_nested_tensor=False)
    result = probe(encoder, torch.randn(3, 6, 16))
    assert set(result.attention) == {"layers.0.self_attn", "layers.1.self_attn"}
    assert result.attention["layers.0.self_attn"].entropy.shape == (4,)
    assert torch.backends.mha.get_fastpath_enabled()


# --------------------------------------------------------------------------- factories and inputs


def test_load_factory_from_a_file(tmp_path):
    (tmp_path / "helper.py").write_text("WIDTH = 5\n")
    (tmp_path / "models.py").write_text(
        "import torch.nn as nn\nfrom helper import WIDTH\n"
        "def tiny(out=2):\n    return nn.Linear(WIDTH, out)\n"
        "def not_a_model():\n    return 3\n")
    model = load_factory(f"{tmp_path / 'models.py'}:tiny", {"out": 7})
    assert isinstance(model, nn.Linear) and model.out_features == 7
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        load_factory(f"{tmp_path / 'models.py'}:not_a_model")
    with pytest.raises(InputError, match="calling the factory failed"):
        load_factory(f"{tmp_path / 'models.py'}:tiny", {"bogus": 1})


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected MODULE:FACTORY"),
    ("surely_not_a_module_xyz:f", "cannot import"),
    ("torchvision.models:nope", "no callable"),
    ("/does/not/exist.py:f", "file not found"),
])
def test_load_factory_errors_are_one_line(spec, message):
    with pytest.raises(InputError, match=message) as info:
        load_factory(spec)
    assert "\n" not in str(info.value)


def test_load_factory_refuses_pretrained_weights():
    with pytest.raises(InputError, match="never downloaded"):
        load_factory("torchvision.models:resnet18", {"weights": "IMAGENET1K_V1"})


def test_load_factory_syntax_error_in_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    with pytest.raises(InputError, match="SyntaxError"):
        load_factory(f"{bad}:f")


def test_probe_input_from_shape_is_seeded():
    a, desc = load_probe_input(None, "4,3,8,8", seed=3)
    b, _ = load_probe_input(None, "4x3x8x8", seed=3)
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b) and "synthetic" in desc
    with pytest.raises(InputError):
        load_probe_input(None, "4,-3")
    with pytest.raises(InputError, match="exactly one"):
        load_probe_input(None, None)


def test_probe_input_files(tmp_path):
    torch.save(torch.ones(2, 3, dtype=torch.float64), tmp_path / "t.pt")
    tensor, desc = load_probe_input(str(tmp_path / "t.pt"), None)
    assert tensor.dtype == torch.float32 and "2×3" in desc
    np.save(tmp_path / "a.npy", np.zeros((2, 8), dtype=np.float32))
    array, _ = load_probe_input(str(tmp_path / "a.npy"), None)
    assert isinstance(array, torch.Tensor) and array.shape == (2, 8)
    torch.save({"x": torch.ones(2, 8), "mask": torch.ones(2, dtype=torch.int64)}, tmp_path / "d.pt")
    mapping, desc = load_probe_input(str(tmp_path / "d.pt"), None)
    assert set(mapping) == {"x", "mask"} and "mask" in desc


def test_dict_input_is_passed_as_kwargs_or_first_tensor():
    class Keyed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2)

        def forward(self, x, scale):
            return self.fc(x) * scale

    inputs = {"x": torch.ones(2, 8), "scale": torch.tensor(2.0)}
    assert "fc" in probe(Keyed(), inputs).activations
    assert "0" in probe(_mlp(nn.ReLU()), {"features": torch.ones(2, 8), "other": torch.ones(1)}).activations


def test_unreadable_probe_inputs(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.pt: cannot read"):
        load_probe_input(str(tmp_path / "junk.pt"), None)
    torch.save({"n": 3}, tmp_path / "nums.pt")
    with pytest.raises(InputError, match="expected a tensor"):
        load_probe_input(str(tmp_path / "nums.pt"), None)
    with pytest.raises(InputError, match="not found"):
        load_probe_input(str(tmp_path / "missing.pt"), None)


# --------------------------------------------------------------------------- state dicts and series


def test_apply_state_dict_strips_prefixes_and_reports_keys():
    source = _mlp(nn.ReLU(), bias=1.5)
    target = _mlp(nn.ReLU(), bias=0.0)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.extra"] = torch.zeros(1)
    report = apply_state_dict(target, state)
    assert report == {"missing": [], "unexpected": ["extra"], "mismatched": []}
    assert torch.equal(target[0].bias, source[0].bias)

    lightning = {f"model.{k}": v for k, v in source.state_dict().items() if k != "2.bias"}
    lightning["model.0.weight"] = torch.zeros(3, 3)
    report = apply_state_dict(_mlp(nn.ReLU()), lightning)
    assert report["mismatched"] == ["0.weight"]
    assert report["missing"] == ["0.weight", "2.bias"]


def test_probe_series_uses_evenly_spaced_checkpoints_first_and_last():
    checkpoints = []
    for step in range(10):
        model = _mlp(nn.ReLU(), bias=-float(step))
        checkpoints.append((step * 100, model.state_dict()))
    loaded = []

    def lazy(i):
        def load():
            loaded.append(i)
            return checkpoints[i][1]
        return load

    series = probe_series(lambda: _mlp(nn.ReLU()), [(s, lazy(i)) for i, (s, _) in enumerate(checkpoints)],
                          torch.randn(32, 8), max_checkpoints=4)
    steps = [step for step, _ in series]
    assert steps[0] == 0 and steps[-1] == 900 and len(steps) == 4 and len(loaded) == 4
    dead = [result.activations["1"].dead_unit_frac for _, result in series]
    assert dead == sorted(dead) and dead[-1] == 1.0
    assert series[0][1].load_report == {"missing": [], "unexpected": [], "mismatched": []}


def test_batchnorm_with_loaded_statistics_stays_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
    with torch.no_grad():
        model[1].running_mean.fill_(1000.0)  # e.g. an old checkpoint without num_batches_tracked
    result = probe(model, torch.randn(8, 4))
    assert result.batchnorm_batch_stats == []
    assert result.activations["2"].dead_unit_frac == 1.0  # eval normalisation pushes all below 0
    assert probe(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), torch.randn(8, 4)).batchnorm_batch_stats == ["1"]
