"""Run one cluster on one workload and collect its raw results.

This is the library entry point (`simulate`); the command line (`python -m sim`) and the
benchmarks call it. The simulation itself has no randomness: the workload (built from the
seed) fully determines the result.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from sim.cluster import Cluster, DisaggregatedCluster, SimOptions, build_cluster
from sim.faults import FaultPlan, inject_faults
from sim.config import ClusterSpec
from sim.request import Request
from sim.samples import Distribution
from sim.table import requests_table
from sim.workload import Workload


@dataclass
class RunResult:
    spec: ClusterSpec
    requests: pd.DataFrame        # the per-request table (sim.table.REQUEST_COLUMNS)
    itl: Distribution             # every inter-token gap of every request
    utilisation: pd.DataFrame     # one row per (instance, time bin): see utilisation_table
    instances: pd.DataFrame       # one row per instance: role, steps, KV capacity and peak use
    peak_concurrent_transfers: int
    end_s: float                  # simulated time when the last event happened
    wall_s: float                 # wall-clock seconds the simulation took

    @property
    def architecture(self) -> str:
        return self.spec.architecture


def simulate(spec: ClusterSpec, workload: Workload, util_bin_s: float = 1.0, fast_forward: bool = True,
             faults: FaultPlan | None = None, seed: int = 0) -> RunResult:
    """Run `workload` through the cluster `spec` until every request has ended. `fast_forward=False`
    executes every engine step as its own event: the slow reference that the fast path must
    match bit for bit. `seed` drives the random failures of `faults`."""
    with _young_collections_every(YOUNG_GC_THRESHOLD):
        return _simulate(spec, workload, util_bin_s, fast_forward, faults, seed)


# A run allocates millions of short-lived SimPy events, many in reference cycles with their
# processes; Python's default (a young collection every 700 allocations) spent ~8% of a run on
# collections that found little. Restored after the run.
YOUNG_GC_THRESHOLD = 50_000


@contextmanager
def _young_collections_every(allocations: int):
    previous = gc.get_threshold()
    gc.set_threshold(allocations, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _simulate(spec: ClusterSpec, workload: Workload, util_bin_s: float, fast_forward: bool,
              faults: FaultPlan | None, seed: int) -> RunResult:
    started = time.perf_counter()
    env = simpy.Environment()
    options = SimOptions(util_bin_s, fast_forward, prefix_block_tokens(workload), faults or FaultPlan(), seed)
    cluster = build_cluster(env, spec, options, len(workload))
    network = cluster.network if isinstance(cluster, DisaggregatedCluster) else None
    inject_faults(env, cluster, len(cluster.all_engines), options.faults, network, seed)
    env.process(_arrivals(env, workload, cluster))
    _run_until_every_request_ends(env, cluster, float(workload.arrival_s[-1]))
    wall_s = time.perf_counter() - started
    return RunResult(spec=spec, requests=requests_table(cluster.requests),
                     itl=cluster.itl.distribution(),
                     utilisation=utilisation_table(cluster, env.now), instances=instances_table(cluster),
                     peak_concurrent_transfers=network.peak_concurrent if network else 0,
                     end_s=env.now, wall_s=wall_s)


STUCK_AFTER_S = 86_400.0   # simulated time after the last arrival by which every request must have ended


def _run_until_every_request_ends(env: simpy.Environment, cluster: Cluster, last_arrival_s: float) -> None:
    """Run to the end of the last request; a request that never ends is a bug, reported loudly
    (failure processes would otherwise keep the simulation going forever)."""
    watchdog = env.timeout(last_arrival_s + STUCK_AFTER_S)
    try:
        env.run(until=env.any_of([cluster.done, watchdog]))
    except RuntimeError:   # SimPy: no events left before `until`
        pass
    if not cluster.done.triggered:
        stuck = [r.id for r in cluster.requests if r.status == "pending"]
        raise RuntimeError(f"simulation ended with {len(stuck)} requests that never completed or failed "
                           f"(ids {stuck[:10]}...) or never arrived; this is a simulator bug")


def prefix_block_tokens(workload: Workload) -> int | None:
    """Tokens per prefix-block hash when the workload carries hashes (Mooncake), else None."""
    return workload.prefix_block_tokens if getattr(workload, "prefix_block_hashes", None) is not None else None


def _arrivals(env: simpy.Environment, workload: Workload, cluster: Cluster):
    arrivals = workload.arrival_s.tolist()
    prompts = workload.prompt_tokens.tolist()
    outputs = workload.output_tokens.tolist()
    has_hashes = prefix_block_tokens(workload) is not None
    for i, at in enumerate(arrivals):
        if at > env.now:
            yield env.timeout(at - env.now)
        hashes = tuple(workload.blocks_of(i).tolist()) if has_hashes else ()
        cluster.arrive(Request(i, at, prompts[i], outputs[i], prefix_hashes=hashes))


def utilisation_table(cluster: Cluster, end_s: float) -> pd.DataFrame:
    """Columns: role, instance, bin_start_s, bin_s, busy_s, flops, bytes, compute_util, memory_util.

    compute_util = FLOPs / (peak FLOP/s x GPUs x bin width); memory_util likewise with HBM
    bandwidth: what the GPUs of the instance did, against what they could have done.
    """
    instances = [(pool, engine, engine.utilisation.bin_count(end_s))
                 for pool in cluster.spec.pools for engine in cluster.engines[pool.role]]
    rows = sum(bins for _, _, bins in instances)
    # Whole columns filled in place: a frame per instance and a concat cost ~1 s for a 256-GPU
    # hour, and arrays per instance held to the end kept ~70 MB resident.
    table = {"role": np.empty(rows, dtype=object), "instance": np.empty(rows, dtype=np.int64)} | {
        name: np.empty(rows) for name in ("bin_start_s", "bin_s", "busy_s", "flops", "bytes", "compute_util",
                                          "memory_util")}
    start = 0
    for pool, engine, bins in instances:
        rows_of_engine = slice(start, start + bins)
        start += bins
        bin_s = engine.utilisation.bin_s
        series = engine.utilisation.series(end_s)
        table["role"][rows_of_engine] = pool.role
        table["instance"][rows_of_engine] = engine.instance_id
        table["bin_start_s"][rows_of_engine] = np.arange(bins) * bin_s
        table["bin_s"][rows_of_engine] = bin_s
        for name, values in series.items():
            table[name][rows_of_engine] = values
        table["compute_util"][rows_of_engine] = series["flops"] / (pool.gpu.peak_flops * pool.tp * bin_s)
        table["memory_util"][rows_of_engine] = series["bytes"] / (pool.gpu.memory_bandwidth * pool.tp * bin_s)
    return pd.DataFrame(table)


def instances_table(cluster: Cluster) -> pd.DataFrame:
    rows = [{"role": pool.role, "instance": e.instance_id, "tp": pool.tp, "gpu": pool.gpu.name,
             "steps": e.steps, "kv_blocks": e.kv.capacity, "kv_peak_blocks": e.kv.peak_used,
             "kv_blocks_in_use_at_end": e.kv.used,
             "prefix_lookup_tokens": e.prefix_cache.lookup_tokens if e.prefix_cache else 0,
             "prefix_hit_tokens": e.prefix_cache.hit_tokens if e.prefix_cache else 0}
            for pool in cluster.spec.pools for e in cluster.engines[pool.role]]
    return pd.DataFrame(rows)
