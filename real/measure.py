"""One measurement: replay the configured workload against a running deployment and turn what
was seen into the simulator's outputs (per-request table, per-token table, summary).

The deployment is described by its gateway's `GET /deployment` (a `GatewaySpec`), so a
measurement needs only the gateway's URL, whether this process started the deployment or not.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from real.deployment import counter_deltas, server_counters
from real.gateway import GatewaySpec
from real.processes import DeploymentError
from real.replay import ReplayLimits, replay
from real.results import Cores, CpuCluster, CpuPool, requests_frame, summary, tokens_frame
from sim.catalog import model_from_config
from sim.experiment import slo_from_config
from sim.workload import build_workload


@dataclass
class Measurement:
    architecture: str
    requests: pd.DataFrame     # sim.table.REQUEST_COLUMNS
    tokens: pd.DataFrame       # request_id, token_index, time_s
    summary: dict[str, Any]

    def write(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.requests.to_parquet(out_dir / f"requests_{self.architecture}.parquet", index=False)
        self.tokens.to_parquet(out_dir / f"tokens_{self.architecture}.parquet", index=False)


def fetch_spec(url: str) -> GatewaySpec:
    try:
        with urllib.request.urlopen(f"{url}/deployment", timeout=10) as response:
            return GatewaySpec(**json.loads(response.read()))
    except OSError as error:
        raise DeploymentError(f"no deployment answers at {url} ({error}); start one with `python -m real deploy "
                              f"...` or set real.replay.url to its router/proxy") from None


def server_urls(spec: GatewaySpec) -> dict[str, str]:
    return {f"{role}{i}": url for role, urls in spec.pools.items() for i, url in enumerate(urls)}


def measure(cfg: Mapping[str, Any], url: str) -> Measurement:
    """Replay `cfg`'s workload (seeded by `cfg.seed`) against the deployment at `url`."""
    spec = fetch_spec(url)
    real = cfg["real"]
    model = model_from_config(cfg["model"])
    workload = build_workload(cfg["workload"], int(cfg["seed"]))
    timeouts = real["timeouts"]
    limits = ReplayLimits(float(timeouts["request_s"]), float(timeouts["idle_s"]))
    urls = server_urls(spec)
    before = server_counters(urls)
    outcomes = asyncio.run(replay(url, spec.model, workload, model.vocab_size, limits))
    counters = counter_deltas(before, server_counters(urls))
    requests = requests_frame(outcomes, workload.prompt_tokens, workload.output_tokens, spec.architecture,
                              model.kv_bytes_per_token)
    tokens = tokens_frame(outcomes)
    cores = Cores(f"{int(real['cores_per_instance'])} CPU core")
    cluster = CpuCluster(spec.architecture, tuple(CpuPool(role, len(pool), int(real["cores_per_instance"]), cores)
                                                 for role, pool in spec.pools.items()))
    stats = summary(cluster, requests, tokens, outcomes, slo_from_config(cfg["slo"]), counters)
    stats |= {"workload": workload.source, "url": url}
    return Measurement(spec.architecture, requests, tokens, stats)
