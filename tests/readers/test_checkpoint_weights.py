"""Checkpoint weights found by structure, not by key name (issue 12): the largest mapping of names to tensors
anywhere in the saved object that is not optimizer-shaped, and the key path it was found at."""
from __future__ import annotations

import pytest
import torch

from builders import ckpt_builders as cb
from report_gen.readers.checkpoint import CheckpointError, open_checkpoint


def _params(ckpt) -> list[str]:
    return [n for n, t in ckpt.tensors.items() if t.role == "param"]


def test_weights_under_an_unlisted_key_beside_the_optimizer_state(tmp_path):
    model, opt = cb.trained_model_and_optimizer("adam", steps=2)
    torch.save({"step": 200, "model_state": model.state_dict(), "optimizer_state": opt.state_dict()},
               tmp_path / "step_200.pt")
    ckpt = open_checkpoint(str(tmp_path / "step_200.pt"))
    assert ckpt.weights_at == "model_state" and ckpt.step == 200
    assert _params(ckpt) == [n for n, _ in model.named_parameters()]
    assert ckpt.optimizer is not None and ckpt.optimizer["kind"] == "adam"  # still mapped to those names
    torch.testing.assert_close(ckpt.load("fc.weight"), model.fc.weight.detach())


@pytest.mark.parametrize("layout, path", [
    (lambda sd, small: {"nets": {"discriminator": small, "generator": sd}, "epoch": 3}, "nets/generator"),
    (lambda sd, small: {"weights": [small, sd]}, "weights/[1]"),
    (lambda sd, small: {"model": small, "ema": sd}, "ema"),  # the larger, whatever the key
    (lambda sd, small: {"state_dict": sd, "backup": dict(sd)}, "state_dict"),  # a tie: the conventional key
    (lambda sd, small: sd, ""),
])
def test_the_largest_state_dict_anywhere_wins(tmp_path, layout, path):
    sd = cb.tiny_state()
    small = {"head.weight": torch.ones(2, 2)}
    torch.save(layout(sd, small), tmp_path / "c.pt")
    ckpt = open_checkpoint(str(tmp_path / "c.pt"))
    assert ckpt.weights_at == path
    assert set(ckpt.tensors) == set(sd)


def test_optimizer_state_is_never_taken_for_the_model(tmp_path):
    """Adam's per-parameter state is a mapping of names to tensors too ({"exp_avg": ..., "exp_avg_sq": ...})."""
    model, opt = cb.trained_model_and_optimizer("adam", steps=2)
    torch.save({"optimizer_state": opt.state_dict(), "step": 3}, tmp_path / "opt_only.pt")
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(str(tmp_path / "opt_only.pt"))
    assert err.value.kind == "optimizer-only"
    state = opt.state_dict()["state"][0]
    torch.save({"moments": {"exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]},
                "model": {"w": torch.zeros(3)}}, tmp_path / "small_model.pt")
    ckpt = open_checkpoint(str(tmp_path / "small_model.pt"))  # the moments are bigger, but not a model
    assert ckpt.weights_at == "model" and list(ckpt.tensors) == ["w"]


def test_a_negative_epoch_is_no_step(tmp_path):
    torch.save({"epoch": -1, "model": cb.tiny_state()}, tmp_path / "best.pt")  # Ultralytics' stripped weights
    assert open_checkpoint(str(tmp_path / "best.pt")).step_source == "mtime"
