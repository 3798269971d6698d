"""What one SimPy event costs the simulator, in machine instructions counted by callgrind.

    python -m experiments.benchmark_events            # 10,000 events per pattern

Each pattern runs N events with nothing else to do, once to warm up and once counted (inside
`sys.call_tracing`, as `benchmark_speed --instructions` counts a run), and prints the
instructions per event. The patterns are the ways the engine waits:

* `process`: a process yields a SimPy timeout and is resumed when it fires, as the engine
  waited for its step's end while it was a SimPy process (before 206682e);
* `callbacks`: the same chain of timeouts, each scheduled by the previous one's callback, with
  no process: how the engine has run since;
* `at`: that chain with the simulator's own queue entries (`sim.events.At`, a native class when
  compiled), as the engine and the cluster schedule now;
* `sub-generator`: the process waits through a sub-generator created for each wait (`yield
  from`, as the process engine ran a decode window);
* `delegated`: the same behind one more delegation level (its failure handler);
* `interrupt`: each wait is cut short by an interrupt from another process and followed by a
  short wait, as the process engine cut a decode window. Its figure is per cut, with everything
  the cut brings: the interrupt, the short wait, the long wait's event (which still fires, to
  no one) and the interrupting process's two timeouts.

A simulated request costs what its events cost plus the Python of the engine, scheduler,
router and cluster around them: compare with the instructions per request of
`python -m experiments.benchmark_speed --instructions 60`.
"""

from __future__ import annotations

import argparse
import sys

from experiments.benchmark_speed import counted_run

PATTERNS = ("process", "callbacks", "at", "sub-generator", "delegated", "interrupt")


def run_pattern(pattern: str, events: int) -> float:
    """`events` events of `pattern` in a new environment, to the end; the simulated time then."""
    import simpy

    from sim.engine import STEP_END   # the priority of an engine's step ends
    from sim.events import At

    env = simpy.Environment()

    def waits():
        for _ in range(events):
            yield env.timeout(1e-3)

    def one_wait():
        yield env.timeout(1e-3)

    def through_sub_generators():
        for _ in range(events):
            yield from one_wait()

    def delegated():
        yield from through_sub_generators()

    def fire(_event) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            if queue_entries:   # a branch, not a helper: a call per event would be counted too
                At(env, env.now + 1e-3, fire, STEP_END)
            else:
                env.timeout(1e-3).callbacks.append(fire)

    def cut_short():
        for _ in range(events):
            try:
                yield env.timeout(1.0)
            except simpy.Interrupt:
                yield env.timeout(1e-3)

    def interrupter(target):
        for _ in range(events):
            yield env.timeout(0.5)   # within the target's long wait, which starts 1e-3 after the last cut
            target.interrupt()
            yield env.timeout(1e-2)

    remaining = events
    queue_entries = pattern == "at"
    if pattern == "callbacks":
        env.timeout(1e-3).callbacks.append(fire)
    elif pattern == "at":
        At(env, 1e-3, fire, STEP_END)
    elif pattern == "interrupt":
        env.process(interrupter(env.process(cut_short())))
    else:
        env.process({"process": waits, "sub-generator": through_sub_generators, "delegated": delegated}[pattern]())
    env.run()
    return env.now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--child", choices=PATTERNS, help=argparse.SUPPRESS)   # run one pattern, counted
    args = parser.parse_args()
    if args.child:
        run_pattern(args.child, args.events)   # warm-up: imports, first calls
        sys.call_tracing(run_pattern, (args.child, args.events))
        return
    print(f"instructions per event, {args.events:,} events per pattern, counted by callgrind")
    for pattern in PATTERNS:
        _, instructions = counted_run([sys.executable, "-m", "experiments.benchmark_events", "--child", pattern,
                                       "--events", str(args.events)])
        print(f"{pattern:14} {instructions / args.events:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
