"""The planner: its capacity bound never undercuts the simulator, and the search returns the
cheapest passing configuration while simulating only what it must."""

from experiments.capacity import Lengths, capacity_rps
from experiments.configs import compose_config
from experiments.evaluate import measure_at, offered_rps
from experiments.plan import cost_and_gpus, ranked, search
from experiments.search_space import Space
from sim.experiment import plan, slo_from_config
from sim.workload import build_workload

WORKLOAD = ["workload=poisson", "workload.num_requests=300"]


def test_no_configuration_passes_above_its_capacity_bound():
    cfg = compose_config(["serving.monolithic.instances=1", *WORKLOAD])
    slo = slo_from_config(cfg["slo"])
    workload = build_workload(cfg["workload"], 0)
    lengths = Lengths(workload.prompt_tokens.mean(), workload.output_tokens.mean())
    for spec in plan(cfg).values():
        bound = capacity_rps(spec, lengths, slo.tpot_s)
        # Half as much again as the bound: a 300-request run is too short to fail just above it.
        scale = 1.5 * bound / offered_rps(workload)
        assert not measure_at(spec, cfg["workload"], 0, slo, scale)["meets_slo_target"], spec.architecture


def test_search_finds_the_cheapest_passing_configuration_and_skips_the_rest():
    cfg = compose_config([*WORKLOAD, "workload.rate=40"])
    slo = slo_from_config(cfg["slo"])
    workload = build_workload(cfg["workload"], 0)
    space = Space(gpus=("h100-sxm", "l40s"), tps=(1,), max_num_batched_tokens=(8192,), max_num_seqs=(256,),
                  links=("rdma",), max_gpus=6)
    result = search(cfg, space, workload, 40.0, slo, top_k=1, jobs=1, progress=False)
    simulated = len(result.evaluated)
    assert result.considered == result.pruned + result.skipped + simulated
    assert result.pruned > 0 and result.skipped > 0
    for arch in ("monolithic", "disaggregated"):
        best = ranked(result, arch, "cost")[0]
        cheaper = [e for e in result.evaluated if e.candidate.family.architecture == arch
                   and e.cost_per_hour < best.cost_per_hour]
        assert not any(e.passed for e in cheaper)
        assert cost_and_gpus(best.candidate) == (best.cost_per_hour, best.gpus)
        # Growing a passing configuration was never simulated.
        assert not any(e.candidate != best.candidate and e.candidate.dominates(best.candidate)
                       for e in result.evaluated)


def test_busiest_stretch_is_the_densest_run_of_requests():
    from experiments.evaluate import busiest
    from sim.workload import Workload

    arrivals = [0.0, 5.0, 6.0, 6.5, 7.0, 20.0]
    w = Workload("t", arrivals, [1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1], "test")
    peak = busiest(w, 3)
    assert list(peak.arrival_s) == [0.0, 0.5, 1.0] and list(peak.prompt_tokens) == [3, 4, 5]
    assert busiest(w, 10) is w
