"""End-to-end CLI behaviour: outputs, exit codes, errors without tracebacks."""
import json
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from builders.event_builders import make_scalar_event, make_version_event, write_records
from report_gen.cli import main


def write_run(path, losses, val=None):
    w = SummaryWriter(str(path))
    for i, v in enumerate(losses):
        w.add_scalar("train/loss", float(v), i)
    for i, v in enumerate(val if val is not None else []):
        w.add_scalar("val/loss", float(v), i * 10)
    w.close()
    return path


def healthy_losses(n=60):
    return 0.05 + 2.0 * np.exp(-np.linspace(0, 5, n))


def test_healthy_run_exits_0_and_writes_three_formats(tmp_path, capsys):
    run = write_run(tmp_path / "run", healthy_losses())
    out = tmp_path / "out"
    assert main(["diagnose", str(run), "-o", str(out)]) == 0
    for name in ("report.html", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema_version"] == 1
    assert rep["summary"] == {"verdict": "pass", "counts": {"error": 0, "warning": 0, "info": 0}}
    assert rep["inputs"]["runs"][0]["event_files"] == 1
    assert {"code", "name", "reason"} <= set(rep["not_evaluated"][0])
    assert "PASS" in capsys.readouterr().out


def test_nan_loss_exits_1_and_fail_on_never_exits_0(tmp_path):
    v = healthy_losses()
    v[40:] = np.nan
    run = write_run(tmp_path / "run", v)
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o1"), "-q"]) == 1
    rep = json.loads((tmp_path / "o1" / "report.json").read_text())
    assert rep["summary"]["verdict"] == "fail"
    assert rep["findings"][0]["code"] == "L101" and rep["findings"][0]["run"] == "run"
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o2"), "-q", "--fail-on", "never"]) == 0
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o3"), "-q", "--ignore", "L101,L102"]) == 0


def test_corrupt_event_file_is_a_finding_not_a_crash(tmp_path):
    good = write_records(tmp_path / "run" / "events.out.tfevents.1",
                         [make_version_event()] + [make_scalar_event("train/loss", i, 1.0 / (i + 1)) for i in range(20)])
    data = good.read_bytes()
    good.write_bytes(data[:200] + b"oops: a log line written into the event file\n" + data[200:])
    out = tmp_path / "out"
    assert main(["diagnose", str(tmp_path / "run"), "-o", str(out), "-q", "--format", "json"]) == 0
    rep = json.loads((out / "report.json").read_text())
    found = {f["evidence"]["kind"]: f for f in rep["findings"] if f["category"] == "input-integrity"}
    # the text cut one record in two (bad data CRC) and then sits between records (junk bytes)
    assert set(found) == {"junk-bytes", "bad-data-crc"}
    f = found["junk-bytes"]
    assert f["severity"] == "warning" and f["subject"].endswith("events.out.tfevents.1")
    assert f["evidence"]["offset"] == 230
    # everything else in the file was still read and diagnosed
    assert rep["details"]["runs"]["run"]["curves"]["train_loss"]["steps"][-1] == 19


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "no such file or directory"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no TensorBoard event files or checkpoints"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "not an event file"),
])
def test_bad_paths_exit_2_with_one_line(tmp_path, capsys, setup, message):
    path = setup(tmp_path)
    assert main(["diagnose", str(path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_usage_errors_exit_2(tmp_path, capsys):
    run = write_run(tmp_path / "run", healthy_losses())
    assert main(["diagnose", str(run), "--select", "K9"]) == 2  # a typo must not turn the gate off
    assert "matches no rule" in capsys.readouterr().err
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o"), "-q", "--select", ""]) == 0  # empty = not given
    assert main(["diagnose", str(run), "--ignore", "ALL"]) == 2
    assert "enables no rule" in capsys.readouterr().err
    assert main(["diagnose", str(run), "--probe-shape", "1,2"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["diagnose", str(run), "--model", "x:y", "--model-kwargs", "{bad"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["diagnose", str(run), "--format", "pdf"])
    assert e.value.code == 2


def test_rules_list_and_explain(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert "K101" in out and "dead-kernels" in out
    assert main(["rules", "explain", "K101"]) == 0
    out = capsys.readouterr().out
    for heading in ("What it detects:", "Why it matters:", "Typical causes:", "What to try:", "Options:"):
        assert heading in out
    assert main(["rules", "explain", "frozen-layer"]) == 0
    assert main(["rules", "explain", "X999"]) == 2
    capsys.readouterr()
    assert main(["rules", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert {"code": "K101", "name": "dead-kernels"}.items() <= rules[[r["code"] for r in rules].index("K101")].items()


def test_render_from_json_alone(tmp_path):
    run = write_run(tmp_path / "run", healthy_losses(), val=healthy_losses(6) + 0.1)
    main(["diagnose", str(run), "-o", str(tmp_path / "a"), "-q", "--format", "json"])
    assert main(["render", str(tmp_path / "a" / "report.json"), "-o", str(tmp_path / "b"), "--format", "md,html"]) == 0
    md = (tmp_path / "b" / "report.md").read_text()
    assert "Training curves" in md
    [png] = (tmp_path / "b" / "report_files").glob("*.png")  # the loss curve, redrawn from the JSON
    assert f"](report_files/{png.name})" in md
    (tmp_path / "bad.json").write_text("{}")
    assert main(["render", str(tmp_path / "bad.json"), "-o", str(tmp_path / "c")]) == 2


def test_python_dash_m_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "report_gen", "rules", "explain", "L101"], capture_output=True, text=True)
    assert r.returncode == 0 and "nonfinite-loss" in r.stdout


def test_trust_pickles_is_said_in_every_format(tmp_path):
    import torch

    torch.save({"model": {"fc.weight": torch.randn(4, 4)}, "step": 3}, tmp_path / "model.pt")
    for flag, expected in (([], False), (["--trust-pickles"], True)):
        out = tmp_path / f"out{len(flag)}"
        assert main(["diagnose", str(tmp_path / "model.pt"), "-o", str(out), "-q", "--fail-on", "never", *flag]) == 0
        assert json.loads((out / "report.json").read_text())["inputs"]["trust_pickles"] is expected
        assert ("--trust-pickles was used" in (out / "report.md").read_text()) is expected
        assert ("--trust-pickles was used" in (out / "report.html").read_text()) is expected


def test_the_command_ends_after_atexit_with_mains_exit_code(tmp_path):
    """`run` (the report-gen command) ends the process right after `main`: atexit functions still run,
    printed text is flushed, the exit code is main's; with another thread still running it exits the
    normal way, which waits for it."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import atexit, sys, threading, time
        import report_gen.cli as cli
        atexit.register(lambda: open(sys.argv[1] + "/atexit", "w").write("ran"))
        if sys.argv[2] == "thread":
            threading.Thread(target=lambda: (time.sleep(0.3), open(sys.argv[1] + "/thread", "w").write("done"))).start()
        cli.main = lambda argv=None: (print("printed", end=""), 3)[1]
        cli.run()
    """)
    for mode in ("alone", "thread"):
        out = tmp_path / mode
        out.mkdir()
        done = subprocess.run([sys.executable, "-c", code, str(out), mode], capture_output=True, text=True)
        assert (done.returncode, done.stdout) == (3, "printed")
        assert (out / "atexit").read_text() == "ran"
        assert (out / "thread").exists() == (mode == "thread")


def test_the_command_started_with_its_output_closed_keeps_mains_exit_code(tmp_path):
    """cron and daemons start commands with stdout closed (Python then has sys.stdout None): the end of
    the command must not trip over it."""
    import subprocess
    import sys

    code = ("import os, sys; os.close(1)\n"
            "import report_gen.cli as cli\n"
            "sys.stdout = None\n"
            "cli.main = lambda argv=None: 0\n"
            "cli.run()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
