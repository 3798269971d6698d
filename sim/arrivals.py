"""Synthetic arrival processes, and fitting them to a trace's rate and burstiness.

All are renewal processes (i.i.d. inter-arrival gaps), described by the mean rate and the
coefficient of variation (CV) of the gaps, the two numbers `fit` measures on a trace:

* `poisson`: exponential gaps, CV 1.
* `gamma`: gamma gaps with any CV > 0 (< 1 more regular than Poisson, > 1 burstier).
* `onoff`: an interrupted Poisson process: Poisson arrivals at a high rate during on periods
  (exponential, mean `burst_s`), none during off periods (exponential). Its gaps are
  hyperexponential, so it needs CV > 1; unlike gamma it has bursts of a set length, which
  is what fills queues. Given rate, CV and burst_s the on rate and off length are solved for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from sim.workload_record import WorkloadError

Gaps = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class ArrivalProcess:
    """A renewal arrival process: mean `rate` (req/s), gap CV `cv`, on-period mean `burst_s` (onoff)."""

    kind: Literal["poisson", "gamma", "onoff"]
    rate: float
    cv: float = 1.0
    burst_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "onoff" and (self.cv <= 1.0 or not self.burst_s or self.burst_s <= 0):
            raise WorkloadError(f"workload: an on/off process needs cv > 1 (got {self.cv:g}) and burst_s > 0 "
                                f"(got {self.burst_s}); for cv <= 1 use kind: gamma")

    def label(self) -> str:
        if self.kind == "poisson":
            return f"Poisson arrivals at {self.rate:g} req/s"
        if self.kind == "gamma":
            return f"gamma arrivals at {self.rate:g} req/s (CV {self.cv:g})"
        rate_on, _, off_s = self.onoff_parameters()
        return (f"on/off arrivals at {self.rate:g} req/s (CV {self.cv:g}): {rate_on:.3g} req/s in on periods "
                f"of mean {self.burst_s:g} s, off periods of mean {off_s:.3g} s")

    def onoff_parameters(self) -> tuple[float, float, float]:
        """(on rate, mean on s, mean off s) with the overall rate and gap CV asked for.

        For an interrupted Poisson process with on rate L, on->off rate a and off->on rate b,
        the fraction of time on is p = b / (a + b), the mean rate L p, and the gaps' squared
        CV 1 + 2 L a / (a + b)^2. With a = 1 / burst_s this is a quadratic in p:
        A p^2 - (2A + k) p + A = 0, A = 2 rate burst_s, k = cv^2 - 1; its roots multiply to 1,
        the one in (0, 1) is taken.
        """
        big_a, k = 2 * self.rate * self.burst_s, self.cv**2 - 1
        p = ((2 * big_a + k) - math.sqrt((2 * big_a + k) ** 2 - 4 * big_a**2)) / (2 * big_a)
        return self.rate / p, self.burst_s, self.burst_s * (1 - p) / p

    def _gaps(self) -> Gaps:
        if self.kind != "onoff":   # Poisson is gamma with shape 1: exponential gaps
            shape = 1.0 / self.cv**2
            return lambda rng, n: rng.gamma(shape, 1.0 / (self.rate * shape), n)
        rate_on, on_s, off_s = self.onoff_parameters()
        leave = rate_on + 1.0 / on_s   # total event rate while on: an arrival or the end of the burst

        def onoff(rng: np.random.Generator, n: int) -> np.ndarray:
            # after an arrival the process is on; before the next one it leaves K times for an off period
            k = rng.geometric(rate_on / leave, n) - 1
            return rng.gamma(k + 1, 1.0 / leave) + rng.gamma(k, off_s)
        return onoff

    def sample(self, rng: np.random.Generator, duration_s: float | None = None,
               count: int | None = None) -> np.ndarray:
        """Arrival times from 0: exactly `count` of them, or else every one in [0, duration_s)."""
        gaps = self._gaps()
        if count is not None:
            return np.concatenate([[0.0], np.cumsum(gaps(rng, count - 1))])
        expected = self.rate * duration_s
        chunk = int(expected + 5 * self.cv * math.sqrt(expected) + 16)   # usually one draw suffices
        arrival = np.concatenate([[0.0], np.cumsum(gaps(rng, chunk))])
        while arrival[-1] < duration_s:
            arrival = np.concatenate([arrival, arrival[-1] + np.cumsum(gaps(rng, chunk))])
        return arrival[arrival < duration_s]


def rate_and_cv(arrival_s: np.ndarray) -> tuple[float, float]:
    """Mean arrival rate (req/s) and inter-arrival CV of ascending arrival times."""
    gaps = np.diff(arrival_s)
    if len(gaps) < 2 or gaps.mean() <= 0:
        raise WorkloadError("cannot fit an arrival process to fewer than 3 requests or a zero-length trace")
    return 1.0 / float(gaps.mean()), float(gaps.std() / gaps.mean())
