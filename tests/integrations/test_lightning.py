"""report_gen.integrations.lightning.ReportGenCallback in real (tiny, CPU) Lightning trainings."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as L  # the `test` extra installs lightning and pytorch_lightning
import pytest
import torch
from torch import nn

from builders.integration_kit import diagnose_fully, tiny_cnn, tiny_task
from report_gen.integrations.lightning import ReportGenCallback


class TinyModule(L.LightningModule):
    """A LightningModule that logs its loss the usual Lightning way (train_loss_step / _epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loader(batch: int = 32) -> torch.utils.data.DataLoader:
    x, y = tiny_task()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def _fit(pl, root: Path, callback, module=None, **trainer_kwargs) -> None:
    torch.manual_seed(0)
    settings = dict(max_epochs=5, default_root_dir=str(root), accelerator="cpu", devices=1, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False)
    settings.update(trainer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about dataloader workers and the like
        pl.Trainer(callbacks=[callback], **settings).fit(module or TinyModule(), _loader())


def _tags(event_file: Path) -> set[str]:
    """Tags in one event file, read with TensorBoard's own loader (independent of report_gen)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return {v.tag for event in EventFileLoader(str(event_file)).Load() for v in event.summary.value}


def test_tensorboard_logger_run_is_fully_diagnosed(tmp_path):
    _fit(L, tmp_path, ReportGenCallback(hist_interval=5, scalar_interval=1))
    run = tmp_path / "lightning_logs" / "version_0"
    # the monitor wrote through the TensorBoardLogger's own SummaryWriter: ONE event file holds both
    # Lightning's metrics and report_gen's signals (add_scalars' sibling folders aside)
    [events] = run.glob("events.out.tfevents.*")
    tags = _tags(events)
    assert {"train_loss_step", "train/loss", "train/grad_norm", "train/lr"} <= tags, sorted(tags)
    assert {"weight_hist/net.0.weight", "grad_hist/net.0.weight", "update_ratio/net.0.weight"} <= tags
    assert any(p.name.startswith("activation_stats_net.1_") for p in run.iterdir())
    # Lightning's ModelCheckpoint already saves the optimizer state: the callback adds no checkpoint
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch=4-step=40.ckpt"]
    diagnose_fully(tmp_path)


def test_csv_logger_without_checkpointing_gets_own_events_and_checkpoints(tmp_path):
    logger = L.loggers.CSVLogger(str(tmp_path), name="csv")
    _fit(L, tmp_path, ReportGenCallback(hist_interval=5, scalar_interval=1, keep_checkpoints=2), logger=logger,
         enable_checkpointing=False)
    run = tmp_path / "csv" / "version_0"
    assert (run / "metrics.csv").is_file()
    [events] = run.glob("events.out.tfevents.*")  # the run's log dir, beside metrics.csv
    assert "train/loss" in _tags(events)
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert saved == ["report_gen-epoch=3-step=32.ckpt", "report_gen-epoch=4-step=40.ckpt"]  # the newest 2 of 5
    state = torch.load(run / "checkpoints" / saved[-1], weights_only=False, map_location="cpu")
    assert state["optimizer_states"][0]["state"], "the optimizer state is saved"
    assert state["global_step"] == 40
    diagnose_fully(run)


def test_explicit_log_dir_and_accumulation(tmp_path):
    target = tmp_path / "diag"
    _fit(L, tmp_path, ReportGenCallback(target, hist_interval=4, scalar_interval=1), accumulate_grad_batches=2,
         max_epochs=10, logger=False, enable_checkpointing=False)
    [events] = target.glob("events.out.tfevents.*")
    tags = _tags(events)
    assert "train/loss" in tags and "grad_hist/net.0.weight" in tags
    # 8 batches per epoch, 2 per optimizer step: 40 steps, checkpoints named by optimizer step
    assert sorted(p.name for p in (target / "checkpoints").iterdir())[-1] == "report_gen-epoch=9-step=40.ckpt"
    diagnose_fully(target)


def test_pytorch_lightning_import_name(tmp_path):
    import pytorch_lightning as pl

    assert issubclass(ReportGenCallback, pl.Callback) and issubclass(ReportGenCallback, L.Callback)

    class PlModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_cnn()

        training_step = TinyModule.training_step
        configure_optimizers = TinyModule.configure_optimizers

    _fit(pl, tmp_path, ReportGenCallback(hist_interval=5, scalar_interval=1), module=PlModule())
    [events] = (tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*")
    assert {"train/loss", "weight_hist/net.0.weight"} <= _tags(events)


def test_unknown_option_is_refused_at_construction():
    with pytest.raises(TypeError, match="hist_intervall"):
        ReportGenCallback(hist_intervall=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_only_rank_zero_writes(tmp_path):
    # two CPU processes (gloo): both run the hooks (statistics are all-reduced), rank 0 alone writes
    # (torchrun, as people launch DDP; ddp_spawn's shared-memory hand-over of the model is not allowed here)
    script = Path(__file__).with_name("lightning_ddp_run.py")
    helpers = [str(script.parent), str(script.parent.parent)]  # this test module, integration_kit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*helpers, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                           str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert len(list((run / "activation_stats_net.1_mean").iterdir())) == 1
    # each rank sees 4 batches of 32 per epoch: 8 steps, one checkpoint per epoch, written once
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "report_gen-epoch=0-step=4.ckpt", "report_gen-epoch=1-step=8.ckpt"]
    assert {"train/loss", "weight_hist/net.0.weight", "grad_hist/net.0.weight"} <= _tags(
        next(run.glob("events.out.tfevents.*")))
