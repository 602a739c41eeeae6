"""A run logged with report_gen.monitor gets every rule family evaluated, and a healthy one passes."""
import torch
from torch import nn

from report_gen.engine import Options, diagnose
from report_gen.monitor import TrainingMonitor
from report_gen.rules.base import all_rules


def test_monitor_logged_run_evaluates_every_family(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.randn(32, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with TrainingMonitor(str(run), model=model, hist_interval=5, scalar_interval=1) as monitor:
        for step in range(40):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            monitor.log_training_step(model, x, step, loss=loss, optimizer=opt)
            opt.step()
            if step % 10 == 9:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                           run / "checkpoints" / f"step_{step}.pt")
    report = diagnose([str(run)], Options())
    evaluated = {e["code"] for e in report["evaluated"]}
    families = {r.family for r in all_rules()}
    assert families == {c[0] for c in evaluated}, sorted(evaluated)
    for code in ("L101", "L102", "G101", "G102", "W102", "K101", "U101", "U102", "A101", "A103", "A105", "I101"):
        assert code in evaluated, code
    assert report["summary"]["counts"]["error"] == 0, report["findings"]
