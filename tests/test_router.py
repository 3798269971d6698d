"""Routing policies: `least_kv` evaluates few engines but picks what the plain definition picks;
a pool's `LoadBoard` picks what reading each engine picks."""

from dataclasses import dataclass

import numpy as np
import pytest

import sim
from conftest import run_from_source
from sim.faults import fault_plan
from sim.request import Request
from sim.router import Router
from sim.run import simulate
from test_cluster import poisson, spec_for


REQUEST = Request(0, 0.0, prompt_tokens=100, output_tokens=10)   # least_kv does not read it


@dataclass
class FakeEngine:   # the attributes Router reads; kv_usage() as a window in progress would add to it
    instance_id: int
    floor: float
    extra: float
    outstanding: int
    up: bool = True
    evaluated: int = 0

    def kv_usage_floor(self) -> float:
        return self.floor

    def kv_usage(self) -> float:
        self.evaluated += 1
        return self.floor + self.extra


def test_least_kv_picks_the_plain_minimum_and_evaluates_few():
    rng = np.random.default_rng(5)
    evaluated = offered = 0
    for _ in range(500):
        n = int(rng.integers(1, 40))
        # coarse values so that ties on usage and on outstanding happen often
        engines = [FakeEngine(i, float(rng.integers(0, 5)) / 8, float(rng.integers(0, 3)) / 8 * (rng.random() < 0.5),
                              int(rng.integers(0, 3)), up=bool(rng.random() < 0.9)) for i in range(n)]
        up = [e for e in engines if e.up]
        expected = min(up, key=lambda e: (e.floor + e.extra, e.outstanding)) if up else None
        for e in engines:
            e.evaluated = 0
        assert Router("least_kv", engines).pick(REQUEST) is expected
        evaluated += sum(e.evaluated for e in engines)
        offered += len(up)
    assert evaluated < 0.6 * offered   # most engines are ruled out by their floor alone


def test_least_kv_stops_early_only_where_no_later_instance_can_tie_and_win():
    # Instance 6 has the lowest floor but a window in progress; instance 2's floor equals 6's
    # usage, it has nothing outstanding and comes first in the pool: 2 wins the tie.
    windowed = FakeEngine(6, floor=0.0, extra=0.125, outstanding=0)
    earlier = FakeEngine(2, floor=0.125, extra=0.0, outstanding=0)
    assert Router("least_kv", [earlier, windowed]).pick(REQUEST) is earlier
    # Idle instances: the first one wins and the rest are never asked for their usage.
    idle = [FakeEngine(i, 0.0, 0.0, 0) for i in range(50)]
    assert Router("least_kv", idle).pick(REQUEST) is idle[0]
    assert sum(e.evaluated for e in idle) == 1


@pytest.mark.parametrize("overrides", [
    ("serving=monolithic", "serving.instances=4"),
    ("serving=monolithic", "serving.instances=4", "serving.router=least_kv"),
    ("serving=disaggregated", "serving.prefill.instances=3", "serving.decode.instances=4"),
])
def test_a_pool_s_load_board_gives_the_picks_of_reading_each_engine(overrides, monkeypatch, request):
    """Through a run with instances failing and recovering, every pick from the board the
    engines keep is the pick of the same policy reading the engines themselves, and the KV
    floors the board keeps stay lower bounds of each engine's usage."""
    if sim.COMPILED:   # compiled callers call the compiled `pick`, not a patched one
        run_from_source(request.node.nodeid)   # runs are the same either way (test_compiled.py)
        return
    picked = []
    pick = Router.pick

    def checked_pick(router, request):
        engine = pick(router, request)
        if router.board is not None:
            assert engine is Router(router.policy, router.engines).pick(request)
            if router.policy == "least_kv":   # the board's floor lies between the engine's floor and its usage
                for instance, floor in zip(router.engines, router.board.kv_usage_floor.tolist()):
                    assert not instance.up or instance.kv_usage_floor() <= floor <= instance.kv_usage()
            picked.append(engine)
        return engine

    monkeypatch.setattr(Router, "pick", checked_pick)
    faults = {"schedule": [{"instance": 1, "at_s": 5.0, "down_s": 6.0}, {"instance": 3, "at_s": 8.0, "down_s": 4.0},
                           {"instance": 2, "at_s": 9.0, "down_s": 1.0}]}
    table = simulate(spec_for(*overrides), poisson(rate=40, duration=25, prompt=(200, 4000), output=(20, 300)),
                     faults=fault_plan(faults)).requests
    assert len(picked) >= len(table)
    assert len({engine.instance_id for engine in picked}) >= 4   # the picks spread over the pool
    assert (table.status == "failed").any()                      # and the failures did happen
