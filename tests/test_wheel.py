"""A wheel built from the repo, installed into a fresh virtual environment, renders a report.

The venv sees the system's site-packages for the heavy dependencies (torch, matplotlib...), but
report_gen itself comes only from the wheel: the test checks that the imported package and its
templates live inside the venv, and runs from a folder outside the repository.
"""
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_templates_and_renders(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, cwd=tmp_path)
    [wheel] = dist.glob("report_gen-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "report_gen/templates/html/report.html.j2" in names
    assert "report_gen/templates/markdown/report.md.j2" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)]
                   if _pip_supports_python_flag() else
                   [str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, cwd=tmp_path)

    run = tmp_path / "run"
    w = SummaryWriter(str(run))
    for i, v in enumerate(0.1 + np.exp(-np.linspace(0, 4, 40))):
        w.add_scalar("train/loss", float(v), i)
    w.close()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import report_gen, pathlib; print(pathlib.Path(report_gen.__file__).parent)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    assert (Path(where) / "templates" / "html" / "report.html.j2").is_file()
    out = tmp_path / "out"
    r = subprocess.run([str(env_dir / "bin" / "report-gen"), "diagnose", str(run), "-o", str(out), "-q"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "<html" in html and "data:image/png;base64," in html
    assert json.loads((out / "report.json").read_text())["summary"]["verdict"] == "pass"


def _pip_supports_python_flag() -> bool:
    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    major = int(r.stdout.split()[1].split(".")[0])
    return major >= 22
