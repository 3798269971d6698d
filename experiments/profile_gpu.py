"""Profile one GPU with torch on real model shapes (random weights) and write a calibration file.

    python -m experiments.profile_gpu --out h100.json                      # CUDA, a few minutes
    python -m experiments.profile_gpu --device cpu --quick --model tiny-llama --hardware h100-sxm --out t.json
    python -m sim.calibrate h100.json --name h100-measured --holdout 0.2

Needs torch (the `real` extra). Shapes come from configs/model/<name>.yaml, sharded as on one
GPU of a TP-`tp` instance (heads and the MLP width divided by tp), so every point is what one
of the instance's GPUs computes; the step-time model predicts the same per-instance time.
What it measures, each a median over `--repeats` runs after warm-up, with the device
synchronised (CUDA events on a GPU, perf_counter on the CPU):

* linear: the GEMMs of one layer (QKV, attention output, gate+up, down) for a range of token
  counts, times num_layers, plus the lm_head for one sampled sequence (the model reads the
  lm_head weights every step);
* attention, prefill: causal scaled_dot_product_attention over a whole prompt, times num_layers;
* attention, decode: one query per sequence over its cached KV, for batch sizes and contexts,
  times num_layers (dense KV, not vLLM's paged kernel: it measures the KV read bandwidth);
* transfer: KV-sized copies device to device ("d2d") and, on CUDA, device to pinned host ("d2h").

All-reduce and host overhead need more than one GPU and an engine: `python -m real profile`
and the public data cover them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Callable

from sim.calibration import Point, write_calibration_file
from sim.catalog import ModelSpec, load_config, model_from_config
from sim.step_time import BatchShape

DEVICE_HARDWARE = {"H100": "h100-sxm", "H200": "h200", "A100": "a100-80gb", "L40S": "l40s", "B200": "b200"}
FULL = {"tokens": [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384],
        "prompts": [512, 1024, 2048, 4096, 8192, 16384],
        "decode": [(b, c) for b in (1, 8, 32, 128, 256) for c in (512, 2048, 8192)],
        "copy_tokens": [256, 1024, 4096, 16384, 65536]}
QUICK = {"tokens": [1, 8, 64], "prompts": [32, 128], "decode": [(1, 64), (8, 256)], "copy_tokens": [64, 1024]}


class Timer:
    """Median seconds of a callable on one device, after warm-up, with the device synchronised.

    On CUDA each timed sample runs the callable `inner` times back to back between two events
    and divides: the host queues the launches ahead of the GPU, so a kernel shorter than its
    launch is timed as the GPU runs it, not as the host issues it (vLLM's CUDA graphs hide the
    launches the same way).
    """

    def __init__(self, torch, device: str, warmup: int, repeats: int, inner: int = 1):
        self.torch, self.cuda = torch, device.startswith("cuda")
        self.warmup, self.repeats, self.inner = warmup, repeats, inner

    def __call__(self, fn: Callable[[], object]) -> float:
        for _ in range(self.warmup):
            fn()
        if not self.cuda:
            times = []
            for _ in range(self.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        events = [(self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True))
                  for _ in range(self.repeats)]
        self.torch.cuda.synchronize()
        for start, end in events:
            start.record()
            for _ in range(self.inner):
                fn()
            end.record()
        self.torch.cuda.synchronize()
        return statistics.median(start.elapsed_time(end) for start, end in events) * 1e-3 / self.inner


def cache_bytes(torch, device: str) -> int:
    """The last-level cache a repeated kernel could keep its inputs in (the GPU's L2; 0 on the CPU)."""
    if not device.startswith("cuda"):
        return 0
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))


def rotating(make: Callable[[], object], nbytes: int, cache: int) -> Callable[[], object]:
    """Copies of an input made by `make`, enough to exceed twice the cache, handed out in turn:
    a weight read from L2 because the previous run left it there would be timed too fast."""
    return partial(next, cycle([make() for _ in range(max(1, -(-2 * cache // max(nbytes, 1))))]))


def linear_points(torch, model: ModelSpec, name: str, tp: int, tokens: list[int], timer: Timer, device, dtype):
    # Beyond num_kv_heads GPUs, each GPU keeps one (replicated) KV head.
    h, q, inter = model.hidden_size, model.q_size // tp, model.intermediate_size // tp
    kv = model.head_dim * max(1, model.num_kv_heads // tp)
    cache = cache_bytes(torch, device)
    weight_bytes = model.weight_bytes_per_param

    def weight(rows: int, columns: int) -> Callable[[], object]:
        return rotating(lambda: torch.randn(rows, columns, device=device, dtype=dtype),
                        rows * columns * weight_bytes, cache)

    shapes = ((h, q + 2 * kv), (q, h), (h, 2 * inter), (inter, h))   # (input width, output width)
    weights = [weight(*shape) for shape in shapes]
    lm_head = weight(h, model.vocab_size)
    sampled = torch.randn(1, h, device=device, dtype=dtype)
    lm_head_s = timer(lambda: sampled @ lm_head())
    points = []
    for n in tokens:
        inputs = [torch.randn(n, rows, device=device, dtype=dtype) for rows, _ in shapes]
        layer_s = sum(timer(lambda x=x, w=w: x @ w()) for x, w in zip(inputs, weights))
        points.append(Point("linear", layer_s * model.num_layers + lm_head_s, name, tp, BatchShape(n, 0, 0, 1),
                            source="profile_gpu linear"))
    return points


def attention_points(torch, model: ModelSpec, name: str, tp: int, prompts: list[int], decode: list[tuple[int, int]],
                     timer: Timer, device, dtype):
    sdpa = torch.nn.functional.scaled_dot_product_attention
    heads, kv_heads, d = model.num_attention_heads // tp, max(1, model.num_kv_heads // tp), model.head_dim

    def attend(batch: int, queries: int, keys: int, causal: bool) -> float:
        q = torch.randn(batch, heads, queries, d, device=device, dtype=dtype)
        # GQA: K and V keep kv_heads heads and the kernel shares each among heads / kv_heads
        # queries, so it reads each KV byte once, as vLLM's kernels do.
        k, v = (torch.randn(batch, kv_heads, keys, d, device=device, dtype=dtype) for _ in "kv")
        return timer(lambda: sdpa(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads))

    points = [Point("attention", attend(1, n, n, True) * model.num_layers, name, tp,
                    BatchShape.of([(n, 0)], 1), source="profile_gpu prefill attention")
              for n in prompts]
    points += [Point("attention", attend(b, 1, c + 1, False) * model.num_layers, name, tp,
                     BatchShape.of([(1, c)] * b, b), source="profile_gpu decode attention")
               for b, c in decode]
    return points


def copy_points(torch, model: ModelSpec, name: str, tp: int, copy_tokens: list[int], timer: Timer, device):
    per_token = int(model.kv_bytes_per_token / model.kv_shards(tp))
    points = []
    for tokens in copy_tokens:
        nbytes = tokens * per_token
        source = torch.empty(nbytes, dtype=torch.uint8, device=device)
        targets = {"d2d": torch.empty_like(source)}
        if device.startswith("cuda"):
            targets["d2h"] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        for link, target in targets.items():
            seconds = timer(lambda t=target: t.copy_(source, non_blocking=True))
            points.append(Point("transfer", seconds, name, tp, bytes=float(nbytes), link=link,
                                source=f"profile_gpu KV copy of {tokens} tokens"))
    return points


def main(argv: list[str] | None = None) -> Path:
    import torch

    parser = argparse.ArgumentParser(prog="python -m experiments.profile_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="configs/model entries (repeatable); "
                        "default llama3.1-8b and llama3.1-70b")
    parser.add_argument("--tp", type=int, default=1, help="shard the shapes as one GPU of a TP instance")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hardware", help="configs/hardware entry; default from the CUDA device name")
    parser.add_argument("--quick", action="store_true", help="small grid (CPU smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per shape (default 20, quick 3)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    device, dtype = args.device, torch.bfloat16
    hardware = args.hardware or next((entry for key, entry in DEVICE_HARDWARE.items()
                                      if device.startswith("cuda") and key in torch.cuda.get_device_name()), None)
    if hardware is None:
        parser.error("--hardware is needed: no configs/hardware entry is known for this device")
    grid = QUICK if args.quick else FULL
    timer = Timer(torch, device, warmup=1 if args.quick else 3, repeats=args.repeats or (3 if args.quick else 20),
                  inner=1 if args.quick else 10)
    names = args.model or ["llama3.1-8b", "llama3.1-70b"]
    points = []
    with torch.inference_mode():
        for name in names:
            model = model_from_config(load_config("model", name))
            started = time.perf_counter()
            points += linear_points(torch, model, name, args.tp, grid["tokens"], timer, device, dtype)
            points += attention_points(torch, model, name, args.tp, grid["prompts"], grid["decode"], timer, device,
                                       dtype)
            points += copy_points(torch, model, name, args.tp, grid["copy_tokens"], timer, device)
            print(f"{name}: {len(points)} points so far, {time.perf_counter() - started:.1f} s")
    metadata = {"hardware": hardware, "model": names[0], "tp": args.tp, "date": dt.date.today().isoformat(),
                "vllm_version": None, "torch_version": torch.__version__,
                "source": f"experiments/profile_gpu.py on {torch.cuda.get_device_name() if device.startswith('cuda') else device}"
                          f"{' (quick)' if args.quick else ''}, random weights, bf16"}
    path = write_calibration_file(args.out, metadata, points)
    print(f"wrote {len(points)} points to {path}")
    return path


if __name__ == "__main__":
    main()
