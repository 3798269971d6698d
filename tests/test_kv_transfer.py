"""The KV network: a lone transfer costs latency + bytes / bandwidth; flows share endpoints."""

import pytest
import simpy

from sim.kv_transfer import Endpoint, KVNetwork

GB = 1e9


def run_transfers(latency, transfers):
    """transfers: (src, dst, bytes, start_s); returns the completion time of each."""
    env = simpy.Environment()
    network = KVNetwork(env, latency)
    done = {}

    def start(i, src, dst, nbytes, at):
        yield env.timeout(at)
        network.transfer(src, dst, nbytes, lambda: done.__setitem__(i, env.now))

    for i, transfer in enumerate(transfers):
        env.process(start(i, *transfer))
    env.run()
    return [done[i] for i in range(len(transfers))], network


def test_lone_transfer_is_latency_plus_bytes_over_bandwidth():
    a, b = Endpoint("p", 40 * GB), Endpoint("d", 50 * GB)
    (end,), _ = run_transfers(20e-6, [(a, b, 2 * GB, 0.0)])
    assert end == pytest.approx(20e-6 + 2 * GB / (40 * GB), rel=1e-12)


def test_two_concurrent_transfers_on_one_link_take_twice_as_long():
    a, b = Endpoint("p", 50 * GB), Endpoint("d", 50 * GB)
    ends, network = run_transfers(1e-5, [(a, b, 1 * GB, 0.0), (a, b, 1 * GB, 0.0)])
    assert ends == pytest.approx([1e-5 + 2 * GB / (50 * GB)] * 2, rel=1e-12)
    assert network.peak_concurrent == 2


def test_transfers_between_disjoint_endpoints_do_not_interfere():
    p1, p2, d1, d2 = (Endpoint(n, 50 * GB) for n in ("p1", "p2", "d1", "d2"))
    ends, _ = run_transfers(0.0, [(p1, d1, 1 * GB, 0.0), (p2, d2, 1 * GB, 0.0)])
    assert ends == pytest.approx([0.02, 0.02], rel=1e-12)


def test_a_late_flow_slows_the_first_only_while_both_are_active():
    a, b = Endpoint("p", 10 * GB), Endpoint("d", 10 * GB)
    # first: 1 GB alone for 0.05 s (0.5 GB done), then 0.5 GB at 5 GB/s = 0.1 s -> ends at 0.15
    # second: 0.5 GB at 5 GB/s until 0.15, then 0.5 GB alone at 10 GB/s -> ends at 0.2
    ends, _ = run_transfers(0.0, [(a, b, 1 * GB, 0.0), (a, b, 1 * GB, 0.05)])
    assert ends == pytest.approx([0.15, 0.2], rel=1e-12)


def test_a_slow_receiver_caps_the_flow():
    fast, slow = Endpoint("p", 100 * GB), Endpoint("d", 10 * GB)
    (end,), _ = run_transfers(0.0, [(fast, slow, 1 * GB, 0.0)])
    assert end == pytest.approx(0.1, rel=1e-12)
