"""A wheel built from the repo, installed into a fresh virtual environment, renders a report.

The nested venv borrows the heavy dependencies (torch, matplotlib...) from the environment running the
tests, whatever it is: the system Python or itself a virtualenv. `system_site_packages=True` would not do
that inside a virtualenv (it exposes the *base* interpreter's site-packages, not the outer venv's), so a
`.pth` file lists the running interpreter's purelib/platlib instead. Plain path lines in a `.pth` are
appended after the venv's own site-packages and their own `.pth` files are not run, so an editable
report_gen of the outer environment cannot shadow the wheel: report_gen comes only from the wheel (the
test checks that the imported package and its templates live inside the venv) and runs from a folder
outside the repository.
"""
import json
import os
import subprocess
import sys
import sysconfig
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
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _borrow_dependencies(py)
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


def _borrow_dependencies(py: Path) -> None:
    """Make the running environment's installed packages importable in the venv of interpreter `py`."""
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(inner, "_outer_environment.pth").write_text("".join(f"{p}\n" for p in outer), encoding="utf-8")


def _pip_supports_python_flag() -> bool:
    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    major, minor = (int(part) for part in r.stdout.split()[1].split(".")[:2])
    return (major, minor) >= (22, 3)  # `pip --python` appeared in pip 22.3
