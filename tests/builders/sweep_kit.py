"""Tiny generated runs for sweep and storage tests, and the real services they run against.

`write_sweep(root, n)` writes n runs, each a TensorBoard event file (a decaying loss, an accuracy, the
hparams plugin's record) and two tiny TinyNet checkpoints, laid out as `lr<lr>/run-<i>/`:

* runs with lr == NAN_LR log a NaN loss from step 400 on (L101, error);
* runs with i % FROZEN_EVERY == FROZEN_AT (and a finite loss) keep conv1 unchanged between the two
  checkpoints while the other layers move (U101, warning);
* every other run is healthy (no finding).

`expected_verdicts(n)` says which verdict each run must get. The module is importable by worker
processes (local pool and Dask workers), so the tasks tests inject live here too.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import socket
from pathlib import Path

import numpy as np
import torch

from .ckpt_builders import tiny_state
from .event_builders import make_hparams_event, make_scalar_event, make_version_event, write_records

LRS = (0.001, 0.003, 0.01, 0.03, 0.3)
NAN_LR = 0.3
FROZEN_EVERY, FROZEN_AT = 13, 7
POISON = "POISON"  # a run whose name contains this kills the worker process diagnosing it


def run_name(i: int) -> str:
    return f"lr{LRS[i % len(LRS)]}/run-{i:04d}"


def fault_of(i: int) -> str | None:
    if LRS[i % len(LRS)] == NAN_LR:
        return "nan"
    if i % FROZEN_EVERY == FROZEN_AT:
        return "frozen"
    return None


def expected_verdicts(n: int) -> dict[str, str]:
    return {run_name(i): {"nan": "fail", "frozen": "warn", None: "pass"}[fault_of(i)] for i in range(n)}


def write_run(folder: Path, i: int, fault: str | None = None, lr: float = 0.01) -> Path:
    rng = np.random.default_rng(i)
    records = [make_version_event(), make_hparams_event({"lr": lr, "batch_size": 32 if i % 2 else 64,
                                                         "optimizer": "adam" if i % 3 else "sgd"})]
    for s in range(60):
        loss = 2.0 * math.exp(-s / 20) + 0.1 + 0.01 * rng.standard_normal()
        if fault == "nan" and s >= 40:
            loss = float("nan")
        records.append(make_scalar_event("train/loss", s * 10, loss, wall_time=1.7e9 + s))
        if s % 10 == 0:
            records.append(make_scalar_event("val/acc", s * 10, 0.5 + 0.4 * (1 - math.exp(-s / 20))
                                             + 0.005 * rng.standard_normal(), wall_time=1.7e9 + s))
    write_records(folder / f"events.out.tfevents.1700000000.host.{i}", records)
    first = tiny_state(i)
    generator = torch.Generator().manual_seed(i)
    last = {k: (v + 0.05 * torch.randn(v.shape, generator=generator)
                if v.is_floating_point() and not (fault == "frozen" and k.startswith("conv1")) else v.clone())
            for k, v in first.items()}
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(first, folder / "checkpoints" / "step_0.pt")
    torch.save(last, folder / "checkpoints" / "step_590.pt")
    return folder


def write_sweep(root: Path, n: int) -> Path:
    for i in range(n):
        write_run(root / run_name(i), i, fault_of(i), LRS[i % len(LRS)])
    return root


# ----------------------------------------------------------------------------------- services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """moto's S3 server on 127.0.0.1 (as s3fs's own tests run it) and the options to reach it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.options = {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint,
                        "client_kwargs": {"region_name": "us-east-1"}}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, local: Path, prefix: str) -> None:
        """Every file below `local` to s3://<prefix>/<its relative path> (s3fs, many at a time)."""
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        self.fs().put([str(p) for p in files], [f"{prefix}/{p.relative_to(local).as_posix()}" for p in files])

    def stop(self) -> None:
        self.server.stop()


# -------------------------------------------------------------------------------- injected tasks


def killing_task(item, settings):
    """The real task, except that a run named POISON kills its worker process (SIGKILL, as the OOM
    killer would): the test sees what a real worker death does to the sweep."""
    from report_gen.sweep import diagnose_run

    if POISON in item.name:
        os.kill(os.getpid(), signal.SIGKILL)
    return diagnose_run(item, settings)
