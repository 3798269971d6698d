"""A running deployment: the vLLM servers and the gateway of a `DeploymentPlan`, started,
checked healthy, and always stopped again.

`with Deployment(plan) as deployment:` returns once every server and the gateway answer
`/health`; leaving the block, by return, exception or Ctrl-C, stops every process group it
started (and any process that left its group). `kill(name)` crashes a server (SIGKILL to its
group), `restart(name)` stops and starts it again on its port and waits for its health; the
gateway's health poll (`real.metrics_poll_s`) then routes to it again. `pids()` lists every
process the deployment runs. A server that dies while starting or never gets healthy raises `DeploymentError`
with the tail of its log (all logs are in `<run_dir>/logs/`), after everything is stopped.
`deployment.json` in the run directory records URLs, cores, pids and log paths.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import asdict
from typing import Any, Mapping

from real.backends import metric_value
from real.plan import DeploymentPlan
from real.processes import Managed, kill_all, start, stop_all, wait_healthy
from real.tiny_model import write_tiny_model


class Deployment:
    def __init__(self, plan: DeploymentPlan, model_cfg: Mapping[str, Any]):
        self.plan = plan
        self.model_cfg = model_cfg
        self.processes: dict[str, Managed] = {}

    def __enter__(self) -> "Deployment":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start(self) -> None:
        plan = self.plan
        logs = plan.run_dir / "logs"
        if plan.generate_model:
            write_tiny_model(self.model_cfg, plan.model_dir)
        for server in plan.servers:
            self.processes[server.name] = start(server.name, list(server.command), os.environ | server.env,
                                                logs / f"{server.name}.log", f"{server.url}/health")
        wait_healthy(list(self.processes.values()), plan.startup_s)
        spec_path = plan.run_dir / "gateway.json"
        plan.gateway.dump(spec_path)
        self.processes["gateway"] = start("gateway", [sys.executable, "-m", "real.gateway", str(spec_path)],
                                          dict(os.environ), logs / "gateway.log", f"{plan.url}/health")
        wait_healthy([self.processes["gateway"]], 30.0, poll_s=0.2)
        (plan.run_dir / "deployment.json").write_text(json.dumps(self.describe(), indent=2))

    def describe(self) -> dict[str, Any]:
        return {"architecture": self.plan.architecture, "url": self.plan.url, "model_dir": str(self.plan.model_dir),
                "gateway": asdict(self.plan.gateway),
                "servers": [{"name": s.name, "role": s.role, "url": s.url, "cores": list(s.cores),
                             "pid": self.processes[s.name].popen.pid, "log": str(self.processes[s.name].log)}
                            for s in self.plan.servers]}

    def stop(self) -> None:
        """Stop every process started; safe to call more than once."""
        stop_all(list(self.processes.values()), self.plan.shutdown_s)

    def kill(self, name: str) -> None:
        """SIGKILL one server's processes, as a crash would (for failure tests); return once they
        are gone."""
        kill_all([self.processes[name]])

    def restart(self, name: str) -> None:
        """Stop server `name` if it still runs, start it again with the same command, cores and
        port (its log continues), and return once it answers /health."""
        old = self.processes[name]
        stop_all([old], self.plan.shutdown_s)
        server = next(s for s in self.plan.servers if s.name == name)
        self.processes[name] = start(name, list(server.command), os.environ | server.env, old.log, old.health_url,
                                     append=True)
        try:
            wait_healthy([self.processes[name]], self.plan.startup_s)
        except BaseException:
            stop_all([self.processes[name]], self.plan.shutdown_s)
            raise

    def pids(self) -> dict[str, set[int]]:
        """Per process started (servers and gateway): the pids it runs now."""
        return {name: process.pids() for name, process in self.processes.items()}


def server_counters(urls: dict[str, str]) -> dict[str, float]:
    """Per server (name -> URL): prompt tokens computed locally and received over the KV connector,
    and preemptions, from its /metrics; a server that does not answer is left out."""
    out: dict[str, float] = {}
    for name, url in urls.items():
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        for source in ("local_compute", "external_kv_transfer"):
            out[f"{name}_prompt_tokens_{source}"] = metric_value(
                text, "vllm:prompt_tokens_by_source_total", {"source": source})
        out[f"{name}_preemptions"] = metric_value(text, "vllm:num_preemptions_total")
    return out


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each counter gained; a counter of a server gone by the end counts as unknown (left out)."""
    return {k: after[k] - before.get(k, 0.0) for k in after}
