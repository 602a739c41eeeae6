import numpy as np

from report_gen.facts.schedule import lr_profile, optimizer_family, optimizer_from_lr_tag


def test_profile_of_warm_up_then_zero():
    lr = np.concatenate([np.linspace(0.00625, 0.05, 8), np.zeros(152)])
    p = lr_profile(np.arange(160), lr)
    assert p.peak == 0.05 and p.peak_step == 7 and p.first_zero_step == 8
    assert p.zero_share == 152 / 160 and p.below_share(1e-3) == 152 / 160


def test_a_warm_up_from_zero_is_not_a_zero_lr():
    lr = np.concatenate([[0.0], np.linspace(0.01, 0.1, 9), np.full(90, 0.1)])
    p = lr_profile(np.arange(100), lr)
    assert p.zero_share == 0.0 and p.first_zero_step is None


def test_cosine_spends_little_time_near_zero():
    t = np.linspace(0, 1, 1000)
    p = lr_profile(np.arange(1000), 0.5 * (1 + np.cos(np.pi * t)))
    assert 0.015 < p.below_share(1e-3) < 0.025


def test_optimizer_names():
    assert optimizer_from_lr_tag("lr-SGD") == "SGD" and optimizer_from_lr_tag("lr-AdamW/pg1") == "AdamW"
    assert optimizer_from_lr_tag("train/lr") is None
    assert [optimizer_family(n) for n in ("AdamW", "adamw_torch", "adam", "SGD", "sgd", "RMSprop", "mystery", None)] == \
        ["adam", "adam", "adam", "sgd", "sgd", "rmsprop", None, None]
