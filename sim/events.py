"""SimPy events at an absolute time, with a chosen priority among the events of that instant.

`simpy.Timeout` takes a delay, and `now + delay` does not always reach, in floating point, a
time computed apart (a decode window's end as a sum of step times, a lease's end as its start
plus its length); its priority is always NORMAL.
"""

from __future__ import annotations

from heapq import heappush
from typing import Callable

import simpy
from simpy.events import NORMAL


class At(simpy.events.Event):
    """A successful event (no value) at absolute time `at`, with `callback` (if given) as its
    first callback. Events of one instant run by `priority` (SimPy's URGENT 0, NORMAL 1, or
    larger: later), then in creation order. `At(env, env.now + delay)` is `env.timeout(delay)`,
    queued alike."""

    def __init__(self, env: simpy.Environment, at: float, priority: int = NORMAL,
                 callback: Callable[[simpy.events.Event], None] | None = None):
        # Event.__init__ inlined, as SimPy does in its own frequent events: the simulator
        # creates about ten of these per request.
        self.env = env
        self.callbacks = [] if callback is None else [callback]
        self._ok = True       # a successful event with no value, as simpy.Timeout sets up
        self._value = None
        # Environment.schedule only takes a delay; its queue entry is (time, priority, id, event).
        heappush(env._queue, (at, priority, next(env._eid), self))
