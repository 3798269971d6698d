"""Calibrations for H100 and A100 from public measurements ("GPUs without a GPU").

    python -m experiments.calibrate_public [--shared ../shared/data/profiles]

For each GPU, converts the measurements in /work/shared/data/profiles (SOURCES.md there) into
calibration points (`sim.calibration`), writes them to sim/data/calibration/<gpu>-public.json,
fits the step-time model (`sim.fit`) to the per-kernel points and writes
configs/calibration/<gpu>-public.yaml with its error on the whole-step points held out of the fit.

Points, and why each is shaped so (all times are medians over the source's repeats):
* linear (Vidur mlp.csv): the four GEMMs of one layer (QKV, attention output, gate+up, down) summed
  and times num_layers = the step's linear layers for `num_tokens` tokens at TP t, for the models
  in configs/model (Llama-2-7B/70B; on A100 also Llama-3-8B/70B = llama3.1-8b/70b shapes).
  Vidur has no lm_head in that profile while the model reads lm_head weights every step: on
  memory-bound points the model counts 0.4 % (70B) to 6.5 % (Llama-3-8B) more bytes than measured.
* allreduce (Vidur network/<gpu>_dgx/all_reduce.csv, one node: devices_per_node = num_workers):
  one NCCL all-reduce of `size` bytes over TP 2/4/8. These are eager-mode NCCL calls (20-40 us
  when small), not vLLM's CUDA-graph custom all-reduce (about 5 us), so the fitted latency
  describes eager serving, which is also how the held-out Splitwise runs were served.
* attention (A100 only: Vidur legacy_a100/attention.csv, d=8192, 64 q / 8 kv heads, TP2 = Llama-2-70B):
  per-layer prefill (chunk after cached tokens) and decode (batch of sequences at one context)
  attention times 80 layers. There is no public H100 attention profile here: the H100
  attention efficiency keeps the hardware entry's value.
* overhead (Vidur legacy_a100/cpu_overheads.csv, vLLM v0 on A100, CodeLlama-34B TP2): schedule +
  sampler + prepare inputs + process outputs per step; host-side, so used for both GPUs.
* prefill / decode, HELD OUT (Splitwise perf_model.csv, llama2-70b on a100-80gb and h100-80gb
  without power cap, TP 2/4/8): `prompt_time` is one prefill step of `batch_size` prompts of
  `prompt_size` tokens; `token_time` is one decode step of `batch_size` sequences at the mean
  context prompt_size + token_size / 2. A prefill slower than the same one with half the batch
  cannot be (twice the work in less time) and is dropped (A100/H100 TP2 at batch 64).

Launch-bound kernels are left out: a per-layer class time under LAUNCH_FLOOR_S per kernel is
dominated by launch latency, which the roofline does not model (CUDA graphs hide it in serving).

Why the Splitwise steps are held out whole rather than a random fraction: their step time
barely falls from TP4 to TP8 (about 30 ms per decode step on H100 at both), a per-step cost of
their 2023 serving stack that does not shrink with TP and that no per-kernel profile contains.
Fitted together with the kernels, the fit bends physical parameters to absorb it (on H100 the
attention efficiency drops to 0.03); held out, it shows as the model's error instead.

The hardware entries name these calibrations only when the held-out error is not worse than
that of their inline values on the same points; the script prints both.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from sim.calibrate import calibration_record, inline_gpu, models_of, summary_lines, write_named_calibration
from sim.calibration import Point, read_calibration_file, write_calibration_file
from sim.catalog import load_config
from sim.fit import fit
from sim.step_time import BatchShape

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "profiles"
POINTS_DIR = REPO / "sim" / "data" / "calibration"
LAUNCH_FLOOR_S = 30e-6            # per kernel: a few launch latencies
GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
HELD_OUT_SOURCE = "splitwise"     # points whose source starts with it are held out of the fit
TOKEN_GRID = {2 ** k for k in range(13)} | {3 * 2 ** k for k in range(11)}   # 1 .. 4096, thinned
ALLREDUCE_GRID = {2 ** k for k in range(11, 27)}                            # 2 KiB .. 64 MiB


GPUS = {
    "h100": {"hardware": "h100-sxm", "vidur": "h100", "network": "h100_dgx", "splitwise": "h100-80gb",
             "models": {"meta-llama/Llama-2-7b-hf": "llama2-7b", "meta-llama/Llama-2-70b-hf": "llama2-70b"},
             "attention": False},
    "a100": {"hardware": "a100-80gb", "vidur": "a100", "network": "a100_dgx", "splitwise": "a100-80gb",
             "models": {"meta-llama/Llama-2-7b-hf": "llama2-7b", "meta-llama/Llama-2-70b-hf": "llama2-70b",
                        "meta-llama/Meta-Llama-3-8B": "llama3.1-8b", "meta-llama/Meta-Llama-3-70B": "llama3.1-70b"},
             "attention": True},
}
MS = 1e-3                         # Vidur and Splitwise times are in ms


def linear_points(shared: Path, gpu: str, vidur_model: str, model: str) -> list[Point]:
    spec = load_config("model", model)
    frame = pd.read_csv(shared / "vidur" / "compute" / gpu / vidur_model / "mlp.csv")
    shape = frame.iloc[0]
    # The profile must be of the shape the catalogue entry describes.
    assert (shape.n_embd, shape.n_head, shape.n_kv_head, shape.n_expanded_embd) == (
        spec["hidden_size"], spec["num_attention_heads"], spec["num_kv_heads"], spec["intermediate_size"]), model
    columns = [f"time_stats.{op}.median" for op in GEMMS]
    layer = frame.groupby(["num_tokens", "num_tensor_parallel_workers"])[columns].median().sum(axis=1)
    return [Point("linear", float(ms * MS * spec["num_layers"]), model, int(tp), BatchShape(int(tokens)),
                  source=f"vidur {gpu} mlp.csv {vidur_model}")
            for (tokens, tp), ms in layer.items()
            if tokens in TOKEN_GRID and ms * MS >= len(GEMMS) * LAUNCH_FLOOR_S]


def allreduce_points(shared: Path, network: str, model: str) -> list[Point]:
    frame = pd.read_csv(shared / "vidur" / "network" / network / "all_reduce.csv")
    frame = frame[frame.devices_per_node == frame.num_workers]     # one node: NVLink/NVSwitch only
    medians = frame.groupby(["num_workers", "size"])["time_stats.all_reduce.median"].median()
    return [Point("allreduce", float(ms * MS), model, int(tp), bytes=float(size),
                  source=f"vidur {network} all_reduce.csv")
            for (tp, size), ms in medians.items() if size in ALLREDUCE_GRID]


def attention_points(shared: Path) -> list[Point]:
    """Llama-2-70B TP2 attention on A100: per-layer times x 80 layers."""
    frame = pd.read_csv(shared / "vidur" / "legacy_a100" / "attention.csv")
    layers, model, source = 80, "llama2-70b", "vidur legacy_a100 attention.csv"
    points = []
    prefill = frame[frame.is_prefill].groupby(["prefill_chunk_size", "kv_cache_size"])[
        "time_stats.attn_prefill.median"].median()
    for (chunk, cached), ms in prefill.items():
        if chunk in TOKEN_GRID and cached in {0} | TOKEN_GRID and ms * MS >= LAUNCH_FLOOR_S:
            points.append(Point("attention", float(ms * MS * layers), model, 2,
                                BatchShape.of([(int(chunk), int(cached))], 1), source=source + " prefill"))
    decode = frame[~frame.is_prefill].groupby(["batch_size", "kv_cache_size"])["time_stats.attn_decode.median"].median()
    for (batch, context), ms in decode.items():
        if batch in TOKEN_GRID and context in TOKEN_GRID | {4032} and ms * MS >= LAUNCH_FLOOR_S:
            points.append(Point("attention", float(ms * MS * layers), model, 2,
                                BatchShape.of([(1, int(context))] * int(batch), int(batch)), source=source + " decode"))
    return points


def overhead_points(shared: Path, model: str) -> list[Point]:
    frame = pd.read_csv(shared / "vidur" / "legacy_a100" / "cpu_overheads.csv")
    parts = ["schedule_median", "sampler_e2e_median", "prepare_inputs_e2e_median", "process_model_outputs_median"]
    return [Point("overhead", float(row[parts].sum() * MS), model, 2, BatchShape(sampled_seqs=int(row.batch_size)),
                  source="vidur legacy_a100 cpu_overheads.csv (CodeLlama-34B TP2, host side)")
            for _, row in frame.iterrows()]


def splitwise_points(shared: Path, hardware: str) -> list[Point]:
    frame = pd.read_csv(shared / "splitwise" / "perf_model.csv")
    frame = frame[(frame.model == "llama2-70b") & (frame.hardware == hardware)]
    source = f"{HELD_OUT_SOURCE} perf_model.csv {hardware}"
    points = []
    prompt = frame.groupby(["tensor_parallel", "prompt_size", "batch_size"])["prompt_time"].median()
    for (tp, size, batch), ms in prompt.items():
        half = prompt.get((tp, size, batch // 2))
        if half is not None and batch > 1 and ms < half:
            continue    # twice the work in less time: not a measurement of this shape
        points.append(Point("prefill", float(ms * MS), "llama2-70b", int(tp),
                            BatchShape.of([(int(size), 0)] * int(batch), int(batch)), source=source + " prompt_time"))
    token = frame.groupby(["tensor_parallel", "prompt_size", "batch_size", "token_size"])["token_time"].median()
    for (tp, size, batch, generated), ms in token.items():
        context = int(size + generated // 2)
        points.append(Point("decode", float(ms * MS), "llama2-70b", int(tp),
                            BatchShape.of([(1, context)] * int(batch), int(batch)), source=source + " token_time"))
    return points


def public_points(shared: Path, gpu: str) -> list[Point]:
    spec = GPUS[gpu]
    points = [p for vidur_model, model in spec["models"].items()
              for p in linear_points(shared, spec["vidur"], vidur_model, model)]
    points += allreduce_points(shared, spec["network"], "llama2-70b")
    if spec["attention"]:
        points += attention_points(shared)
    points += overhead_points(shared, "llama2-70b")
    return points + splitwise_points(shared, spec["splitwise"])


def held_out(points: list[Point]) -> np.ndarray:
    return np.array([(p.source or "").startswith(HELD_OUT_SOURCE) for p in points])


def calibrate(points_file: Path, name: str) -> dict:
    """Fit to the file's per-kernel points, hold out its Splitwise whole steps; the named calibration."""
    calibration = read_calibration_file(points_file)
    points = calibration.points
    prior, models = inline_gpu(calibration.hardware), models_of(points)
    result = fit(points, prior, models, held_out(points))
    source = {"file": str(points_file.relative_to(REPO)), "metadata": calibration.metadata,
              "holdout": f"points whose source starts with {HELD_OUT_SOURCE!r} (whole prefill/decode steps)"}
    return calibration_record(name, calibration.hardware, source, points, result, prior, models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared profiles directory")
    args = parser.parse_args()
    for gpu, spec in GPUS.items():
        name = f"{gpu}-public"
        metadata = {"hardware": spec["hardware"], "model": "llama2-70b", "tp": 2, "date": dt.date.today().isoformat(),
                    "vllm_version": None, "torch_version": None,
                    "source": "experiments/calibrate_public.py from /work/shared/data/profiles: Vidur (MIT) "
                              "microsoft/vidur @ 7d47513 and e2d00e9, Splitwise (MIT) Mutinifni/splitwise-sim "
                              "@ 8f99e7d; see sim/data/calibration/ATTRIBUTION.md"}
        points_file = write_calibration_file(POINTS_DIR / f"{name}.json", metadata, public_points(args.shared, gpu))
        record = calibrate(points_file, name)
        print(f"== {name} ({len(read_calibration_file(points_file).points)} points in {points_file.relative_to(REPO)})")
        print(summary_lines(record))
        print(f"wrote {write_named_calibration(record)}")


if __name__ == "__main__":
    main()
