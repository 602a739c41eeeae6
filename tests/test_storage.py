"""Remote inputs (storage.py) against moto's S3 server on 127.0.0.1, read through real s3fs, and
file:// URLs; transfer failures through a filesystem that fails on purpose."""
import json
import os
import shutil
import threading
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from builders import sweep_kit
from builders.ckpt_builders import tiny_state, write_safetensors
from report_gen.cli import main
from report_gen.core import InputError
from report_gen.engine import Options, diagnose
from report_gen.storage import (Listing, ObjectInfo, StorageSettings, UnsafeName, confined, display_url,
                                list_url, local_relpath, stage_inputs)


@pytest.fixture(scope="module")
def s3():
    server = sweep_kit.S3()
    server.bucket("runs")
    yield server
    server.stop()


def _options(s3) -> str:
    return json.dumps(s3.options)


def _cache_objects(cache) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (cache / "objects").rglob("*") if p.is_file()}


def test_diagnose_an_s3_run_names_the_url_and_reuses_the_cache(s3, tmp_path):
    sweep_kit.write_run(tmp_path / "src" / "run-nan", 1, fault="nan", lr=0.3)
    s3.upload(tmp_path / "src", "runs/a")
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["diagnose", "s3://runs/a/run-nan", "-o", str(out), "--format", "json",
            "--storage-options", _options(s3), "--cache-dir", str(cache)]
    assert main(argv) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["runs"][0]["path"] == "s3://runs/a/run-nan"
    assert report["inputs"]["runs"][0]["name"] == "run-nan"
    assert [f["code"] for f in report["findings"]] == ["L101"]
    assert str(cache) not in json.dumps(report)
    first = _cache_objects(cache)
    assert len(first) == 3  # the event file and two checkpoints
    assert not any((cache / "views").iterdir())  # the view is gone once the report is written

    assert main(argv) == 1
    assert _cache_objects(cache) == first  # same files, same inodes: nothing was fetched again

    sweep_kit.write_run(tmp_path / "src" / "run-nan", 1, fault=None, lr=0.3)  # the run is replaced: healthy now
    s3.upload(tmp_path / "src", "runs/a")
    assert main(argv) == 0  # the changed event file was fetched again (the report is the healthy run's)
    now = _cache_objects(cache)
    # old versions stay beside the new ones; a checkpoint re-uploaded with the same bytes within the same
    # second (same ETag, size and LastModified) is the same object and may be reused
    assert set(first) < set(now) and 4 <= len(now) <= 6


def test_only_what_the_readers_read_is_staged(s3, tmp_path):
    run = sweep_kit.write_run(tmp_path / "src" / "run", 2)
    (run / "data.csv").write_text("a,b\n" * 10_000)
    (run / "vocab.bin").write_bytes(b"\x00\x01" * 50_000)  # a .bin that is no checkpoint: only its head is read
    (run / "notes.txt").write_text("hello")
    (run / "export").mkdir()
    write_safetensors(run / "export" / "weights.bin", tiny_state(3))  # a .bin that is one
    s3.upload(tmp_path / "src", "runs/b")
    cache = tmp_path / "cache"
    report = diagnose(["s3://runs/b/run"], Options(storage=StorageSettings(s3.options, str(cache))))
    sizes = sorted(p.stat().st_size for p in (cache / "objects").rglob("*") if p.is_file())
    expected = sorted(p.stat().st_size for p in [*(run / "checkpoints").iterdir(), *run.glob("events*"),
                                                  run / "export" / "weights.bin"])
    assert sizes == expected
    assert report["inputs"]["runs"][0]["checkpoints"] == 3


def test_hostile_keys_never_leave_the_cache(s3, tmp_path):
    sweep_kit.write_run(tmp_path / "src" / "run", 4)
    s3.upload(tmp_path / "src", "runs/h")
    client = s3.client()
    event = (tmp_path / "src" / "run").glob("events*").__next__().read_bytes()
    long_name = "events.out.tfevents.1700000001." + "h" * 300
    for key in ["h/run/../../../escape.pt", "h/run/./dot.pt", f"h/run/{long_name}", "h/run/ctl\x1b[2J.pt",
                "h/run/back\\slash.pt"]:
        client.put_object(Bucket="runs", Key=key, Body=event if "tfevents" in key else b"not a checkpoint")
    cache = tmp_path / "cache"
    report = diagnose(["s3://runs/h/run"], Options(storage=StorageSettings(s3.options, str(cache))))
    problems = report["inputs"]["runs"][0]["problems"]
    unsafe = {p["file"] for p in problems if p["kind"] == "unsafe-name"}
    assert unsafe == {"s3://runs/h/run/../../../escape.pt", "s3://runs/h/run/./dot.pt",
                      "s3://runs/h/run/back\\slash.pt"}
    assert report["inputs"]["runs"][0]["event_files"] == 2  # the long-named one was staged under a shorter name
    for p in tmp_path.rglob("*"):  # nothing was written outside the cache and the sources
        assert p.is_relative_to(cache) or p.is_relative_to(tmp_path / "src"), p
    assert not (tmp_path / "escape.pt").exists()


@pytest.mark.parametrize("key", ["../x.pt", "a/../../x.pt", "./x.pt", "a\x00b", "a\\..\\b.pt", "", "///"])
def test_local_relpath_refuses_climbing_keys(key):
    with pytest.raises(UnsafeName):
        local_relpath(key)


def test_local_relpath_drops_empty_parts_and_shortens_long_ones(tmp_path):
    assert local_relpath("/a//b/c.pt") == os.path.join("a", "b", "c.pt")
    long = "é" * 400 + ".tfevents.x"
    short = local_relpath(f"run/{long}")
    assert len(os.path.basename(short).encode()) <= 255 and "tfevents" in short
    assert confined(tmp_path, short).is_relative_to(tmp_path)
    with pytest.raises(UnsafeName):
        confined(tmp_path, "/etc/passwd")


def test_a_listed_object_that_is_gone_is_a_problem_of_its_run(tmp_path):
    run = sweep_kit.write_run(tmp_path / "src" / "run", 5)
    url = f"file://{run}"
    listing = list_url(url, StorageSettings())
    gone = ObjectInfo("checkpoints/step_900.pt", 1234, "mtime=1")
    settings = StorageSettings(cache_dir=str(tmp_path / "cache"),
                               listings={url: Listing(listing.url, listing.root, False, listing.objects + (gone,))})
    report = diagnose([url], Options(storage=settings))
    hits = [f for f in report["findings"] if f["code"] == "I101"]
    assert [(f["subject"], f["severity"]) for f in hits] == [(f"{url}/checkpoints/step_900.pt", "error")]
    assert "gone" in hits[0]["message"]
    assert report["inputs"]["runs"][0]["checkpoints"] == 2  # the rest of the run was read


class FlakyFS(LocalFileSystem):
    """A local filesystem whose downloads fail: `flaky-N` names fail N times with a reset connection,
    `denied` names with a permission error. It stands in for a network we cannot make fail."""

    protocol = ("flaky",)
    calls: dict = {}

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def get_file(self, rpath, lpath, **kwargs):
        name = os.path.basename(rpath)
        n = FlakyFS.calls[name] = FlakyFS.calls.get(name, 0) + 1
        if "denied" in name:
            raise PermissionError(13, "Access Denied", rpath)
        if "flaky-" in name and n <= int(name.split("flaky-")[1].split(".")[0]):
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().get_file(rpath, lpath, **kwargs)


def test_transfers_are_retried_a_bounded_number_of_times(tmp_path):
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.calls.clear()
    run = sweep_kit.write_run(tmp_path / "src" / "run", 6)
    ckpts = run / "checkpoints"
    shutil.copy(ckpts / "step_0.pt", ckpts / "denied.pt")  # always refused
    (ckpts / "step_0.pt").rename(ckpts / "flaky-2.pt")  # fails twice, then works
    (ckpts / "step_590.pt").rename(ckpts / "flaky-9.pt")  # fails more often than we try
    settings = StorageSettings(cache_dir=str(tmp_path / "cache"), retries=3, backoff=0.001)
    report = diagnose([f"flaky://{run}"], Options(storage=settings))
    kinds = {os.path.basename(p["file"]): p["kind"] for p in report["inputs"]["runs"][0]["problems"]}
    assert kinds == {"flaky-9.pt": "transfer-failed", "denied.pt": "permission-denied"}
    assert FlakyFS.calls["flaky-2.pt"] == 3 and FlakyFS.calls["flaky-9.pt"] == 3 and FlakyFS.calls["denied.pt"] == 1
    assert report["inputs"]["runs"][0]["checkpoints"] == 1
    message = next(p["message"] for p in report["inputs"]["runs"][0]["problems"] if p["kind"] == "transfer-failed")
    assert "after 3 attempts" in message and "ConnectionResetError" in message


def test_concurrent_stagings_share_the_cache_safely(tmp_path):
    run = sweep_kit.write_run(tmp_path / "src" / "run", 7)
    settings = StorageSettings(cache_dir=str(tmp_path / "cache"))
    results, errors = [], []

    def stage():
        try:
            staged = stage_inputs([f"file://{run}"], settings)
            results.append(sorted(p.name for p in Path(staged.paths[0]).rglob("*") if p.is_file()))
            staged.publish({})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=stage) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == results[0] for r in results) and len(results[0]) == 3
    assert len(list((tmp_path / "cache" / "objects").rglob("*.*"))) == 0  # no partial file left as an object
    assert not any((tmp_path / "cache" / "tmp").iterdir())
    assert sum(1 for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()) == 3


def test_unusable_urls_are_one_line_errors(s3, tmp_path, capsys):
    cases = [
        (["s3://runs/no-such-prefix", "--storage-options", _options(s3)], "no such file or directory"),
        (["nosuchproto://x/y"], "unknown storage protocol 'nosuchproto'"),
        (["s3://runs/x", "--storage-options", "{not json"], "--storage-options: invalid JSON"),
        (["s3://runs/x", "--storage-options", "[1]"], "must be a JSON object"),
    ]
    for extra, message in cases:
        assert main(["diagnose", *extra, "-o", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_passwords_in_urls_are_not_shown():
    assert display_url("ftp://user:secret@host/path") == "ftp://user:***@host/path"
    assert display_url("abfs://container@account.dfs.core.windows.net/p") == "abfs://container@account.dfs.core.windows.net/p"


def test_a_url_with_nothing_readable_stops_diagnose(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("no run here")
    with pytest.raises(InputError, match="nothing could be staged"):
        diagnose([f"file://{tmp_path / 'src'}"], Options(storage=StorageSettings(cache_dir=str(tmp_path / "c"))))
    assert not any((tmp_path / "c" / "views").iterdir())  # no staging folder left behind


def test_fsspec_configuration_applies_without_storage_options(s3, tmp_path, monkeypatch):
    import fsspec.config

    sweep_kit.write_run(tmp_path / "src" / "run", 8)
    s3.upload(tmp_path / "src", "runs/conf")
    # what ~/.config/fsspec/s3.json or FSSPEC_S3_ENDPOINT_URL=... would hold
    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3.options))
    report = diagnose(["s3://runs/conf/run"], Options(storage=StorageSettings(cache_dir=str(tmp_path / "c"))))
    assert report["inputs"]["runs"][0]["path"] == "s3://runs/conf/run"
    assert report["summary"]["verdict"] == "pass"


REAL = Path(__file__).parent / "fixtures" / "real"
ONE_PER_FORMAT = ["lightning/csv_resumed_healthy", "ultralytics/yolo-detect-healthy", "hf/gpt2-healthy-tensorboard",
                  "mlflow/file_store_healthy", "mlflow/sqlite_healthy", "wandb/offline_healthy"]


def _without_timing(report: dict) -> dict:
    """The report as report.json holds it (pictures encoded), without what differs between two calls."""
    from report_gen.render.images import encoded

    return {k: v for k, v in encoded(report).items() if k not in ("created", "timing")}


@pytest.mark.parametrize("case", ONE_PER_FORMAT)
def test_a_staged_run_gives_the_report_of_the_local_run(case, tmp_path):
    """Every log reader's companions (hparams.yaml, args.yaml, training_args.bin, MLflow's metrics/,
    W&B's files/) are staged: through file:// the report is the local one, with the URL as path."""
    local = str(REAL / case)
    url = f"file://{local}"
    here = diagnose([local], Options())
    there = diagnose([url], Options(storage=StorageSettings(cache_dir=str(tmp_path / "cache"))))
    assert json.dumps(_without_timing(there)) == json.dumps(_without_timing(here)).replace(local, url)


def test_every_log_reader_says_what_it_reads_beside_its_log_file():
    from report_gen.readers.registry import LOG_READERS
    from report_gen.storage import LOG_COMPANIONS

    assert set(LOG_COMPANIONS) == {r.name for r in LOG_READERS}


def test_the_python_api_reads_urls_too(tmp_path):
    import report_gen

    run = sweep_kit.write_run(tmp_path / "src" / "run", 9, fault="nan", lr=0.3)
    report = report_gen.diagnose(f"file://{run}", cache_dir=tmp_path / "cache", storage_options={})
    assert report.verdict == "fail" and report.data["inputs"]["runs"][0]["path"] == f"file://{run}"
