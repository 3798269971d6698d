"""Shape check against Splitwise (Patel et al., ISCA'24): disaggregated throughput at equal cost
relative to monolithic, on Llama-2-70B with TP8 machines (DGX-H100 / DGX-A100) and the Azure
2023 traces. The paper reports "up to 1.4x higher throughput at 20% lower cost".

    python -m experiments.splitwise_check            # both traces (minutes on 2 cores)
    python -m experiments.splitwise_check --quick    # conv only, coarser bisection

1. The step-time model against Splitwise's measured numbers (perf_model.csv): prompt time
   and per-token time of Llama-2-70B at TP8 on H100 and A100, sim / measured.
2. Goodput (experiments.goodput) of iso-cost clusters of TP8 machines: Baseline-H100
   (monolithic H100, chunked prefill, and with whole prompts as Splitwise's baseline ran), Splitwise-HH (H100 prefill + H100 decode) and Splitwise-HA (H100
   prefill + A100 decode, via per-pool hardware), at the price of `Baseline-H100`; printed as
   throughput and throughput per dollar relative to Baseline-H100.

Deviations from the paper's setup, on purpose: this project's GPU prices (4.25 vs 2.21 USD per
GPU-hour; Splitwise weighs DGX machines 4.76 : 2.21), its SLO (TTFT and TPOT limits rather
than slowdowns against an unloaded A100), vLLM-style chunked prefill on the monolithic side
(Splitwise's baseline ran whole prompts), and Llama-2's context raised to 8192 so that the
traces' long prompts are served, as Splitwise's profile (prompts up to 8192) implies.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from sim.catalog import gpu_from_config, model_from_config
from sim.experiment import plan
from sim.step_time import BatchShape, StepTimeModel

from experiments.configs import compose_config, group_entry
from experiments.goodput import find_goodput

PROFILE = Path("/work/shared/data/profiles/splitwise/perf_model.csv")
HARDWARE = {"h100-80gb": "h100-sxm", "a100-80gb": "a100-80gb"}   # Splitwise's names -> configs/hardware
BASE = ["model=llama2-70b", "model.max_model_len=8192", "slo.ttft_s=2.0", "slo.tpot_s=0.1"]
MACHINE = 8   # GPUs per machine (TP8 instance)

# name -> overrides; every cluster costs at most what 4 DGX-H100 machines cost.
CLUSTERS = {
    "Baseline-H100 (4 H100 machines)": ["serving=monolithic", "serving.instances=4", "serving.tp=8"],
    "Baseline-H100, whole prompts": ["serving=monolithic", "serving.instances=4", "serving.tp=8",
                                     "serving.engine.chunked_prefill=false"],
    "Splitwise-HH (3P + 1D H100)": ["serving=disaggregated", "serving.prefill.instances=3", "serving.prefill.tp=8",
                                    "serving.decode.instances=1", "serving.decode.tp=8", "network=nvlink"],
    "Splitwise-HH (2P + 2D H100)": ["serving=disaggregated", "serving.prefill.instances=2", "serving.prefill.tp=8",
                                    "serving.decode.instances=2", "serving.decode.tp=8", "network=nvlink"],
    "Splitwise-HH (1P + 3D H100)": ["serving=disaggregated", "serving.prefill.instances=1", "serving.prefill.tp=8",
                                    "serving.decode.instances=3", "serving.decode.tp=8", "network=nvlink"],
    "Splitwise-HA (3P H100 + 1D A100)": ["serving=disaggregated", "serving.prefill.instances=3", "serving.prefill.tp=8",
                                         "serving.decode.instances=1", "serving.decode.tp=8",
                                         "+serving.decode.hardware=a100-80gb"],
    "Splitwise-HA (2P H100 + 3D A100)": ["serving=disaggregated", "serving.prefill.instances=2", "serving.prefill.tp=8",
                                         "serving.decode.instances=3", "serving.decode.tp=8",
                                         "+serving.decode.hardware=a100-80gb"],
    "Splitwise-HA (1P H100 + 5D A100)": ["serving=disaggregated", "serving.prefill.instances=1", "serving.prefill.tp=8",
                                         "serving.decode.instances=5", "serving.decode.tp=8",
                                         "+serving.decode.hardware=a100-80gb"],
}


def step_time_vs_profile() -> pd.DataFrame:
    """Median measured prompt and per-token times (ms) of Llama-2-70B TP8 against the model's."""
    profile = pd.read_csv(PROFILE)
    rows = profile[(profile["model"] == "llama2-70b") & (profile["tensor_parallel"] == MACHINE)
                   & profile["hardware"].isin(list(HARDWARE))]
    measured = rows.groupby(["hardware", "prompt_size", "batch_size", "token_size"])[["prompt_time", "token_time"]]
    measured = measured.median().reset_index()
    measured = measured[measured["token_size"] == 128]
    llm = model_from_config(group_entry("model", "llama2-70b"))
    out = []
    for r in measured.itertuples():
        step = StepTimeModel(llm, gpu_from_config(group_entry("hardware", HARDWARE[r.hardware])), MACHINE)
        b, p = int(r.batch_size), int(r.prompt_size)
        prompt_s = step.cost(BatchShape.of([(p, 0)] * b, sampled_seqs=b)).time_s
        context = p + 64   # mid-way through 128 output tokens
        token_s = step.cost(BatchShape(b, b * (context + 1), b * (context + 1), b)).time_s
        out.append({"hardware": r.hardware, "prompt": p, "batch": b,
                    "prompt_ms": r.prompt_time, "sim_prompt_ms": prompt_s * 1e3,
                    "token_ms": r.token_time, "sim_token_ms": token_s * 1e3})
    table = pd.DataFrame(out)
    table["prompt_ratio"] = table["sim_prompt_ms"] / table["prompt_ms"]
    table["token_ratio"] = table["sim_token_ms"] / table["token_ms"]
    return table


def cluster_goodput(args: tuple[str, str, list[str], float, int]) -> dict:
    name, trace, overrides, rel_tol, max_requests = args
    # Every pool takes the model's context (8192 here) instead of the engine default.
    contexts = ([f"serving.{role}.engine.max_model_len=null" for role in ("prefill", "decode")]
                if "serving=disaggregated" in overrides else ["serving.engine.max_model_len=null"])
    cfg = compose_config([*BASE, f"workload={trace}", f"workload.max_requests={max_requests}", *overrides, *contexts])
    spec = next(iter(plan(cfg).values()))
    g = find_goodput(spec, cfg, rel_tol=rel_tol, max_runs=14)
    return {"trace": trace, "cluster": name, "gpus": spec.num_gpus, "cost_per_hour": spec.cost_per_hour,
            "goodput_rps": g.rps, "runs": len(g.bracket.probes), "converged": g.bracket.converged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="conv only, 15%% bisection tolerance")
    args = parser.parse_args()
    ratios = step_time_vs_profile()
    print("1. step-time model vs Splitwise's measured Llama-2-70B TP8 (sim / measured), median over sizes:")
    print(ratios.groupby("hardware")[["prompt_ratio", "token_ratio"]].median().to_string(float_format="{:.2f}".format))
    print(ratios[ratios["batch"].isin([1, 16])].to_string(index=False, float_format="{:.1f}".format))
    traces = ["azure_conv"] if args.quick else ["azure_conv", "azure_code"]
    tol = 0.15 if args.quick else 0.05
    jobs = [(name, trace, o, tol, 1500) for trace in traces for name, o in CLUSTERS.items()]
    with ProcessPoolExecutor(2) as pool:
        table = pd.DataFrame(list(pool.map(cluster_goodput, jobs)))
    for trace, rows in table.groupby("trace", sort=False):
        base = rows.iloc[0]
        rows = rows.assign(throughput_x=rows["goodput_rps"] / base["goodput_rps"],
                           cost_x=rows["cost_per_hour"] / base["cost_per_hour"])
        rows = rows.assign(per_dollar_x=rows["throughput_x"] / rows["cost_x"])
        print(f"\n2. {trace}: goodput (req/s within the SLO for 90%) of iso-cost TP8 clusters, vs Baseline-H100")
        print(rows.drop(columns="trace").to_string(index=False, float_format="{:.2f}".format))
    print("\nSplitwise reports up to 1.4x throughput at 0.8x cost (1.75x per dollar) for its best split cluster.")


if __name__ == "__main__":
    main()
