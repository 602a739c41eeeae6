#!/usr/bin/env python3
"""Calibration of the attention rules (A106 on the HF self-probe, A107 from the weights) on real HF runs.

    python benchmarks/calibrate_attention.py [--seeds 0,1,2] [--scratch DIR]

Seed 0 is the committed tests/fixtures/real/hf; other seeds are trained by that folder's generator
(`tests/fixtures/real/make_hf.py --seed N --only ...`, which installs transformers into its own venv)
into --scratch. For every checkpoint of the healthy cases, gpt2-spike (a 30x lr spike it recovers
from) and bert-attention-collapse, it prints the per-head query/key logit scale and head similarity
(facts.attention, what A107 reads) and the self-probe's normalised attention entropy (what A106
reads; needs transformers here), then the extremes the rules' thresholds were set between:

    A107 max_logit_scale: between the largest healthy / spike scale and the smallest collapsed one
    A107 identical_heads: above the largest healthy head similarity
    A106 collapsed_entropy: between the largest collapsed entropy and the smallest healthy one
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "real" / "hf"
HEALTHY = ("bert-healthy-none", "bert-healthy-tensorboard", "gpt2-healthy-tensorboard")
CASES = HEALTHY + ("gpt2-spike", "bert-attention-collapse")
TRAINED = ("bert-healthy-none", "gpt2-healthy-tensorboard", "bert-attention-collapse")  # cases re-run per seed


def case_folders(seed: int, scratch: Path) -> dict[str, Path]:
    if seed == 0:
        return {c: FIXTURES / c for c in CASES}
    out = scratch / f"s{seed}"
    if not all((out / c).is_dir() for c in TRAINED):
        subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "real" / "make_hf.py"), "--out", str(out),
                        "--seed", str(seed), "--only", ",".join(TRAINED)], check=True)
    return {c: out / c for c in TRAINED}


def measure(folder: Path) -> dict:
    from report_gen.hfprobe import probe_hf_run
    from report_gen.readers.checkpoint import open_checkpoint
    from report_gen.facts.run import RunFacts
    from report_gen.readers.signals import Signals
    from report_gen.readers.types import RunLog

    ckpts = [open_checkpoint(str(p)) for p in sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name[11:]))]
    run = RunFacts(name=folder.name, path=str(folder), events=RunLog.empty(), signals=Signals(), checkpoints=ckpts)
    facts = run.attention_weights
    scales = [float(s) for layer in facts.layers for s in layer.logit_scale]
    sims = [float(layer.head_similarity[i, j]) for layer in facts.layers if layer.head_similarity is not None
            for i in range(layer.heads) for j in range(i + 1, layer.heads)]
    outcome = probe_hf_run(ckpts)
    entropy = [float(e) for _, r in (outcome.results[-1:] if outcome else []) for at in r.attention.values()
               for e in at.entropy]
    return {"scale": scales, "similarity": sims, "entropy": entropy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/report_gen-calibrate-attention"))
    args = parser.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for case, folder in case_folders(seed, args.scratch).items():
            rows.append((seed, case, measure(folder)))
    print("| seed | case | logit scale (A107) | head similarity | probe entropy (A106) |")
    print("|---|---|---|---|---|")
    fmt = lambda v: f"{min(v):.3g}-{max(v):.3g}" if v else "-"  # noqa: E731
    for seed, case, m in rows:
        print(f"| {seed} | {case} | {fmt(m['scale'])} | {fmt(m['similarity'])} | {fmt(m['entropy'])} |")

    def pick(cases, key, how):
        values = [v for _, c, m in rows if c in cases for v in m[key]]
        return how(values) if values else math.nan

    healthy_scale = pick(HEALTHY + ("gpt2-spike",), "scale", max)
    collapsed_scale = pick(("bert-attention-collapse",), "scale", min)
    print(f"\nA107 max_logit_scale: healthy/spike max {healthy_scale:.3g}, collapsed min {collapsed_scale:.3g}, "
          f"geometric mean {math.sqrt(healthy_scale * collapsed_scale):.3g}")
    print(f"A107 identical_heads: healthy max similarity {pick(HEALTHY, 'similarity', max):.3f}")
    healthy_entropy = pick(HEALTHY + ("gpt2-spike",), "entropy", min)
    collapsed_entropy = pick(("bert-attention-collapse",), "entropy", max)
    print(f"A106 collapsed_entropy: collapsed max {collapsed_entropy:.3g}, healthy min {healthy_entropy:.3g}, "
          f"geometric mean {math.sqrt(healthy_entropy * collapsed_entropy):.3g}")


if __name__ == "__main__":
    main()
