"""Failures as configuration: instances that go down, a KV link that degrades or drops, KV
pulls that fail, and the policies vLLM applies to them.

* Instance failures: each instance fails after an exponential time with mean
  `instance_mtbf_s` and comes back `instance_mttr_s` later, and/or at scripted times.
  What it held is lost. A request that had no token yet is resent by the proxy to another
  instance (up to `max_retries` times, if `retry_on_failure`); one whose stream had started
  fails, as a client would see it.
* Link events: during [at_s, at_s + duration_s) the KV network runs at `bandwidth_factor`
  of its bandwidth (0 = down: transfers stall until it returns).
* KV pulls fail with probability `kv_transfer_failure_rate`, and a pull whose prefill
  instance failed or whose lease expired fails too; `kv_load_failure_policy` then either
  fails the request or recomputes the prompt on the decode instance (vLLM's
  `kv_load_failure_policy`). The prefill instance frees the blocks of a prompt never pulled
  after `kv_lease_s` (vLLM's `kv_lease_duration`).
* With no prefill instance up, `prefill_fallback: local` sends a request straight to a decode
  instance, which computes its prompt itself (Dynamo's fallback to aggregated serving); the
  default `fail` fails it, as a proxy that only knows the two-hop path does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import numpy as np
import simpy

from sim.config import ConfigError

POLICIES = ("recompute", "fail")
PREFILL_FALLBACKS = ("fail", "local")


@dataclass(frozen=True, slots=True)
class InstanceOutage:
    instance: int
    at_s: float
    down_s: float


@dataclass(frozen=True, slots=True)
class LinkEvent:
    at_s: float
    duration_s: float
    bandwidth_factor: float


@dataclass(frozen=True, slots=True)
class FaultPlan:
    instance_mtbf_s: float | None = None
    instance_mttr_s: float = 60.0
    outages: tuple[InstanceOutage, ...] = ()
    retry_on_failure: bool = True
    max_retries: int = 2
    link_events: tuple[LinkEvent, ...] = ()
    kv_transfer_failure_rate: float = 0.0
    kv_load_failure_policy: str = "recompute"
    kv_lease_s: float = 30.0
    prefill_fallback: str = "fail"


def fault_plan(cfg: Mapping[str, Any] | None) -> FaultPlan:
    """The `faults` config group as a checked plan (None: no faults, default policies)."""
    if not cfg:
        return FaultPlan()
    try:
        plan = FaultPlan(
            instance_mtbf_s=None if cfg.get("instance_mtbf_s") is None else float(cfg["instance_mtbf_s"]),
            instance_mttr_s=float(cfg.get("instance_mttr_s", 60.0)),
            outages=tuple(InstanceOutage(int(o["instance"]), float(o["at_s"]), float(o["down_s"]))
                          for o in cfg.get("schedule") or ()),
            retry_on_failure=bool(cfg.get("retry_on_failure", True)),
            max_retries=int(cfg.get("max_retries", 2)),
            link_events=tuple(LinkEvent(float(e["at_s"]), float(e["duration_s"]), float(e["bandwidth_factor"]))
                              for e in cfg.get("link_events") or ()),
            kv_transfer_failure_rate=float(cfg.get("kv_transfer_failure_rate", 0.0)),
            kv_load_failure_policy=str(cfg.get("kv_load_failure_policy", "recompute")),
            kv_lease_s=float(cfg.get("kv_lease_s", 30.0)),
            prefill_fallback=str(cfg.get("prefill_fallback", "fail")))
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"faults: malformed entry ({error!r}); schedule entries need instance, at_s, down_s "
                          f"and link_events entries at_s, duration_s, bandwidth_factor") from None
    problems = []
    if plan.instance_mtbf_s is not None and plan.instance_mtbf_s <= 0:
        problems.append("instance_mtbf_s must be > 0 (or null for no random failures)")
    if plan.instance_mttr_s <= 0 or any(o.down_s <= 0 or o.at_s < 0 for o in plan.outages):
        problems.append("recovery times must be > 0 and failure times >= 0")
    if any(e.duration_s <= 0 or not 0 <= e.bandwidth_factor for e in plan.link_events):
        problems.append("link_events need duration_s > 0 and bandwidth_factor >= 0")
    if not 0 <= plan.kv_transfer_failure_rate <= 1:
        problems.append("kv_transfer_failure_rate must be in [0, 1]")
    if plan.kv_load_failure_policy not in POLICIES:
        problems.append(f"kv_load_failure_policy must be one of {POLICIES}")
    if plan.prefill_fallback not in PREFILL_FALLBACKS:
        problems.append(f"prefill_fallback must be one of {PREFILL_FALLBACKS}")
    if plan.max_retries < 0 or plan.kv_lease_s <= 0:
        problems.append("max_retries must be >= 0 and kv_lease_s > 0")
    if problems:
        raise ConfigError("faults: " + "; ".join(problems))
    return plan


class FailableCluster(Protocol):
    def fail_instance(self, instance_id: int) -> None: ...
    def recover_instance(self, instance_id: int) -> None: ...


def inject_faults(env: simpy.Environment, cluster: FailableCluster, instances: int, plan: FaultPlan,
                  network, seed: int) -> None:
    """Start the processes that carry out `plan` (network: the KV network, or None)."""
    for outage in plan.outages:
        if not 0 <= outage.instance < instances:
            raise ConfigError(f"faults.schedule names instance {outage.instance}; this cluster has instances "
                              f"0..{instances - 1} (prefill instances are numbered before decode ones)")
        env.process(_outage(env, cluster, outage.instance, outage.at_s, outage.down_s))
    if plan.instance_mtbf_s is not None:
        for instance in range(instances):
            rng = np.random.default_rng([seed, instance])   # one stream per instance: adding one changes no other
            env.process(_random_outages(env, cluster, instance, plan, rng))
    if network is not None:
        for event in plan.link_events:
            env.process(_link_event(env, network, event))


def _outage(env, cluster, instance: int, at_s: float, down_s: float):
    yield env.timeout(at_s)
    cluster.fail_instance(instance)
    yield env.timeout(down_s)
    cluster.recover_instance(instance)


def _random_outages(env, cluster, instance: int, plan: FaultPlan, rng: np.random.Generator):
    while True:
        yield env.timeout(rng.exponential(plan.instance_mtbf_s))
        cluster.fail_instance(instance)
        yield env.timeout(plan.instance_mttr_s)
        cluster.recover_instance(instance)


def _link_event(env, network, event: LinkEvent):
    yield env.timeout(event.at_s)
    network.set_bandwidth_factor(event.bandwidth_factor)
    yield env.timeout(event.duration_s)
    network.set_bandwidth_factor(1.0)
