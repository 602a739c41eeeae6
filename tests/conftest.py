import os
import sys

# make the test helpers (rulekit, event_builders, ckpt_builders, ...) importable from sub folders
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
