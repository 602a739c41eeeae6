import os

# the builders are the package tests/builders (`from builders import ...`): pyproject's pytest `pythonpath`
os.environ.setdefault("MPLBACKEND", "Agg")
