"""Soak of the real deployment: a long open-loop replay at moderate load, with the resident
memory of every process measured at the start, every `--sample-s` and at the end, to show
that nothing grows without bound.

    flock /tmp/real_vllm.lock python -m experiments.soak_real --minutes 30 --rate-scale 0.07

Starts the configured deployment (default `serving=disaggregated`: 1 prefill + 1 decode vLLM
server and the proxy), replays `workload=azure_conv` slowed by `--rate-scale` (a window of the
trace of `minutes x 60 x rate_scale` trace seconds, so the replay lasts `--minutes`), and
samples, per process: the RSS summed over its process group (a vLLM server is its API server,
its engine core and their helpers; the gateway; the replayer, which is this process), the
gateway's per-server request counters and each server's running / waiting requests (is it
saturated?). Writes `memory.csv` (long format: elapsed_s, process, pids, rss_mib, and the load
columns), `requests_<arch>.parquet`, `summary.json` into `--out`, and prints the memory table
(start, end, change, peak per process) and the run's latencies. Further arguments are Hydra
overrides of configs/deploy.yaml.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from experiments.configs import compose_config
from real.backends import metric_value
from real.deployment import Deployment
from real.measure import measure
from real.plan import plan_deployment

MIB = 1024 * 1024
FIELDS = ["elapsed_s", "process", "pids", "rss_mib", "sent", "failed", "outstanding", "running", "waiting"]


def rss_mib(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / MIB


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def sample(deployment: Deployment, elapsed_s: float) -> list[dict]:
    """One row per process (each server, the gateway, the replayer): its RSS and its load."""
    stats = json.loads(_get(f"{deployment.plan.url}/stats") or "{}")
    counters = {f"{role}{b['instance']}": b for role, backends in stats.items() for b in backends}
    urls = {server.name: server.url for server in deployment.plan.servers}
    rows = []
    for name, pids in [*deployment.pids().items(), ("replayer", {os.getpid()})]:
        row = {"elapsed_s": round(elapsed_s, 1), "process": name, "pids": len(pids), "rss_mib": round(rss_mib(pids), 1)}
        if name in counters:
            row |= {k: counters[name][k] for k in ("sent", "failed", "outstanding")}
        text = _get(f"{urls[name]}/metrics") if name in urls else None
        if text is not None:
            row |= {"running": metric_value(text, "vllm:num_requests_running"),
                    "waiting": metric_value(text, "vllm:num_requests_waiting")}
        rows.append(row)
    return rows


def memory_table(rows: list[dict]) -> list[dict]:
    """Per process: RSS at the first and last sample, the change, and the peak."""
    out = []
    for name in dict.fromkeys(r["process"] for r in rows):
        mine = [r for r in rows if r["process"] == name]
        out.append({"process": name, "start_mib": mine[0]["rss_mib"], "end_mib": mine[-1]["rss_mib"],
                    "change_mib": round(mine[-1]["rss_mib"] - mine[0]["rss_mib"], 1),
                    "peak_mib": max(r["rss_mib"] for r in mine)})
    return out


def soak(minutes: float, rate_scale: float, sample_s: float, out: Path, overrides: list[str]) -> list[dict]:
    cfg = compose_config(["serving=disaggregated", "workload=azure_conv", f"workload.rate_scale={rate_scale}",
                          f"workload.window.duration_s={minutes * 60 * rate_scale}", *overrides], config_name="deploy")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    plan = plan_deployment(cfg, out / "run")
    with Deployment(plan, cfg["model"]) as deployment:
        started = time.monotonic()
        rows += sample(deployment, 0.0)
        done = threading.Event()

        def sampler() -> None:
            while not done.wait(sample_s):
                rows.extend(sample(deployment, time.monotonic() - started))
                last = {r["process"]: r for r in rows}
                print(f"[{(time.monotonic() - started) / 60:5.1f} min] " + ", ".join(
                    f"{n} {r['rss_mib']:.0f} MiB" + (f" (run {r.get('running', 0):.0f}, wait {r.get('waiting', 0):.0f})"
                                                      if "running" in r else "") for n, r in last.items()),
                      flush=True)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        try:
            measurement = measure(cfg, plan.url)
        finally:
            done.set()
            thread.join()
        rows += sample(deployment, time.monotonic() - started)
    measurement.write(out)
    with (out / "memory.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    s = measurement.summary
    keep = ("requests", "completed", "failed", "rejected", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s",
            "tpot_p99_s", "itl_p50_s", "itl_p99_s", "output_tokens_per_s", "scheduling_delay_p99_s", "workload")
    (out / "summary.json").write_text(json.dumps({"minutes": minutes, "rate_scale": rate_scale,
                                                  "overrides": overrides, "memory": memory_table(rows),
                                                  "run": {k: s.get(k) for k in keep}}, indent=2, default=float))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate-scale", type=float, default=0.07)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/soak-real"))
    args, overrides = parser.parse_known_args()
    rows = soak(args.minutes, args.rate_scale, args.sample_s, args.out, overrides)
    summary = json.loads((args.out / "summary.json").read_text())
    print(f"\n{'process':<10} {'start MiB':>10} {'end MiB':>10} {'change':>8} {'peak MiB':>10}")
    for r in memory_table(rows):
        print(f"{r['process']:<10} {r['start_mib']:>10.1f} {r['end_mib']:>10.1f} {r['change_mib']:>+8.1f} "
              f"{r['peak_mib']:>10.1f}")
    print(json.dumps(summary["run"], indent=2))


if __name__ == "__main__":
    main()
