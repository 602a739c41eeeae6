"""Run by test_lightning under torchrun (2 CPU processes, gloo): python lightning_ddp_run.py ROOT."""
import sys

import lightning.pytorch as L

from test_lightning import ReportGenCallback, _fit

if __name__ == "__main__":
    root = sys.argv[1]
    _fit(L, root, ReportGenCallback(hist_interval=5, scalar_interval=1), strategy="ddp", devices=2, max_epochs=2,
         logger=L.loggers.TensorBoardLogger(root), enable_checkpointing=False)
