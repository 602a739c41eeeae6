import numpy as np

from builders.rulekit import hits, make_run, series
from report_gen.readers.signals import Signals


def _run(std_values):
    return make_run(signals=Signals(act_stats={"relu1": {"std": series("activation_stats/relu1/std", std_values)}}))


def test_activation_std_swinging_between_batches():
    v = np.tile([0.1, 3.0], 20)
    [h] = hits(_run(v), "A105")
    assert h.evidence["coefficient_of_variation"] > 0.9


def test_moderate_variation_is_fine():
    v = np.tile([0.8, 1.2], 20)  # cv 0.2
    assert hits(_run(v), "A105") == []
