"""The inter-token gap store: bounded memory, quantiles within its bin width, grouping-independent."""

import numpy as np
import pytest

from sim.samples import MANTISSA_BITS, Distribution, WeightedSamples


def test_quantiles_are_within_one_bin_of_the_exact_ones():
    rng = np.random.default_rng(3)
    gaps = rng.lognormal(np.log(0.02), 1.0, 200_000)
    samples = WeightedSamples()
    for gap in gaps.tolist():
        samples.add(gap)
    binned, exact = samples.distribution(), Distribution.of(gaps)
    assert binned.total == len(gaps)
    assert len(binned.values) < len(exact.values)      # bins, not one entry per distinct value
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        assert binned.quantile(q) == pytest.approx(exact.quantile(q), rel=2.0 ** -MANTISSA_BITS)


def test_counts_do_not_depend_on_how_samples_were_grouped():
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(0.001, 0.1, 5_001))
    gaps = (times[1:] - times[:-1]).tolist()
    at_once, one_by_one = WeightedSamples(), WeightedSamples()
    assert at_once.add_gaps(times, 7) == max(gaps)
    for _ in range(7):
        for gap in gaps:
            one_by_one.add(gap)
    first, second = at_once.distribution(), one_by_one.distribution()
    assert np.array_equal(first.values, second.values) and np.array_equal(first.counts, second.counts)
    assert first.total == 7 * len(gaps)


def test_values_outside_the_range_count_in_the_edge_bins():
    samples = WeightedSamples()
    samples.add_gaps(np.array([1.0, 1.0 + 1e-12, 1.5, 1e9]), 2)   # gaps about 1e-12, 0.5 and 1e9
    dist = samples.distribution()
    assert dist.total == 6 and len(dist.values) == 3
    assert dist.values[0] == pytest.approx(1e-7, rel=1e-3) and dist.values[-1] == pytest.approx(1e5, rel=1e-3)
