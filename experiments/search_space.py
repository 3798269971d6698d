"""The configurations the planner may choose from: monolithic (GPU, instances x TP, chunk size,
batch limit) and disaggregated (prefill GPU x instances x TP, decode GPU x instances x TP, link).

A `Family` is everything but the instance counts; a `Candidate` is a family with counts. The
planner grows counts within a family, so the family is what "stop growing once it passes"
refers to.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from experiments.configs import group_entry


@dataclass(frozen=True, slots=True)
class PoolChoice:
    gpu: str
    tp: int


@dataclass(frozen=True, slots=True)
class Family:
    architecture: str                  # monolithic | disaggregated
    pools: tuple[PoolChoice, ...]      # (mixed,) or (prefill, decode)
    max_num_batched_tokens: int        # per step (the chunk size of chunked prefill)
    max_num_seqs: int
    link: str                          # network/ entry for the KV hand-off (unused by monolithic)


@dataclass(frozen=True, slots=True)
class Candidate:
    family: Family
    instances: tuple[int, ...]         # per pool, as family.pools

    def dominates(self, other: "Candidate") -> bool:
        """Same family and at least as many instances in every pool."""
        return self.family == other.family and all(a >= b for a, b in zip(self.instances, other.instances))

    @property
    def label(self) -> str:
        f = self.family
        pools = " + ".join(f"{n}{role} x TP{p.tp} {p.gpu}" for n, p, role in
                           zip(self.instances, f.pools, ("",) if len(f.pools) == 1 else ("P", "D")))
        knobs = f"chunk {f.max_num_batched_tokens}, seqs {f.max_num_seqs}"
        return f"{pools} ({knobs})" if f.architecture == "monolithic" else f"{pools} ({f.link}; {knobs})"


@dataclass(frozen=True, slots=True)
class Space:
    gpus: tuple[str, ...]
    tps: tuple[int, ...]
    max_num_batched_tokens: tuple[int, ...]
    max_num_seqs: tuple[int, ...]
    links: tuple[str, ...]
    max_gpus: int
    architectures: tuple[str, ...] = ("monolithic", "disaggregated")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Space":
        return cls(*(tuple(cfg[k]) for k in ("gpus", "tp", "max_num_batched_tokens", "max_num_seqs", "links")),
                   int(cfg["max_gpus"]), tuple(cfg["architectures"]))


def families(space: Space) -> Iterator[Family]:
    knobs = list(itertools.product(space.max_num_batched_tokens, space.max_num_seqs))
    pools = [PoolChoice(g, t) for g in space.gpus for t in space.tps]
    if "monolithic" in space.architectures:
        for pool, (chunk, seqs) in itertools.product(pools, knobs):
            yield Family("monolithic", (pool,), chunk, seqs, space.links[0])
    if "disaggregated" in space.architectures:
        for prefill, decode, link, (chunk, seqs) in itertools.product(pools, pools, space.links, knobs):
            # NVLink carries KV only inside one node: same GPU kind on both sides.
            if link != "nvlink" or prefill.gpu == decode.gpu:
                yield Family("disaggregated", (prefill, decode), chunk, seqs, link)


def candidates(family: Family, max_gpus: int, min_instances: tuple[int, ...]) -> Iterator[Candidate]:
    """Every instance count vector from `min_instances` up that fits in `max_gpus`."""
    tps = [p.tp for p in family.pools]
    ranges = [range(low, max_gpus // tp + 1) for low, tp in zip(min_instances, tps)]
    for counts in itertools.product(*ranges):
        if sum(n * tp for n, tp in zip(counts, tps)) <= max_gpus:
            yield Candidate(family, counts)


def experiment_config(base: Mapping[str, Any], candidate: Candidate) -> dict[str, Any]:
    """`base` (a composed config with serving=compare) with its serving and network set to the
    candidate; each pool names its GPU (resolved by sim.experiment.plan)."""
    f = candidate.family
    cfg = copy.deepcopy(dict(base))
    serving = copy.deepcopy(base["serving"][f.architecture])
    roles = ["monolithic"] if f.architecture == "monolithic" else ["prefill", "decode"]
    for role, pool, n in zip(roles, f.pools, candidate.instances):
        section = serving if role == "monolithic" else serving[role]
        section.update(instances=n, tp=pool.tp, hardware=pool.gpu)
        section["engine"].update(max_num_batched_tokens=f.max_num_batched_tokens, max_num_seqs=f.max_num_seqs)
    cfg["serving"] = serving
    cfg["network"] = group_entry("network", f.link)
    return cfg
