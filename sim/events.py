"""Callbacks at an absolute time, with a chosen priority among the events of that instant.

`simpy.Timeout` takes a delay, and `now + delay` does not always reach, in floating point, a
time computed apart (a decode window's end as a sum of step times, a lease's end as its start
plus its length); its priority is always NORMAL.
"""

from __future__ import annotations

from heapq import heappush
from typing import Callable

import simpy
from simpy.events import NORMAL


class At:
    """An entry of SimPy's event queue at absolute time `at` that calls `callback(event)` when
    processed. Entries of one instant run by `priority` (SimPy's URGENT 0, NORMAL 1, or larger:
    later), then in creation order; `At(env, env.now + delay, callback)` is queued exactly as
    `env.timeout(delay)` with `callback` added.

    It holds only what `simpy.Environment.step` reads of an event: `callbacks` (set to None once
    processed) and `_ok` (a success). It drives a callback and nothing else: no process waits for
    it and no condition holds it. Not being a `simpy.Event` makes it a native class when
    compiled (sim/compiled.py): no instance dictionary, and the simulator creates about ten per
    request.
    """

    def __init__(self, env: simpy.Environment, at: float, callback: Callable[[At], None], priority: int = NORMAL):
        self.callbacks: list[Callable[[At], None]] | None = [callback]
        self._ok = True
        queue: list = env._queue   # entries (time, priority, id, event), as Environment.schedule makes them
        heappush(queue, (at, priority, next(env._eid), self))
