"""The published spike detectors against hand-worked series (the rules in the sources, restated)."""
import numpy as np

from report_gen.facts import spikes


def test_megatron_flags_ten_times_the_max_of_the_first_100():
    v = np.ones(130)
    v[50] = 2.0  # the max of the first 100
    v[110], v[120] = 19.9, 20.0
    assert spikes.megatron_spikes(v) == [120]
    assert spikes.megatron_spikes(v[:100]) == []


def test_olmo_flags_mean_plus_six_population_sigma_of_the_previous_128():
    rng = np.random.default_rng(0)
    v = 1.0 + 0.01 * rng.standard_normal(200)
    hist = v[140:268 - 100]
    i = 150
    mean, std = v[i - 128:i].mean(), v[i - 128:i].std()
    v[i] = mean + 6.01 * std
    v[160] = v[160 - 128:160].mean() + 5.9 * v[160 - 128:160].std()
    assert spikes.olmo_spikes(v) == [150]
    assert spikes.olmo_spikes(np.ones(200)) == []  # std < 1e-10: never a spike
    assert hist.size


def test_foundry_raises_at_the_fifth_consecutive_outlier_over_twice_the_mean_of_100():
    v = np.ones(130)
    v[105:109] = 2.0  # four outliers: within patience
    v[115:121] = 2.5  # six: raised at the fifth (index 119)
    assert spikes.foundry_spikes(v) == [119]


def test_fabric_flags_a_rise_two_means_away_from_the_running_mean_of_10():
    v = [1 / i for i in range(1, 10)]  # Fabric's own test: 1/i, then 3 at batch 4
    v[4] = 3
    assert spikes.fabric_spikes(v) == [4]
    assert spikes.fabric_spikes([1.0] * 12 + [3.0]) == [12]  # exactly 2 means above the mean: a spike
    # 2.9 is only 1.9 means above and joins the mean (1.19), so 3.0 after it is 1.5 means above: no spike
    assert spikes.fabric_spikes([1.0] * 12 + [2.9, 3.0]) == []
    assert spikes.fabric_spikes([1.0] * 12 + [0.0]) == []  # an improvement is never a spike


def test_events_group_neighbouring_flags():
    assert spikes.spike_events([3, 4, 5, 9, 20, 21], gap=2) == [(3, 5), (9, 9), (20, 21)]
