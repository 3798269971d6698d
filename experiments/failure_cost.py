"""What failures cost: the same experiment without and with a fault plan, both architectures.

    python -m experiments.failure_cost                         # default workload, faults=example
    python -m experiments.failure_cost faults=example workload.window.duration_s=1800 serving.disaggregated.prefill.instances=2

Prints, per architecture: requests failed, retried and recomputed, the extra TTFT at p50 and
p99, SLO attainment and goodput with and without faults, and the goodput lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from sim.experiment import run_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="config", overrides=overrides)


def failure_cost(overrides: list[str]) -> dict[str, dict[str, float]]:
    if not any(o.startswith("faults=") for o in overrides):
        overrides = [*overrides, "faults=example"]
    clean_overrides = [o for o in overrides if not o.startswith("faults")] + ["faults=none"]
    faulty = run_experiment(compose_config(overrides), plot=False).summaries
    clean = run_experiment(compose_config(clean_overrides), plot=False).summaries
    return {arch: {
        "failed": faulty[arch]["failed"],
        "retried": faulty[arch]["retries"],
        "kv_recomputed": faulty[arch]["kv_recomputes"],
        "extra_ttft_p50_ms": (faulty[arch]["ttft_p50_s"] - clean[arch]["ttft_p50_s"]) * 1e3,
        "extra_ttft_p99_ms": (faulty[arch]["ttft_p99_s"] - clean[arch]["ttft_p99_s"]) * 1e3,
        "slo_attainment_clean": clean[arch]["slo_attainment"],
        "slo_attainment_faults": faulty[arch]["slo_attainment"],
        "goodput_clean_rps": clean[arch]["goodput_rps"],
        "goodput_faults_rps": faulty[arch]["goodput_rps"],
        "goodput_lost_pct": 100 * (1 - faulty[arch]["goodput_rps"] / clean[arch]["goodput_rps"]),
    } for arch in faulty}


def main() -> None:
    table = failure_cost(sys.argv[1:])
    archs = list(table)
    rows = list(next(iter(table.values())))
    print(f"{'':26}" + "".join(f"{a:>16}" for a in archs))
    for row in rows:
        print(f"{row:26}" + "".join(f"{table[a][row]:>16,.3f}" if isinstance(table[a][row], float)
                                    else f"{table[a][row]:>16}" for a in archs))


if __name__ == "__main__":
    main()
