"""`python -m real deploy|replay|run|profile [hydra overrides]`: the real vLLM deployments, from the
simulator's configs (configs/deploy.yaml = configs/config.yaml + real/cpu + the tiny model).

* `deploy`: start the configured architecture (serving=monolithic|disaggregated) and keep it
  running until Ctrl-C; prints the router/proxy URL.
* `replay`: replay the configured workload against a running deployment (real.replay.url,
  default the local one) and write the tables.
* `run`: deploy, replay, tear down, for each architecture asked (serving=compare: both, one
  after the other on the same cores), then print them side by side.
* `profile`: measure step times through vLLM's engine and the KV hand-off through the
  connector on this machine, and write a calibration file (`real/profile.py`) for
  `python -m sim.calibrate`.

Outputs go to Hydra's run directory: requests_<arch>.parquet (the simulator's per-request
table), tokens_<arch>.parquet (every token's arrival), summary.json, logs/ of every process.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from real.deployment import Deployment
from real.measure import Measurement, measure
from real.plan import plan_deployment
from real.processes import DeploymentError
from sim.config import ConfigError
from sim.experiment import as_dict
from sim.report import format_table
from sim.workload import WorkloadError

COMMANDS = ("deploy", "replay", "run", "profile")
_command: list[str] = []   # the sub-command, taken off the command line before Hydra parses it


def _architectures(cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, config with `serving` set to that architecture) for every architecture asked."""
    serving = cfg["serving"]
    if serving.get("architecture") == "compare":
        return [(name, cfg | {"serving": serving[name]}) for name in ("monolithic", "disaggregated")]
    return [(str(serving.get("architecture")), cfg)]


def _default_url(cfg: dict[str, Any]) -> str:
    real = cfg["real"]
    return real["replay"]["url"] or f"http://{real['host']}:{real['base_port']}"


def deploy(cfg: dict[str, Any], out_dir: Path) -> None:
    plan = plan_deployment(cfg, out_dir)
    with Deployment(plan, cfg["model"]) as deployment:
        print(f"{plan.architecture} deployment up at {plan.url} (servers: "
              f"{', '.join(f'{s.name} {s.url} cores {s.cores}' for s in plan.servers)}); logs in {out_dir / 'logs'}")
        print("Ctrl-C stops it", flush=True)
        while True:
            for process in deployment.processes.values():
                if not process.alive():
                    raise DeploymentError(f"{process.name} exited with code {process.popen.returncode}; last "
                                          f"lines of {process.log}:\n{process.tail()}")
            time.sleep(1.0)


def report(measurements: list[Measurement], out_dir: Path, cfg: dict[str, Any]) -> None:
    for m in measurements:
        m.write(out_dir)
    summaries = {m.architecture: m.summary for m in measurements}
    (out_dir / "summary.json").write_text(json.dumps({"runs": summaries, "config": cfg}, indent=2, default=float))
    print(format_table(summaries))
    for m in measurements:
        s = m.summary
        print(f"{m.architecture}: replayer scheduling delay p50 {s['scheduling_delay_p50_s'] * 1e3:.2f} ms, "
              f"p99 {s['scheduling_delay_p99_s'] * 1e3:.2f} ms, max {s['scheduling_delay_max_s'] * 1e3:.2f} ms")
    print(f"results written to {out_dir}: requests_*.parquet, tokens_*.parquet, summary.json, logs/")


def run(cfg: dict[str, Any], out_dir: Path) -> None:
    measurements = []
    for name, one in _architectures(cfg):
        plan = plan_deployment(one, out_dir / name)
        with Deployment(plan, one["model"]):
            measurements.append(measure(one, plan.url))
    report(measurements, out_dir, cfg)


def _stop_on_sigterm(*_: object) -> None:
    raise SystemExit(143)   # unwinds through every `with Deployment`, which stops its processes


@hydra.main(version_base=None, config_path="../configs", config_name="deploy")
def main(cfg: DictConfig) -> None:
    command = _command[0]
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    config = as_dict(cfg)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if command == "deploy":
            deploy(config, out_dir)
        elif command == "profile":
            from real.profile import profile
            profile(config, out_dir, "python -m real profile " + " ".join(HydraConfig.get().overrides.task))
        elif command == "replay":
            report([measure(config, _default_url(config))], out_dir, config)
        else:
            run(config, out_dir)
    except (DeploymentError, ConfigError, WorkloadError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every process started was stopped") from None


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m real {{{'|'.join(COMMANDS)}}} [hydra overrides]")
    _command.append(sys.argv.pop(1))
    main()
