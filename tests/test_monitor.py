"""TrainingMonitor: tags and step counts read back with TensorBoard, hooks, DDP gather."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from report_gen.monitor import TrainingMonitor, default_layers


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.Tanh(),
                         nn.Linear(8, 2))


def _read(log_dir) -> dict[tuple[str, str], list]:
    """(run, tag) -> events for scalars and histograms of every run folder under log_dir."""
    mux = EventMultiplexer(size_guidance={"scalars": 0, "histograms": 0})
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    out = {}
    for run, tags in mux.Runs().items():
        for tag in tags["scalars"]:
            out[(run, tag)] = mux.Scalars(run, tag)
        for tag in tags["histograms"]:
            out[(run, tag)] = mux.Histograms(run, tag)
    return out


def _steps(events) -> list[int]:
    return [e.step for e in events]


def _train(monitor, model, steps, *, split=False, validate=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=generator)
        y = torch.randint(0, 2, (4,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if split:
            monitor.log_gradients(model, step)
            optimizer.step()
            monitor.log_after_step(model, step, loss=loss, optimizer=optimizer)
        else:
            monitor.log_training_step(model, x, step, loss=loss, optimizer=optimizer)
            optimizer.step()
        if validate:
            model.eval()
            with torch.no_grad():
                model(torch.full((2, 3, 8, 8), 100.0))  # must not leak into the logged statistics
            model.train()


@pytest.mark.parametrize("split", [False, True])
def test_twenty_steps_write_every_tag_family_with_the_right_steps(tmp_path, split):
    model = _model()
    with TrainingMonitor(tmp_path, model=model, hist_interval=10, scalar_interval=5) as monitor:
        _train(monitor, model, 20, split=split, validate=True)
        assert monitor.layers == ["1", "4"]
    assert all(not m._forward_hooks for m in model.modules())

    events = _read(tmp_path)
    scalar_steps, hist_steps = [0, 5, 10, 15], [0, 10]
    for tag in ["train/loss", "train/lr", "train/grad_norm"]:
        assert _steps(events[(".", tag)]) == scalar_steps, tag
    params = [name for name, _ in model.named_parameters()]
    for name in params:
        assert _steps(events[(".", f"weight_hist/{name}")]) == hist_steps
        assert _steps(events[(".", f"grad_hist/{name}")]) == hist_steps
        assert _steps(events[(".", f"update_ratio/{name}")]) == scalar_steps
    for layer in ["1", "4"]:
        assert _steps(events[(".", f"activations/{layer}")]) == hist_steps
        for key in ["mean", "std", "max", "min"]:
            assert _steps(events[(f"activation_stats_{layer}_{key}", f"activation_stats/{layer}")]) == scalar_steps
    assert events[(".", "train/lr")][0].value == pytest.approx(0.1)
    assert events[("activation_stats_4_max", "activation_stats/4")][0].value <= 1.0  # tanh, no eval leak
    ratio = events[(".", "update_ratio/0.weight")][0].value
    assert 0 < ratio < 1


def test_logged_values_match_the_training_forward(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(4, 3, 8, 8)
    with TrainingMonitor(tmp_path, model=model, hist_interval=1, scalar_interval=1) as monitor:
        loss = model(x).square().mean()
        loss.backward()
        before = model[0].weight.detach().clone()
        with torch.no_grad():  # functional: calling the modules would fire the armed hooks again
            relu = torch.relu(nn.functional.conv2d(x, model[0].weight, model[0].bias))
            grad_norm = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))
        monitor.log_training_step(model, x, 0, loss=loss, optimizer=optimizer)
        optimizer.step()
        optimizer.zero_grad()
        monitor.log_training_step(model, None, 1)
        expected_ratio = (model[0].weight - before).norm() / before.norm()

    events = _read(tmp_path)
    value = {key: events[(f"activation_stats_1_{key}", "activation_stats/1")][0].value
             for key in ["mean", "std", "max", "min"]}
    assert value["mean"] == pytest.approx(relu.mean().item(), rel=1e-5)
    assert value["std"] == pytest.approx(relu.std().item(), rel=1e-4)
    assert value["max"] == pytest.approx(relu.max().item(), rel=1e-6)
    assert value["min"] == 0.0
    assert events[(".", "train/loss")][0].value == pytest.approx(loss.item(), rel=1e-6)
    assert events[(".", "train/grad_norm")][0].value == pytest.approx(grad_norm.item(), rel=1e-5)
    assert events[(".", "update_ratio/0.weight")][0].value == pytest.approx(expected_ratio.item(), rel=1e-5)
    histogram = events[(".", "activations/1")][0].histogram_value
    assert histogram.num == relu.numel() and histogram.max == pytest.approx(relu.max().item())


def test_inputs_are_probed_when_the_training_forward_was_not_captured(tmp_path):
    model = _model()
    x = torch.randn(4, 3, 8, 8)
    with TrainingMonitor(tmp_path, scalar_interval=1) as monitor:   # no model= : first call attaches
        model(x).sum().backward()
        monitor.log_training_step(model, x, 0)
        assert model.training
    events = _read(tmp_path)
    with torch.no_grad():
        expected = model[1](model[0](x)).mean().item()
    assert events[("activation_stats_1_mean", "activation_stats/1")][0].value == pytest.approx(expected, rel=1e-5)


def test_sample_probability_zero_logs_no_activations_and_user_writer_stays_open(tmp_path):
    model = _model()
    writer = SummaryWriter(str(tmp_path))
    with TrainingMonitor(writer, model=model, scalar_interval=2, activation_sample_prob=0.0) as monitor:
        _train(monitor, model, 4)
    writer.add_scalar("after/close", 1.0, 0)  # still usable: the monitor did not close it
    writer.close()
    events = _read(tmp_path)
    assert not any(tag.startswith("activation") for _, tag in events)
    assert _steps(events[(".", "train/loss")]) == [0, 2]


def test_hooks_are_removed_on_exception_and_nonfinite_weights_do_not_crash(tmp_path):
    model = _model()
    with pytest.raises(RuntimeError, match="stop"):
        with TrainingMonitor(tmp_path, model=model, hist_interval=1, scalar_interval=1) as monitor:
            with torch.no_grad():
                model[3].weight[0, 0] = math.nan
            model(torch.randn(2, 3, 8, 8)).sum().backward()
            monitor.log_training_step(model, None, 0)
            raise RuntimeError("stop")
    assert all(not m._forward_hooks for m in model.modules())
    histogram = _read(tmp_path)[(".", "weight_hist/3.weight")][0].histogram_value
    assert math.isnan(histogram.max) and histogram.num == model[3].weight.numel()


def test_non_zero_rank_writes_nothing_and_bad_layers_are_rejected(tmp_path):
    model = _model()
    with TrainingMonitor(tmp_path / "r1", model=model, rank=1) as monitor:
        _train(monitor, model, 3)
    assert not (tmp_path / "r1").exists()
    with pytest.raises(ValueError, match="nope"):
        TrainingMonitor(tmp_path / "x", model=model, layers=["nope"])


def test_default_layers_are_capped_and_spread():
    model = nn.Sequential(*[nn.ReLU() for _ in range(40)])
    layers = default_layers(model)
    assert len(layers) == 16 and layers[0] == "0" and layers[-1] == "39"


def _ddp_worker(rank: int, init_file: str, log_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        with torch.no_grad():
            net[0].weight.fill_(1.0)
            net[0].bias.zero_()
        model = nn.parallel.DistributedDataParallel(net)
        with TrainingMonitor(log_dir, model=model, scalar_interval=1, hist_interval=1) as monitor:
            x = torch.full((2, 4), float(rank + 1))      # ReLU outputs 4 on rank 0, 8 on rank 1
            loss = model(x).sum() * 0 + float(rank + 1)  # loss 1 on rank 0, 2 on rank 1
            loss.backward()
            monitor.log_training_step(model, x, 0, loss=loss)
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_gather_activation_stats_and_only_rank_zero_writes(tmp_path):
    # fork: the children skip re-importing torch and tensorboard (spawn takes ~8 s on 2 cores)
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "logs")), nprocs=2,
                       join=True, start_method="fork")
    events = _read(tmp_path / "logs")
    value = {key: events[(f"activation_stats_1_{key}", "activation_stats/1")][0].value
             for key in ["mean", "max", "min"]}
    assert value == {"mean": pytest.approx(6.0), "max": 8.0, "min": 4.0}
    assert events[(".", "train/loss")][0].value == pytest.approx(1.5)
    assert (".", "weight_hist/0.weight") in events  # unwrapped names, no "module." prefix
    assert len([p for p in os.listdir(tmp_path / "logs") if p.startswith("events")]) == 1


def test_conv_output_is_recorded_before_an_inplace_relu_changes_it(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with TrainingMonitor(tmp_path, model=model, layers=["0"], hist_interval=1, scalar_interval=1) as monitor:
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        monitor.log_training_step(model, None, 0)
    events = _read(tmp_path)
    assert events[(".", "activations/0")][0].histogram_value.min < 0
    assert events[("activation_stats_0_min", "activation_stats/0")][0].value < 0


def test_unusable_inputs_only_warn(tmp_path):
    model = _model()
    x, y = torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64)
    with TrainingMonitor(tmp_path, scalar_interval=1) as monitor:
        model(x).sum().backward()
        with pytest.warns(UserWarning, match="step 0"):
            monitor.log_training_step(model, (x, y), 0, loss=1.0)   # a whole (inputs, targets) batch
    events = _read(tmp_path)
    assert _steps(events[(".", "train/loss")]) == [0]
    assert not any(tag.startswith("activation_stats") for _, tag in events)


def test_every_tag_the_monitor_writes_is_read_back_in_its_intended_role(tmp_path):
    """The monitor and the tag → signal mapping share one vocabulary: nothing written lands nowhere."""
    from report_gen.readers.discovery import discover
    from report_gen.readers.events import read_events
    from report_gen.readers.signals import build_signals

    model = _model()
    with TrainingMonitor(tmp_path, model=model, hist_interval=2, scalar_interval=1) as monitor:
        _train(monitor, model, 4)
        layers = monitor.layers
    params = [name for name, _ in model.named_parameters()]
    written = _read(tmp_path)
    [spec] = discover([str(tmp_path)])
    sig = build_signals(read_events(spec.event_files))

    read_back = {(role, getattr(sig, role).tag) for role in ("train_loss", "lr", "grad_norm")}
    read_back |= {(role, name) for role in ("weight_hist", "grad_hist", "update_ratio", "act_hist")
                  for name in getattr(sig, role)}
    read_back |= {("act_stats", (layer, key)) for layer, stats in sig.act_stats.items() for key in stats}
    intended = {("train_loss", "train/loss"), ("lr", "train/lr"), ("grad_norm", "train/grad_norm")}
    intended |= {(role, p) for role in ("weight_hist", "grad_hist", "update_ratio") for p in params}
    intended |= {("act_hist", layer) for layer in layers}
    intended |= {("act_stats", (layer, key)) for layer in layers for key in ("mean", "std", "max", "min")}
    assert read_back == intended
    assert len(written) == len(intended)  # every (run folder, tag) written is one of them
    assert not (sig.other_scalars or sig.other_losses or sig.train_acc or sig.val_loss)
