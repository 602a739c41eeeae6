import pytest
import torch

from builders.event_builders import make_scalar_event, make_version_event, write_records
from report_gen.core import InputError
from report_gen.readers.discovery import discover


def _events(path):
    write_records(path, [make_version_event(), make_scalar_event("loss", 0, 1.0)])


def test_log_dir_with_several_runs_and_checkpoints(tmp_path):
    _events(tmp_path / "a" / "events.out.tfevents.1")
    _events(tmp_path / "a" / "sub_metric_x" / "events.out.tfevents.2")  # add_scalars sibling
    _events(tmp_path / "b c ü" / "events.out.tfevents")  # spaces, unicode, no suffix (CatBoost)
    (tmp_path / "a" / "checkpoints").mkdir()
    torch.save({"w": torch.zeros(2)}, tmp_path / "a" / "checkpoints" / "epoch_1.pt")
    (tmp_path / "only_ckpts").mkdir()
    torch.save({"w": torch.zeros(2)}, tmp_path / "only_ckpts" / "x.pt")
    runs = {r.name: r for r in discover([str(tmp_path)])}
    assert set(runs) == {"a", "b c ü", "only_ckpts"}
    assert sorted(sub for _, sub in runs["a"].event_files) == ["", "sub_metric_x"]
    assert [p.rsplit("/", 1)[-1] for p in runs["a"].checkpoints] == ["epoch_1.pt"]
    assert runs["only_ckpts"].event_files == [] and len(runs["only_ckpts"].checkpoints) == 1


def test_single_files_are_runs(tmp_path):
    ev = tmp_path / "r" / "events.out.tfevents.9"
    _events(ev)
    ck = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, ck)
    a, b = discover([str(ev), str(ck)])
    assert a.event_files == [(str(ev), "")] and b.checkpoints == [str(ck)]


def test_missing_path_empty_folder_and_unknown_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no TensorBoard event files or checkpoints"):
        discover([str(tmp_path / "empty")])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not an event file"):
        discover([str(tmp_path / "notes.txt")])


def test_folder_of_safetensors_steps_is_a_series_but_hf_folder_is_one(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "run" / "ckpts").mkdir(parents=True)
    for step in (10, 20, 30):
        save_file({"w": torch.zeros(2)}, str(tmp_path / "run" / "ckpts" / f"step-{step}.safetensors"))
    hf = tmp_path / "run" / "checkpoint-500"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(hf / "model.safetensors"))
    _events(tmp_path / "run" / "events.out.tfevents.1")
    [run] = discover([str(tmp_path / "run")])
    names = sorted(p.rsplit("/", 1)[-1] for p in run.checkpoints)
    assert names == ["checkpoint-500", "step-10.safetensors", "step-20.safetensors", "step-30.safetensors"]


def test_trainer_output_folder_keeps_its_events_and_checkpoints(tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(out / "model.safetensors"))  # the final model
    _events(out / "events.out.tfevents.1")  # events beside it
    ck = out / "checkpoint-500"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    save_file({"w": torch.ones(2)}, str(ck / "model.safetensors"))
    [run] = discover([str(out)])
    assert [f.rsplit("/", 1)[-1] for f, _ in run.event_files] == ["events.out.tfevents.1"]
    assert sorted(p.rsplit("/", 1)[-1] for p in run.checkpoints) == ["checkpoint-500", "out"]


def test_repeated_and_nested_paths_are_read_once(tmp_path):
    _events(tmp_path / "b" / "run" / "events.out.tfevents.1")
    _events(tmp_path / "b" / "other" / "events.out.tfevents.1")
    runs = discover([str(tmp_path / "b" / "run"), str(tmp_path / "b"), str(tmp_path / "b")])
    assert sorted(r.name for r in runs) == ["other", "run"]
