"""The fuzz run in CI: 40 s (start-up included) of mutated event files, torch zips, legacy files, pickles and safetensors
headers through `report-gen diagnose` (tests/fuzz/fuzzer.py; the long run is the same script)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent / "fuzz"


def test_the_canary_is_live(tmp_path):
    """The payload every fuzzed pickle carries really runs when a pickle is loaded for real: its
    absence after the fuzz run means nothing executed it, not that it could not run."""
    sys.path.insert(0, str(FUZZ))
    try:
        from fuzzer import make_seeds

        marker = tmp_path / "ran"
        seeds = make_seeds(str(marker))
        pickle.loads(seeds["pickle"])  # noqa: S301 - our own canary
        assert marker.read_text().startswith("code from a fuzzed input ran")
    finally:
        sys.path.remove(str(FUZZ))


def test_fuzzed_inputs_keep_every_invariant(tmp_path):
    """Bounded: 40 s of budget (worker start-up included), then at most the input under way; a
    worker that prints nothing for 45 s (60 s more for the first input, start-up) is killed and
    that is a failure, so the run ends in about 40 s and never waits on a hang."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(FUZZ / "fuzzer.py"), "--seconds", "40", "--seed", "ci",
                           "--findings", str(tmp_path / "findings"), "--hard-timeout", "45"],
                          capture_output=True, text=True, timeout=240, env=env)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["failures"] == [], json.dumps(summary["failures"])[:2000]
    assert done.returncode == 0 and summary["inputs"] >= 10, summary
    # the mutations reach past the outer layers: damage is found and reported, not just "unreadable"
    assert len(summary["problem_kinds"]) >= 5, summary["problem_kinds"]
