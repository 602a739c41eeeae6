"""Sweeps against real services started here: moto's S3 server on 127.0.0.1 (read through s3fs) and a
dask.distributed LocalCluster (2 worker processes) used through its scheduler address.

The 200 generated runs are written and uploaded once per module; the cluster is shared by the tests.
"""
import json
import logging
import shutil

import pytest

from builders import sweep_kit
from builders.sweep_kit import POISON, expected_verdicts, write_run, write_sweep
from report_gen.cli import main
from report_gen.engine import Options
from report_gen.storage import StorageSettings
from report_gen.sweep import DaskEngine, LocalPool, TaskSettings, discover_sweep, run_sweep

N_RUNS = 200


def _strip(index: dict) -> dict:
    """sweep.json without what differs between two executions of the same sweep."""
    return {k: v for k, v in index.items() if k not in ("created", "timing")}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("sweep") / "runs", N_RUNS)


@pytest.fixture(scope="module")
def s3(sweep_dir):
    server = sweep_kit.S3()
    server.bucket("sweeps")
    server.upload(sweep_dir, "sweeps/exp1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dask_address():
    import cloudpickle
    import dask
    from distributed import LocalCluster

    cloudpickle.register_pickle_by_value(sweep_kit)  # the injected task reaches workers whatever their sys.path
    # one death fails a task at once (the default retries it on 3 more workers: same outcome, 4x slower)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    cluster.close()


def test_s3_sweep_through_dask_and_the_local_pool_gives_one_sweep_json(s3, dask_address, tmp_path):
    url = "s3://sweeps/exp1"
    listing_only = StorageSettings(options=s3.options, cache_dir=str(tmp_path / "unused-cache"))
    items = discover_sweep([url], listing_only)
    assert len(items) == N_RUNS
    assert not (tmp_path / "unused-cache" / "objects").exists() or not any((tmp_path / "unused-cache" / "objects").rglob("*"))

    indexes = {}
    for name, engine in (("dask", DaskEngine(dask_address)), ("local", LocalPool(2))):
        storage = StorageSettings(options=s3.options, cache_dir=str(tmp_path / f"cache-{name}"))
        settings = TaskSettings(Options(storage=storage), ("json",))
        try:
            indexes[name] = run_sweep(items, tmp_path / name, settings, engine, inputs=[url])
        finally:
            getattr(engine, "close", lambda: None)()
        on_disk = json.loads((tmp_path / name / "sweep.json").read_text())
        assert on_disk["timing"]["engine"] == name
        assert _strip(on_disk) == _strip(json.loads(json.dumps(indexes[name])))
    assert _strip(indexes["dask"]) == _strip(indexes["local"])

    index = indexes["dask"]
    assert {r["name"]: r["verdict"] for r in index["runs"]} == expected_verdicts(N_RUNS)
    assert index["summary"]["failed"] == 0
    nan_runs = sum(1 for v in expected_verdicts(N_RUNS).values() if v == "fail")
    l101 = next(g for g in index["recurring"] if g["code"] == "L101")
    assert (l101["runs"], l101["of"]) == (nan_runs, N_RUNS)
    assert l101["association"]["exact"] and l101["association"]["hparam"] == "lr"
    assert (l101["association"]["op"], l101["association"]["value"]) == (">=", sweep_kit.NAN_LR)
    u101 = next(g for g in index["recurring"] if g["code"] == "U101")
    assert u101["association"] is None  # frozen runs follow the run number, not an hparam
    assert set(index["hparams"]["varying"]) == {"lr", "batch_size", "optimizer"}

    row = next(r for r in index["runs"] if r["verdict"] == "fail")
    report = json.loads((tmp_path / "local" / row["report"]).read_text())
    assert report["inputs"]["runs"][0]["path"] == row["path"] == f"{url}/{row['name']}"
    assert "cache-local" not in json.dumps(report)
    assert len(list((tmp_path / "local" / "runs").glob("*/report.json"))) == N_RUNS


def _small_sweep(root, names):
    for i, name in enumerate(names):
        write_run(root / name, i)
    return root


def test_a_killed_dask_worker_costs_that_run_only(dask_address, tmp_path):
    root = _small_sweep(tmp_path / "runs", ["a", "b", f"c-{POISON}", "d", "e"])
    items = discover_sweep([str(root)])
    engine = DaskEngine(dask_address)
    try:
        index = run_sweep(items, tmp_path / "out", TaskSettings(Options(), ("json",)), engine,
                          task=sweep_kit.killing_task)
    finally:
        engine.close()
    rows = {r["name"]: r for r in index["runs"]}
    assert rows[f"c-{POISON}"]["status"] == "failed"
    assert "workers running this run died" in rows[f"c-{POISON}"]["reason"]
    assert all(rows[n]["status"] == "ok" and rows[n]["verdict"] == "pass" for n in "abde")


def test_a_killed_local_worker_costs_that_run_only(tmp_path):
    root = _small_sweep(tmp_path / "runs", ["a", f"b-{POISON}", "c", "d", "e"])
    items = discover_sweep([str(root)])
    index = run_sweep(items, tmp_path / "out", TaskSettings(Options(), ("json",)), LocalPool(2),
                      task=sweep_kit.killing_task)
    rows = {r["name"]: r for r in index["runs"]}
    assert rows[f"b-{POISON}"]["status"] == "failed"
    assert "killed by SIGKILL" in rows[f"b-{POISON}"]["reason"]
    assert all(rows[n]["status"] == "ok" and rows[n]["verdict"] == "pass" for n in "acde")
    assert index["summary"]["failed"] == 1


def test_objects_deleted_mid_sweep_cost_their_run_only(s3, tmp_path):
    s3.bucket("small")
    root = _small_sweep(tmp_path / "runs", ["a", "b", "c", "d"])
    s3.upload(root, "small/exp")
    storage = StorageSettings(options=s3.options, cache_dir=str(tmp_path / "cache"), backoff=0.01)
    items = discover_sweep(["s3://small/exp"], storage)
    fs = s3.fs()
    fs.rm("small/exp/b/checkpoints/step_590.pt")  # one object of b
    fs.rm("small/exp/c", recursive=True)  # all of c
    index = run_sweep(items, tmp_path / "out", TaskSettings(Options(storage=storage), ("json",)), LocalPool(2))
    rows = {r["name"]: r for r in index["runs"]}
    assert rows["a"]["verdict"] == rows["d"]["verdict"] == "pass"
    assert rows["b"]["status"] == "ok" and rows["b"]["verdict"] == "fail"
    assert rows["b"]["main_finding"]["code"] == "I101"
    assert rows["b"]["main_finding"]["subject"] == "s3://small/exp/b/checkpoints/step_590.pt"
    assert "gone" in rows["b"]["main_finding"]["message"]
    assert rows["c"]["status"] == "failed" and "nothing could be staged" in rows["c"]["reason"]
    assert index["summary"]["failed"] == 1


def test_cli_sweep_of_a_local_folder(tmp_path, capsys):
    root = _small_sweep(tmp_path / "runs", ["x1", "x2"])
    write_run(root / "x3", 3, fault="nan", lr=0.3)
    out = tmp_path / "out"
    code = main(["sweep", str(root), "-o", str(out), "--jobs", "1", "--format", "html,json"])
    assert code == 1  # x3 has an error
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "nonfinite-loss in 1 of 3 runs" in printed
    for name in ("index.html", "index.md", "sweep.json"):
        assert (out / name).stat().st_size > 0
    index = json.loads((out / "sweep.json").read_text())
    assert {r["name"] for r in index["runs"]} == {"x1", "x2", "x3"}
    for r in index["runs"]:
        assert (out / r["report"]).name == "report.html" and (out / r["report"]).exists()
    assert main(["sweep", str(root), "-o", str(out), "--jobs", "1", "--format", "json", "--fail-on", "never",
                 "-q"]) == 0
    shutil.rmtree(out)


def test_cli_sweep_of_an_s3_prefix_on_a_dask_cluster(s3, dask_address, tmp_path, capsys):
    """The README's s3:// and Dask commands, as a user types them (through the scheduler's address)."""
    s3.bucket("cli")
    root = _small_sweep(tmp_path / "runs", ["r1", "r2"])
    write_run(root / "r3", 3, fault="nan", lr=0.3)
    s3.upload(root, "cli/sweep-42")
    out = tmp_path / "out"
    args = ["sweep", "s3://cli/sweep-42/", "-o", str(out), "--storage-options", json.dumps(s3.options),
            "--cache-dir", str(tmp_path / "cache"), "--format", "json"]
    assert main(args + ["--engine", "dask", "--scheduler", dask_address]) == 1  # r3 has an error
    assert "nonfinite-loss in 1 of 3 runs" in capsys.readouterr().out
    index = json.loads((out / "sweep.json").read_text())
    assert index["timing"]["engine"] == "dask" and index["inputs"] == ["s3://cli/sweep-42/"]
    assert {r["name"]: r["verdict"] for r in index["runs"]} == {"r1": "pass", "r2": "pass", "r3": "fail"}
    assert all(r["path"] == f"s3://cli/sweep-42/{r['name']}" for r in index["runs"])
    assert s3.endpoint not in (out / "sweep.json").read_text()  # storage options never reach the outputs
    assert main(args + ["-o", str(tmp_path / "local"), "--jobs", "1", "-q"]) == 1  # the same, local pool
    local = json.loads((tmp_path / "local" / "sweep.json").read_text())
    assert _strip(local) == _strip(index)


def test_cli_sweep_usage_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("report_gen.sweep.SCHEDULER_TIMEOUT", "1s")
    root = _small_sweep(tmp_path / "runs", ["x1"])
    assert main(["sweep", str(root), "-o", str(tmp_path / "o"), "--engine", "dask"]) == 2
    assert "--scheduler" in capsys.readouterr().err
    port = sweep_kit.free_port()
    assert main(["sweep", str(root), "-o", str(tmp_path / "o"), "--engine", "dask",
                 "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and len(err.strip().splitlines()) == 1
    assert main(["sweep", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_discovery_from_a_listing_finds_the_runs_local_discovery_finds(s3):
    """Real fixtures of every log format: the runs found in S3 (listing only, plus the heads of files
    whose name cannot decide and the MLflow SQLite stores) are the runs found on disk."""
    from pathlib import Path

    real = Path(__file__).parent / "fixtures" / "real"
    s3.bucket("formats")
    s3.upload(real, "formats/real")
    local = discover_sweep([str(real)])
    remote = discover_sweep(["s3://formats/real"], StorageSettings(options=s3.options))
    assert [i.name for i in remote] == [i.name for i in local]
    assert len(local) > 20
    stores = [i for i in local if i.target.endswith("mlflow.db")]
    assert len(stores) == 2 and all(i.name.endswith("/mlflow") for i in stores)  # one run per store
    by_name = {i.name: i for i in remote}
    for item in local:
        assert by_name[item.name].path == f"s3://formats/real/{Path(item.path).relative_to(real).as_posix()}"


def test_cli_sweep_with_isolate_reads_the_checkpoints_in_limited_children(tmp_path):
    """A sweep worker may start the --isolate child that vets each checkpoint (a daemonic worker could not)."""
    root = _small_sweep(tmp_path / "runs", ["x1"])
    out = tmp_path / "out"
    assert main(["sweep", str(root), "-o", str(out), "--jobs", "1", "--format", "json", "--isolate",
                 "--fail-on", "never", "-q"]) == 0
    (run,) = json.loads((out / "sweep.json").read_text())["runs"]
    report = json.loads((out / run["report"]).read_text())
    problems = [f["message"] for f in report["findings"] if f["code"] == "I101"]
    assert run["checkpoints"] > 0 and not problems, problems
