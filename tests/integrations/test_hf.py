"""report_gen.integrations.hf.ReportGenCallback in real (tiny, CPU) Hugging Face Trainer runs."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers  # the `test` extra installs transformers and accelerate (the Trainer needs it)
from torch import nn

from builders.integration_kit import diagnose_fully, tiny_cnn, tiny_task
from report_gen.integrations.hf import ReportGenCallback


class TinyClassifier(nn.Module):
    """What the Trainer needs from a model: keyword inputs in, a dict with the loss out."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def _examples(n: int, seed: int) -> list[dict]:
    x, y = tiny_task(n, seed)
    return [{"x": xi, "labels": yi} for xi, yi in zip(x, y)]


def _train(out: Path, callback, evaluate: bool = False, **arg_overrides) -> None:
    torch.manual_seed(0)
    settings = dict(output_dir=str(out), max_steps=40, per_device_train_batch_size=32, learning_rate=3e-3,
                    lr_scheduler_type="constant", logging_steps=2, report_to="none", use_cpu=True, seed=0,
                    disable_tqdm=True)
    if evaluate:
        settings.update(eval_strategy="steps", eval_steps=5, per_device_eval_batch_size=64)
    settings.update(arg_overrides)
    args = transformers.TrainingArguments(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.Trainer(model=TinyClassifier(), args=args, train_dataset=_examples(256, 0),
                             eval_dataset=_examples(128, 1) if evaluate else None, callbacks=[callback]).train()


def _tags(folder: Path) -> set[str]:
    """Tags of the event files directly in `folder`, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return {v.tag for f in folder.glob("events.out.tfevents.*")
            for event in EventFileLoader(str(f)).Load() for v in event.summary.value}


def test_default_trainer_run_is_fully_diagnosed(tmp_path):
    _train(tmp_path, ReportGenCallback(hist_interval=5, scalar_interval=1), evaluate=True)
    tags = _tags(tmp_path)
    assert {"weight_hist/net.0.weight", "grad_hist/net.0.weight", "update_ratio/net.0.weight"} <= tags, sorted(tags)
    # the Trainer's own logs (loss, grad_norm, lr, eval_loss) are read from its trainer_state.json, not copied
    assert not any(t.startswith(("train/", "eval/")) for t in tags), sorted(tags)
    # the Trainer's own checkpoint, with the optimizer state: nothing added
    assert (tmp_path / "checkpoint-40" / "optimizer.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-40"]
    report = diagnose_fully(tmp_path)
    assert report["inputs"]["runs"][0]["checkpoints"] == 1
    evaluated = {e["code"] for e in report["evaluated"]}
    assert {"L102", "L104", "L105", "G102"} <= evaluated  # loss, eval_loss and grad_norm from trainer_state.json


def test_with_tensorboard_reporting_no_tag_is_written_twice(tmp_path):
    _train(tmp_path, ReportGenCallback(hist_interval=5, scalar_interval=1), report_to="tensorboard")
    [hf_dir] = (tmp_path / "runs").iterdir()
    assert "train/loss" in _tags(hf_dir)
    ours = _tags(tmp_path)
    assert "weight_hist/net.0.weight" in ours and not any(t.startswith(("train/", "eval/")) for t in ours)
    diagnose_fully(tmp_path)  # one run, and no 'restart' problem from a tag written by two writers


def test_asks_for_a_checkpoint_when_the_trainer_saves_none(tmp_path):
    _train(tmp_path / "a", ReportGenCallback(hist_interval=5, scalar_interval=1), save_strategy="no")
    assert (tmp_path / "a" / "checkpoint-40" / "optimizer.pt").is_file()
    diagnose_fully(tmp_path / "a")
    _train(tmp_path / "b", ReportGenCallback(save_checkpoints=False), save_strategy="no", max_steps=4)
    assert not list((tmp_path / "b").glob("checkpoint-*"))


def test_only_process_zero_writes(tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state = transformers.TrainerState(is_world_process_zero=False, max_steps=10)
    control = transformers.TrainerControl()
    callback, model = ReportGenCallback(hist_interval=1, scalar_interval=1), TinyClassifier()
    callback.on_train_begin(args, state, control, model=model)
    x, y = tiny_task(8)
    model(x, y)["loss"].backward()
    callback.on_pre_optimizer_step(args, state, control, model=model)
    callback.on_optimizer_step(args, state, control, model=model)
    callback.on_train_end(args, state, control)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_unknown_option_is_refused_at_construction():
    with pytest.raises(TypeError, match="scalar_every"):
        ReportGenCallback(scalar_every=5)
