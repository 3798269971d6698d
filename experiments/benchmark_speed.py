"""Simulator speed and memory: wall time, CPU time, simulated requests per second and peak memory
on representative runs, each in a fresh process.

    python -m experiments.benchmark_speed             # default run and the 77k-request case
    python -m experiments.benchmark_speed --quick     # the default run only
    python -m experiments.benchmark_speed --wide      # also the 77k requests on 256 GPUs (pool-size costs)
    python -m experiments.benchmark_speed --million   # also ~1M requests on 256 GPUs (minutes)
    python -m experiments.benchmark_speed --at 1fbc7d2    # the simulator of an earlier commit, same measurement
    python -m experiments.benchmark_speed --against 1fbc7d2 --repeat 3   # before/after, interleaved
    python -m experiments.benchmark_speed --quick --reference   # the step-by-step reference path
    python -m experiments.benchmark_speed --against HEAD        # compiled against the same code from source
    python -m experiments.benchmark_speed --instructions 60 --against 1fbc7d2   # exact work, under valgrind

Each case composes the same config as `python -m sim <overrides>`; `wall s` and `cpu s` time
`sim.run.simulate` alone (workload building and output writing excluded), after a warm-up run
of the case's first 10 simulated seconds in the same process: a sweep's runs share one
process, and only its first loads the compiled loops (numba, about 0.5 s; `cold start` counts
it). `x real` is simulated span over wall time, `peak MB` the process's peak resident memory,
`RSS MB` its resident memory after the workload was built (before the warm-up) and after the
run, and `KB/req` that growth per request: what the per-request records cost (constant across
sizes when nothing grows with tokens or steps). `cold start` times a whole fresh process
(interpreter, imports, config, a model/hardware pair no other case uses, a 1-minute workload,
the run) to its first result. `--at REV` measures the simulator (and configs) of commit REV,
checked out in a temporary git worktree, with this file's measurement; `--reference` runs
`simulate(..., fast_forward=False)`.

This checkout's simulator runs its per-event modules compiled by mypyc, as `pip install -e .`
built them (sim/compiled.py); `--source` runs them from their `.py` files instead. The tree of
`--at` or `--against` has no build, so it runs from source: `--against HEAD` measures what
compiling buys. The title line says how each side ran.

Compare ratios measured in one run: on a shared machine absolute times move with the load (by
15-20 % between runs minutes apart on this project's machine). `--repeat N` runs each cell N
times and reports the run with the least CPU time; `--against REV` prints, for each cell, that
of commit REV and that of this tree, the two taking turns in each of the N rounds, so that a
change in the machine's load touches both alike. Even so, the same code against itself
(`--quick --against HEAD --repeat 3`) gave ratios of 0.91-0.93 here: a change below 10 % is
shown by counting the work it removes, not by timing it.

`--instructions S` does that count: it runs each case's first S simulated seconds under
valgrind's callgrind, which counts the machine instructions executed in the timed `simulate`
call alone (the interpreter, numpy and the compiled loops alike; the warm-up and the imports
are left out). The count is the same from run to run to within a few instructions (edits to
the code around the call move it by up to 0.05 %: heap addresses change the order of sets), so
`--instructions 60 --against REV`, which runs both sides under this file, shows a change of a fraction of a percent in the work a run
does. Instructions are not time (cache misses and branch mispredictions are not in them), but
for an interpreted program the two move together. It needs `valgrind` on the PATH and an
interpreter whose `_PyEval_CallTracing` callgrind can see (pyenv's build; not Debian's, which
is stripped); a run is about 100 times slower than natively.

The interpreter's build matters as much as a change to the simulator: on this project's
machine Debian's python3.11 (/usr, built with profile-guided optimisation) took 4-34 % less
time than the pyenv build that is the default `python3` (built without it) on paired
disaggregated runs, and up to 26 % less on monolithic ones, with the same packages (README,
performance). The title line names the installation (`sys.base_prefix`) and the processor;
run the benchmark with the interpreter of the virtual environment you plan with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Callable

from sim.compiled import PURE_PYTHON_VARIABLE


def _pools(gpus: int, prefill: int) -> list[str]:
    return [f"serving.monolithic.instances={gpus}", f"serving.disaggregated.prefill.instances={prefill}",
            f"serving.disaggregated.decode.instances={gpus - prefill}"]


CASES: dict[str, list[str]] = {
    "default (conv 1h, 2 GPUs)": [],
    # four shifted copies of the hour superposed: 77k requests, burstiness kept (issue 5's target case)
    "conv 1h x4 copies, 32 GPUs": ["workload.copies=4", *_pools(32, 8)],
}
# the same load on the million case's pools: what grows with the number of instances per request (routing)
WIDE = {"conv 1h x4 copies, 256 GPUs": ["workload.copies=4", *_pools(256, 64)]}
MILLION = {"conv 1h x52 copies, 256 GPUs": ["workload.copies=52", *_pools(256, 64)]}
COLD_START = ["model=qwen2.5-7b", "hardware=a100-80gb", "workload.window.duration_s=60"]
WARM_UP = ["workload.window.duration_s=10"]
# callgrind counts only inside this C function, which nothing but `sys.call_tracing` reaches:
# `measure` runs the timed `simulate` through it when counted
COUNTED_FUNCTION = "_PyEval_CallTracing"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(overrides: list[str], architecture: str, reference: bool = False, warm_up: bool = True,
            counted: bool = False) -> dict:
    """One architecture of one case, in this process (after a warm-up run, unless `warm_up` is
    False); `counted` runs it through `COUNTED_FUNCTION`, for callgrind."""
    from experiments.configs import compose_config
    from sim.experiment import plan
    from sim.run import simulate
    from sim.workload import build_workload

    def case(case_overrides: list[str]) -> tuple:
        """`simulate`'s cluster spec, workload and utilisation bin width for these overrides."""
        cfg = compose_config(case_overrides)
        return plan(cfg)[architecture], build_workload(cfg["workload"], cfg["seed"]), cfg["metrics"]["util_bin_s"]

    spec, workload, util_bin_s = case(overrides)
    rss_before = _rss_mb()
    if warm_up:   # loads the compiled loops (module docstring)
        simulate(*case([*overrides, *WARM_UP]), fast_forward=not reference)
    run = (spec, workload, util_bin_s, not reference)
    cpu = time.process_time()
    result = sys.call_tracing(simulate, run) if counted else simulate(*run)
    cpu = time.process_time() - cpu
    steps = int(result.instances["steps"].sum())
    return {"gpus": spec.num_gpus, "requests": len(workload), "steps": steps, "wall_s": result.wall_s,
            "cpu_s": cpu, "req_per_s": len(workload) / result.wall_s, "x_real_time": result.end_s / result.wall_s,
            "rss_before_mb": rss_before, "rss_after_mb": _rss_mb(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _fastest(overrides: list[str], architecture: str, trees: list[Path | None], reference: bool,
             rounds: int) -> list[dict]:
    """Per tree, the run with the least CPU time of `rounds` runs, the trees taking turns in each round."""
    runs: list[list[dict]] = [[] for _ in trees]
    for _ in range(rounds):
        for tree, runs_of_tree in zip(trees, runs):
            runs_of_tree.append(_in_fresh_process(overrides, architecture, tree, reference))
    return [min(runs_of_tree, key=itemgetter("cpu_s")) for runs_of_tree in runs]


def _in_fresh_process(overrides: list[str], architecture: str, tree: Path | None = None,
                      reference: bool = False, warm_up: bool = True) -> dict:
    """`measure` in a new interpreter; with `tree`, on the `sim` and `configs` of that checkout."""
    command = _child_command(overrides, architecture, reference, *([] if warm_up else ["--no-warm-up"]))
    return _measured(_run_child(command, tree).stdout)


def _instructions(overrides: list[str], architecture: str, tree: Path | None = None,
                  reference: bool = False) -> dict:
    """`measure` under callgrind in a new interpreter, with `instructions`: those executed in
    the measured `simulate` call."""
    stdout, instructions = counted_run(_child_command(overrides, architecture, reference, "--counted"), tree)
    return {**_measured(stdout), "instructions": instructions}


def _child_command(overrides: list[str], architecture: str, reference: bool, *flags: str) -> list[str]:
    """This file run as a child that prints `measure`'s row (`_measured` reads it back)."""
    return [sys.executable, __file__, "--child", architecture, *(["--reference"] if reference else []), *flags,
            "--", *overrides]


def _measured(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def counted_run(command: list[str], tree: Path | None = None) -> tuple[str, int]:
    """Run `command` (a Python program) under callgrind: its output, and the instructions it
    executed inside `sys.call_tracing` calls (`COUNTED_FUNCTION`)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on the PATH (apt install valgrind)")
    with tempfile.TemporaryDirectory() as scratch:
        child = _run_child(["valgrind", "--tool=callgrind", "--collect-atstart=no",
                            f"--toggle-collect={COUNTED_FUNCTION}", f"--callgrind-out-file={scratch}/callgrind.out",
                            *command], tree)
    collected = re.search(r"Collected : (\d+)", child.stderr)
    if collected is None:
        raise RuntimeError(f"callgrind reported no count:\n{child.stderr[-2000:]}")
    if int(collected.group(1)) == 0:   # e.g. Debian's python3.11: static, stripped of that symbol
        raise SystemExit(f"callgrind found no {COUNTED_FUNCTION} in {sys.executable}: count under an "
                         "interpreter whose libpython keeps its symbols (pyenv's or python.org's build)")
    return child.stdout, int(collected.group(1))


def _run_child(command: list[str], tree: Path | None) -> subprocess.CompletedProcess:
    # a fixed hash seed: set iteration order, and so the count of instructions, is the same in every run
    env = {**os.environ, "PYTHONHASHSEED": "0", **({"PYTHONPATH": str(tree)} if tree else {})}
    return subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=tree)


@contextmanager
def _checkout(revision: str | None):
    """A temporary git worktree of `revision` (None: this checkout, as it is)."""
    if revision is None:
        yield None
        return
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), revision],
                       check=True, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=True)


def cold_start_s(tree: Path | None = None) -> float:
    """Seconds from starting a fresh interpreter to the first result of a small run."""
    started = time.perf_counter()
    _in_fresh_process(COLD_START, "monolithic", tree, warm_up=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default run")
    parser.add_argument("--wide", action="store_true", help="add the 77k-request case on 256 GPUs")
    parser.add_argument("--million", action="store_true", help="add the ~1M-request case on 256 GPUs")
    parser.add_argument("--at", metavar="REV", help="measure the simulator of this git commit")
    parser.add_argument("--reference", action="store_true", help="the step-by-step path (fast_forward=False)")
    parser.add_argument("--source", action="store_true",
                        help=f"run the simulator from its sources, not its compiled modules ({PURE_PYTHON_VARIABLE}=1)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="N runs per cell; the fastest is shown")
    parser.add_argument("--against", metavar="REV", help="each cell for commit REV and for this tree, interleaved")
    parser.add_argument("--instructions", type=float, metavar="S",
                        help="count the instructions of each case's first S simulated seconds (valgrind)")
    parser.add_argument("--child", help=argparse.SUPPRESS)   # measure one architecture, print JSON
    parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)   # the child under callgrind
    parser.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)   # the cold start's child
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.overrides, args.child, args.reference, warm_up=not args.no_warm_up,
                                 counted=args.counted)))
        return
    if args.repeat < 1:
        parser.error("--repeat takes a positive number of runs")
    if args.source:
        os.environ[PURE_PYTHON_VARIABLE] = "1"   # every child's environment
    with _checkout(args.at) as tree, _checkout(args.against) as baseline:
        if args.instructions:
            count(args, baseline, tree)
        elif baseline is None:
            report(args, tree)
        else:
            compare(args, baseline, tree)


def _cases(args: argparse.Namespace) -> dict[str, list[str]]:
    cases = dict(list(CASES.items())[:1]) if args.quick else CASES
    if args.wide:
        cases = {**cases, **WIDE}
    if args.million:
        cases = {**cases, **MILLION}
    return cases


def _title(args: argparse.Namespace, tree: Path | None) -> str:
    # the interpreter's installation: builds of one version differ in speed (see the module docstring)
    return (f"python {platform.python_version()} ({sys.base_prefix}) on {_cpu()}, one process per run"
            + (f", the fastest of {args.repeat}" if args.repeat > 1 else "")
            + (f", simulator at {args.at}" if args.at else "") + f", {_build(tree)}"
            + (", step-by-step reference" if args.reference else ""))


def _cpu() -> str:
    """The processor's model and architecture: this project's sessions have run on different
    machines, and their times compare only within one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor() or 'an unknown processor'} ({platform.machine()})"


def _build(tree: Path | None) -> str:
    """How the simulator of `tree` (None: this checkout) runs here: its hot modules compiled, or
    all from source (no build in that tree, a build older than its sources, or `--source`)."""
    child = _run_child([sys.executable, "-c", "import sim; print(getattr(sim, 'COMPILED', False))"], tree)
    return "compiled (mypyc)" if child.stdout.strip() == "True" else "from source"


def _table(args: argparse.Namespace, title: str, columns: str, row: Callable[[list[str], str], str]) -> None:
    """Print `title`, then a line per case and architecture: its names and `row(overrides, architecture)`,
    under `columns`."""
    header = f"{'case':30} {'architecture':14} {columns}"
    print(title)
    print(header)
    print("-" * len(header))
    for case, overrides in _cases(args).items():
        for architecture in ("monolithic", "disaggregated"):
            print(f"{case:30} {architecture:14} {row(overrides, architecture)}", flush=True)


def compare(args: argparse.Namespace, baseline: Path, tree: Path | None) -> None:
    """CPU seconds of each cell for commit `args.against` and for `tree`, and their ratio;
    `same steps` says whether both ran the same number of engine steps (a change that keeps
    results bit for bit keeps it)."""
    def row(overrides: list[str], architecture: str) -> str:
        old, new = _fastest(overrides, architecture, [baseline, tree], args.reference, args.repeat)
        return (f"{new['requests']:>9} {old['cpu_s']:>18.1f} {new['cpu_s']:>7.1f} {new['cpu_s'] / old['cpu_s']:>6.2f} "
                f"{'yes' if old['steps'] == new['steps'] else 'NO':>10}")

    before = f"{args.against} cpu s"
    _table(args, _title(args, tree) + f", against {args.against} {_build(baseline)}",
           f"{'requests':>9} {before:>18} {'cpu s':>7} {'ratio':>6} {'same steps':>10}", row)


def count(args: argparse.Namespace, baseline: Path | None, tree: Path | None) -> None:
    """Instructions of each cell's first `args.instructions` simulated seconds, per request, and
    with `args.against` those of that commit and their ratio."""
    window = f"workload.window.duration_s={args.instructions:g}"

    def row(overrides: list[str], architecture: str) -> str:
        new = _instructions([*overrides, window], architecture, tree, args.reference)
        old = _instructions([*overrides, window], architecture, baseline, args.reference) if baseline else None
        return (f"{new['requests']:>9} {new['steps']:>9} {format(old['instructions'], ',') if old else '':>18} "
                f"{new['instructions']:>14,} {new['instructions'] / new['requests']:>12,.0f} "
                f"{format(new['instructions'] / old['instructions'], '.4f') if old else '':>6}")

    before = f"{args.against} instr" if baseline else ""
    _table(args, _title(args, tree) + f", first {args.instructions:g} simulated s, instructions counted by callgrind"
           + (f", against {args.against} {_build(baseline)}" if baseline else ""),
           f"{'requests':>9} {'steps':>9} {before:>18} {'instructions':>14} {'per request':>12} "
           f"{'ratio' if baseline else '':>6}", row)


def report(args: argparse.Namespace, tree: Path | None) -> None:
    def row(overrides: list[str], architecture: str) -> str:
        run = _fastest(overrides, architecture, [tree], args.reference, args.repeat)[0]
        rss = f"{run['rss_before_mb']:.0f} -> {run['rss_after_mb']:.0f}"
        per_request_kb = (run["rss_after_mb"] - run["rss_before_mb"]) * 1024 / run["requests"]
        return (f"{run['gpus']:>5} {run['requests']:>9} {run['steps']:>10} {run['wall_s']:>7.1f} {run['cpu_s']:>7.1f} "
                f"{run['req_per_s']:>7.0f} {run['x_real_time']:>7.0f} {rss:>13} {per_request_kb:>7.2f} "
                f"{run['peak_mb']:>8.0f}")

    _table(args, _title(args, tree), f"{'GPUs':>5} {'requests':>9} {'steps':>10} {'wall s':>7} {'cpu s':>7} {'req/s':>7} "
                               f"{'x real':>7} {'RSS MB':>13} {'KB/req':>7} {'peak MB':>8}", row)
    print(f"cold start ({' '.join(COLD_START)}, fresh process to first result): {cold_start_s(tree):.1f} s")


if __name__ == "__main__":
    main()
