"""Fast checks of sample_runs/make_samples.py: one shortened run written to a temporary folder.

These test what the script writes (event tags, checkpoints, probe), not the diagnoses.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def _load(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, SAMPLES / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


make_samples = _load("make_samples_under_test", "make_samples.py")
models = _load("sample_models_under_test", "models.py")

EPOCHS = 3


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    stale = out / "healthy_cnn" / "checkpoints" / "epoch_99.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old output")
    result = make_samples.generate_run(make_samples.RUNS["healthy_cnn"], out, epochs=EPOCHS)
    return result, out / "healthy_cnn"


def test_stale_outputs_are_removed(cnn_run):
    _, run_dir = cnn_run
    assert not (run_dir / "checkpoints" / "epoch_99.pt").exists()


def test_tutorial_scalar_tags_and_steps(cnn_run):
    result, run_dir = cnn_run
    acc = _events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/acc", "val/acc", "train/lr", "train/grad_norm"} <= scalars
    steps_per_epoch = 1024 // 64
    assert result.steps == EPOCHS * steps_per_epoch
    assert [e.step for e in acc.Scalars("val/acc")] == [steps_per_epoch * (i + 1) for i in range(EPOCHS)]
    assert len(acc.Scalars("train/loss")) == result.steps  # short run: every step is logged
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] < lrs[0]  # cosine schedule
    assert all(math.isfinite(e.value) and e.value > 0 for e in acc.Scalars("train/grad_norm"))


def test_histograms_for_every_parameter(cnn_run):
    _, run_dir = cnn_run
    acc = _events(run_dir)
    names = [n for n, _ in models.healthy_cnn().named_parameters()]
    expected = {f"{kind}/{n}" for n in names for kind in ("weight_hist", "grad_hist")}
    assert set(acc.Tags()["histograms"]) == expected
    series = acc.Histograms("grad_hist/conv1.weight")
    assert len(series) == EPOCHS
    assert series[-1].histogram_value.num == 8 * 1 * 3 * 3


def test_activation_stats_and_images(cnn_run):
    _, run_dir = cnn_run
    for layer in ("relu1", "relu2"):
        stats = {key: [e.value for e in _events(run_dir / f"activation_stats_{layer}_{key}")
                       .Scalars(f"activation_stats/{layer}")]
                 for key in ("mean", "std", "max", "min")}
        assert all(len(values) == EPOCHS for values in stats.values())
        assert min(stats["min"]) >= 0.0 and min(stats["max"]) > 0.0  # ReLU outputs, alive
    images = _events(run_dir).Tags()["images"]
    assert set(images) == {"conv_weights/conv1.weight", "conv_weights/conv2.weight",
                           "activation_maps/relu1", "activation_maps/relu2"}


def test_checkpoints_are_training_dicts_that_load(cnn_run):
    result, run_dir = cnn_run
    files = sorted((run_dir / "checkpoints").iterdir())
    assert [f.name for f in files] == [f"epoch_{e}.pt" for e in range(1, EPOCHS + 1)]
    ckpt = torch.load(files[-1], weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "epoch", "step"}
    assert (ckpt["epoch"], ckpt["step"]) == (EPOCHS, result.steps)
    assert any("momentum_buffer" in s for s in ckpt["optimizer"]["state"].values())
    model = models.healthy_cnn()
    model.load_state_dict(ckpt["model"])  # strict: keys and shapes match the factory
    probe = torch.load(run_dir / "probe.pt", weights_only=True)
    assert isinstance(probe, torch.Tensor) and probe.shape == (16, 1, 12, 12)
    assert model.eval()(probe).shape == (16, 4)


def test_run_is_deterministic(cnn_run, tmp_path):
    result, _ = cnn_run
    again = make_samples.generate_run(make_samples.RUNS["healthy_cnn"], tmp_path, epochs=EPOCHS)
    assert again.final == result.final


def test_cli_mlp_run_uses_its_own_tags_and_safetensors(tmp_path, capsys):
    assert make_samples.main(["--out", str(tmp_path), "--only", "healthy_mlp", "--epochs", "1"]) == 0
    assert capsys.readouterr().out.startswith("healthy_mlp")
    run_dir = tmp_path / "healthy_mlp"
    tags = _events(run_dir).Tags()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate"} <= set(tags["scalars"])
    assert "weights/head.weight" in tags["histograms"] and "gradients/head.weight" in tags["histograms"]
    assert not any(t.startswith(("train/", "weight_hist/")) for t in tags["scalars"] + tags["histograms"])
    (ckpt,) = (run_dir / "checkpoints").iterdir()
    assert ckpt.name == "step-32.safetensors"
    with safe_open(str(ckpt), framework="pt") as f:
        assert f.metadata()["step"] == "32"
        assert set(f.keys()) == set(models.healthy_mlp().state_dict())
