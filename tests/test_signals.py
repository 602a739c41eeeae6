"""Tag → signal mapping (DESIGN §6) on event files written the ways users write them."""
import numpy as np
from torch.utils.tensorboard import SummaryWriter

from builders.event_builders import make_hist_event, make_scalar_event, make_version_event, write_records
from report_gen.readers.discovery import discover
from report_gen.readers.events import read_events
from report_gen.readers.signals import Signals, TagConventions, build_signals, is_evaluation_series, param_name


def _signals(path) -> Signals:
    [spec] = discover([str(path)])
    return build_signals(read_events(spec.event_files))


def test_param_names_accept_slashes():
    assert param_name("layer1/0/conv1/weight") == "layer1.0.conv1.weight"


def test_tutorial_conventions_with_torch_writer(tmp_path):
    w = SummaryWriter(str(tmp_path / "run"))
    for step in range(3):
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_scalar("val/loss", 1.2 / (step + 1), step)
        w.add_scalar("train/acc", 0.5 + step / 10, step)
        w.add_scalar("val/acc", 0.4 + step / 10, step)
        w.add_scalar("train/lr", 0.1, step)
        w.add_scalar("train/grad_norm", 2.0, step)
        w.add_histogram("weight_hist/layer1.0.conv1.weight", np.random.randn(50), step)
        w.add_histogram("grad_hist/layer1.0.conv1.weight", np.random.randn(50) * 1e-3, step)
        w.add_histogram("activations/relu1", np.abs(np.random.randn(50)), step)
        w.add_scalars("activation_stats/layer1.relu", {"mean": 0.5, "std": 0.2, "max": 2.0, "min": 0.0}, step)
        w.add_scalar("update_ratio/fc.weight", 1e-3, step)
    w.close()
    s = _signals(tmp_path / "run")
    assert s.train_loss.tag == "train/loss" and len(s.train_loss) == 3
    assert s.val_loss.tag == "val/loss"
    assert s.train_acc.tag == "train/acc" and s.val_acc.tag == "val/acc"
    assert s.lr.tag == "train/lr" and s.grad_norm.tag == "train/grad_norm"
    assert list(s.weight_hist) == ["layer1.0.conv1.weight"]
    assert list(s.grad_hist) == ["layer1.0.conv1.weight"]
    assert list(s.act_hist) == ["relu1"]
    # add_scalars wrote sibling folders; they are regrouped under the run
    assert set(s.act_stats["layer1.relu"]) == {"mean", "std", "max", "min"}
    np.testing.assert_allclose(s.act_stats["layer1.relu"]["max"].values, [2.0, 2.0, 2.0])
    assert list(s.update_ratio) == ["fc.weight"]


def test_second_convention_and_generic_loss_names(tmp_path):
    recs = [make_version_event()]
    for step in range(4):
        recs += [make_scalar_event("loss/train", step, 1.0 - step / 10),
                 make_scalar_event("loss/val", step, 1.1 - step / 10),
                 make_scalar_event("accuracy/val", step, 0.5),
                 make_scalar_event("learning_rate", step, 0.01),
                 make_scalar_event("train/box_loss", step, 3.0),
                 make_hist_event("weights/fc/weight", step, np.arange(10.0)),
                 make_hist_event("fc.weight/grad", step, np.arange(10.0) * 1e-3),
                 make_hist_event("conv1.weight", step, np.arange(10.0))]
    write_records(tmp_path / "run" / "events.out.tfevents.1.host", recs)
    s = _signals(tmp_path / "run")
    assert s.train_loss.tag == "loss/train"
    assert s.val_loss.tag == "loss/val"
    assert s.val_acc.tag == "accuracy/val"
    assert s.lr.tag == "learning_rate"
    assert "train/box_loss" in s.other_losses
    assert set(s.weight_hist) == {"fc.weight", "conv1.weight"}
    assert set(s.grad_hist) == {"fc.weight"}


def test_keras_train_and_validation_folders_form_one_run(tmp_path):
    for phase, base in (("train", 1.0), ("validation", 1.5)):
        write_records(tmp_path / "logs" / phase / "events.out.tfevents.1.host.v2",
                      [make_version_event()] + [make_scalar_event("epoch_loss", e, base - e / 10) for e in range(5)]
                      + [make_scalar_event("epoch_accuracy", e, 0.5 + e / 20) for e in range(5)])
    [spec] = discover([str(tmp_path / "logs")])
    assert sorted(sub for _, sub in spec.event_files) == ["train", "validation"]
    s = build_signals(read_events(spec.event_files))
    np.testing.assert_allclose(s.train_loss.values, [1.0, 0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(s.val_loss.values, [1.5, 1.4, 1.3, 1.2, 1.1])
    assert s.train_acc is not None and s.val_acc is not None


def test_configured_prefixes_extend_the_defaults(tmp_path):
    write_records(tmp_path / "r" / "events.out.tfevents.1",
                  [make_hist_event("my_grads/fc.weight", 0, np.arange(5.0))])
    [spec] = discover([str(tmp_path / "r")])
    data = read_events(spec.event_files)
    assert build_signals(data).grad_hist == {}
    conv = TagConventions(grad_hist=("my_grads/",) + TagConventions().grad_hist)
    assert list(build_signals(data, conv).grad_hist) == ["fc.weight"]


def test_ultralytics_and_lightning_style_tags(tmp_path):
    recs = [make_version_event()]
    for e in range(5):
        recs += [make_scalar_event(t, e, 1.0 - e / 10) for t in
                 ("train/box_loss", "train/cls_loss", "val/box_loss", "val/cls_loss", "lr/pg0", "metrics/mAP50(B)")]
        recs += [make_scalar_event("val_loss", e, 0.9), make_scalar_event("epoch", e, e)]
    write_records(tmp_path / "yolo" / "events.out.tfevents.1", recs)
    s = _signals(tmp_path / "yolo")
    # no total: the loss is the sum of the components logged at the same steps (the optimizer's objective)
    assert s.train_loss.tag == "train/box_loss+cls_loss"
    np.testing.assert_allclose(s.train_loss.values, [2 * (1.0 - e / 10) for e in range(5)])
    assert {"train/box_loss", "train/cls_loss"} <= set(s.other_losses)
    assert s.val_loss.tag == "val_loss"  # the conventional name wins over the generic ones
    assert {"val/box_loss", "val/cls_loss"} <= set(s.other_losses)
    assert s.lr.tag == "lr/pg0"
    assert "metrics/mAP50(B)" in s.other_scalars and "epoch" in s.other_scalars


def test_tf1_estimator_eval_subfolder_is_validation(tmp_path):
    write_records(tmp_path / "model_dir" / "events.out.tfevents.1",
                  [make_version_event()] + [make_scalar_event("loss", i, 1.0 / (i + 1)) for i in range(5)])
    write_records(tmp_path / "model_dir" / "eval" / "events.out.tfevents.2",
                  [make_version_event()] + [make_scalar_event("loss", i * 2, 1.5 / (i + 1)) for i in range(3)])
    s = _signals(tmp_path / "model_dir")
    assert len(s.train_loss) == 5 and s.train_loss.tag == "loss"
    assert len(s.val_loss) == 3 and s.val_loss.tag == "eval/loss"


def test_loss_scale_and_other_near_misses_are_not_losses():
    from report_gen.readers.signals import _metric

    assert _metric("train/loss_scale") is None
    assert _metric("amp/loss_scaler") is None
    for tag in ("train/loss", "loss/train", "val_loss", "Logloss", "epoch_loss", "train/box_loss", "box_loss/val", "loss"):
        assert _metric(tag) == "loss", tag


def test_lightning_step_and_epoch_series_of_a_loss_are_that_loss(tmp_path):
    """self.log("train_loss", on_step=True, on_epoch=True) writes train_loss_step and train_loss_epoch
    (DESIGN §6): the epoch series is the trend, the step series stays available for spikes."""
    recs = [make_version_event()]
    for step in range(40):
        recs.append(make_scalar_event("train_loss_step", step, 1.0 / (step + 1)))
        if step % 10 == 9:
            recs += [make_scalar_event("train_loss_epoch", step, 1.0 / (step + 1)),
                     make_scalar_event("val_loss", step, 1.2 / (step + 1)),
                     make_scalar_event("val_acc", step, 0.5 + step / 100), make_scalar_event("epoch", step, step // 10)]
    write_records(tmp_path / "lightning_logs" / "version_0" / "events.out.tfevents.1", recs)
    s = _signals(tmp_path / "lightning_logs" / "version_0")
    assert s.train_loss.tag == "train_loss_epoch" and len(s.train_loss) == 4
    assert "train_loss_step" in s.other_losses and len(s.other_losses["train_loss_step"]) == 40
    assert s.val_loss.tag == "val_loss" and s.val_acc.tag == "val_acc"
    assert "epoch" in s.other_scalars  # a counter, not a metric


def test_a_lightning_epoch_series_is_no_epoch_counter_for_the_evaluation_merge():
    """A file holding only evaluation series is merged as an evaluation pass; `epoch` (HF) counts as one,
    Lightning's train_loss_epoch (a training loss) does not."""
    assert is_evaluation_series("epoch") and is_evaluation_series("train/epoch")
    assert is_evaluation_series("val_loss_epoch") and is_evaluation_series("loss", "eval")
    assert not is_evaluation_series("train_loss_epoch") and not is_evaluation_series("train/loss")


def test_yolov10_head_terms_are_loss_components_summed_into_the_loss(tmp_path):
    """YOLOv10's results.csv names its terms per head: box_om/cls_om/dfl_om (one-to-many), *_oo (one-to-one)."""
    terms = [f"{t}_{h}" for h in ("om", "oo") for t in ("box", "cls", "dfl")]
    recs = [make_version_event()]
    for e in range(4):
        recs += [make_scalar_event(f"{phase}/{t}", e, 1.0 + i + e / 10) for phase in ("train", "val")
                 for i, t in enumerate(terms)]
    write_records(tmp_path / "v10" / "events.out.tfevents.1", recs)
    s = _signals(tmp_path / "v10")
    assert s.train_loss.tag == "train/" + "+".join(sorted(terms))
    np.testing.assert_allclose(s.train_loss.values, [sum(1.0 + i + e / 10 for i in range(6)) for e in range(4)])
    assert s.val_loss.tag.startswith("val/box_om+")
    assert all(f"train/{t}" in s.other_losses for t in terms)
