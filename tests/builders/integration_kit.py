"""Shared by the framework-callback tests: a tiny healthy task and the 'fully diagnosed' check."""
from __future__ import annotations

import torch
from torch import nn

from report_gen.engine import Options, diagnose
from report_gen.rules.base import all_rules


def tiny_task(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 one-channel images labelled by the sign of their mean: learnable in a few dozen steps."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    return x, (x.mean((1, 2, 3)) > 0).long()


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def diagnose_fully(path) -> dict:
    """Diagnose `path`; assert it is ONE run on which every rule family ran, with no error and no warning."""
    report = diagnose([str(path)], Options())
    assert len(report["inputs"]["runs"]) == 1, [r["name"] for r in report["inputs"]["runs"]]
    evaluated = {e["code"] for e in report["evaluated"]}
    families = {r.family for r in all_rules()}
    assert {code[0] for code in evaluated} == families, sorted(evaluated)
    # the signals the callbacks write: losses, gradients, weights, update ratios, activations, checkpoints
    for code in ("L101", "L102", "G101", "G102", "W102", "K101", "U101", "U102", "A101", "A103", "A105", "I101"):
        assert code in evaluated, (code, report["not_evaluated"])
    counts = report["summary"]["counts"]
    assert counts["error"] == 0 and counts["warning"] == 0, report["findings"]
    run = report["inputs"]["runs"][0]
    # the one note allowed: a series two of the TRAINER's own writers hold (its trainer_state.json and its
    # TensorBoardCallback) is read once, the copy listed as ignored; the callbacks' own tags are never copies
    notes = [p for p in run["problems"] if p["kind"] == "duplicate-series" and p["severity"] == "info"]
    assert [p for p in run["problems"] if p not in notes] == [], run["problems"]
    copies = [i["tag"] for i in run["ignored"] if "same series as" in i["reason"]]
    assert bool(notes) == bool(copies), (notes, copies)
    assert all(("/" + t).rsplit("/", 2)[-2] in ("train", "eval") for t in copies), copies
    return report
