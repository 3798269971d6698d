"""The router, the proxy and the replayer against real HTTP servers that stand in for vLLM
(tests/real_stub.py): routing, the two-hop protocol, streaming, per-request failures, timeouts
and the replayer's own scheduling delay. Fast; needs aiohttp (the `real` extra), not vLLM."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")

from real.gateway import GatewaySpec, make_app  # noqa: E402
from real.backends import metric_value  # noqa: E402
from real.replay import ReplayLimits, replay  # noqa: E402
from real.results import requests_frame, scheduling_delays, tokens_frame  # noqa: E402
from sim.table import REQUEST_COLUMNS  # noqa: E402
from sim.workload import Workload  # noqa: E402
from tests.real_stub import StubServer, serve  # noqa: E402

LIMITS = ReplayLimits(request_s=10.0, idle_s=2.0)
KV_BYTES_PER_TOKEN = 4096.0


def workload(n: int, gap_s: float = 0.01, output: int = 5) -> Workload:
    return Workload("test", np.arange(n) * gap_s, np.full(n, 12), np.full(n, output), "test")


async def _replay_through(architecture: str, stubs: dict[str, list[StubServer | str]], load: Workload,
                          routers: dict[str, str] | None = None, limits: ReplayLimits = LIMITS, **spec_fields):
    """Replay `load` through a gateway in front of `stubs` (a StubServer, or the URL of something
    else that listens, or nothing); `spec_fields` set the gateway's timeouts."""
    runners = []
    try:
        urls: dict[str, list[str]] = {}
        for role, servers in stubs.items():
            urls[role] = []
            for stub in servers:
                if isinstance(stub, str):
                    urls[role].append(stub)
                    continue
                runner, url = await serve(stub.app)
                runners.append(runner)
                urls[role].append(url)
        spec = GatewaySpec(architecture, "127.0.0.1", 0, urls, routers or {role: "round_robin" for role in urls},
                           model="stub", metrics_poll_s=0.05, **spec_fields)
        runner, gateway_url = await serve(make_app(spec))
        runners.append(runner)
        return await replay(gateway_url, "stub", load, 4096, limits)
    finally:
        for runner in runners:
            await runner.cleanup()


def run(architecture: str, stubs: dict[str, list[StubServer | str]], load: Workload, **kwargs):
    outcomes = asyncio.run(_replay_through(architecture, stubs, load, **kwargs))
    table = requests_frame(outcomes, load.prompt_tokens, load.output_tokens, architecture, KV_BYTES_PER_TOKEN)
    return outcomes, table


def test_router_streams_every_token_and_round_robins():
    stubs = [StubServer("a"), StubServer("b")]
    load = workload(4)
    outcomes, table = run("monolithic", {"mixed": stubs}, load)
    assert list(table.columns) == list(REQUEST_COLUMNS)
    assert (table["status"] == "completed").all()
    assert table["prefill_instance"].tolist() == [0, 1, 0, 1] == table["decode_instance"].tolist()
    assert len(stubs[0].received) == len(stubs[1].received) == 2
    tokens = tokens_frame(outcomes)
    assert tokens.groupby("request_id").size().tolist() == [5] * 4
    assert (table["ttft_s"] > 0).all() and (table["tpot_s"] > 0).all()
    # the stub says TTFT 10 ms of which 2 ms queued: the prompt started 8 ms before its first token
    assert np.allclose(table["first_token_s"] - table["prefill_start_s"], 0.008)
    sent = stubs[0].received[0]
    assert sent["max_tokens"] == sent["min_tokens"] == 5 and sent["ignore_eos"] and len(sent["prompt"].split()) == 12


def test_proxy_does_the_two_hop_protocol():
    prefill, decode = StubServer("p"), StubServer("d")
    outcomes, table = run("disaggregated", {"prefill": [prefill], "decode": [decode]}, workload(3))
    assert (table["status"] == "completed").all()
    first = prefill.received[0]
    assert first["max_tokens"] == 1 and first["stream"] is False and first["kv_transfer_params"]["do_remote_decode"]
    second = decode.received[0]
    assert second["kv_transfer_params"] == {"remote_engine_id": "p", "remote_block_ids": [[1]]}
    assert second["stream"] is True and second["max_tokens"] == 5
    assert (table["prefill_start_s"] <= table["prefill_end_s"]).all()
    assert (table["prefill_end_s"] <= table["transfer_start_s"]).all()
    assert (table["transfer_start_s"] < table["transfer_end_s"]).all()
    assert (table["transfer_end_s"] < table["first_token_s"] + 0.01).all()
    assert (table["cached_prompt_tokens"] == 3).all()
    assert (table["kv_bytes_transferred"] == 12 * KV_BYTES_PER_TOKEN).all()


def test_a_decode_server_dying_mid_stream_fails_each_request_with_a_reason():
    stubs = {"prefill": [StubServer("p")], "decode": [StubServer("d", fail_after_tokens=2)]}
    outcomes, table = run("disaggregated", stubs, workload(3))
    assert (table["status"] == "failed").all()
    assert all(reason for reason in table["reason"])
    assert table["completion_s"].isna().all()
    # the first breaks after 2 tokens; later ones may find the decode server marked down (HTTP 503)
    assert len(outcomes[0].token_times) == 2 and all(len(o.token_times) <= 2 for o in outcomes)


@pytest.mark.parametrize("status, outcome", [(400, "rejected"), (500, "failed")])
def test_refused_requests_are_rejected_or_failed(status, outcome):
    _, table = run("monolithic", {"mixed": [StubServer("a", refuse_status=status)]}, workload(2))
    assert (table["status"] == outcome).all()
    assert table["reason"].str.contains(f"HTTP {status}").all()


def test_a_silent_stream_times_out_instead_of_hanging():
    stubs = {"mixed": [StubServer("slow", token_gap_s=5.0)]}
    _, table = run("monolithic", stubs, workload(2), limits=ReplayLimits(request_s=10.0, idle_s=0.2))
    assert (table["status"] == "failed").all()
    assert table["reason"].str.contains("timeout").all()


def test_no_backend_up_fails_requests_without_hanging():
    spec_urls = {"mixed": ["http://127.0.0.1:9"]}   # discard port: nothing listens

    async def go():
        runner, url = await serve(make_app(GatewaySpec("monolithic", "127.0.0.1", 0, spec_urls,
                                                       {"mixed": "least_outstanding"}, model="stub")))
        try:
            return await replay(url, "stub", workload(2), 4096, LIMITS)
        finally:
            await runner.cleanup()

    outcomes = asyncio.run(go())
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("502" in o.reason or "503" in o.reason for o in outcomes)


def test_the_replayer_keeps_to_the_trace_clock():
    # 100 req/s, with the stub and the gateway on the replayer's own event loop (the real
    # replayer has its loop to itself). The median shows the replayer keeps to the clock; the
    # tail bound only catches a replayer that drifts (a busy 2-core machine stalls any process
    # for tens of milliseconds now and then: timings belong to benchmarks, not to this test).
    load = workload(100, gap_s=0.01, output=2)
    outcomes, table = run("monolithic", {"mixed": [StubServer("a", token_gap_s=0.001)]}, load)
    assert (table["status"] == "completed").all(), table["reason"].unique().tolist()
    delays = scheduling_delays(outcomes)
    assert delays.min() >= 0 and np.median(delays) < 0.02 and delays.max() < 1.0


def test_least_kv_reads_the_servers_metrics():
    text = '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
    assert metric_value(text, "vllm:kv_cache_usage_perc") == 0.25
    stubs = [StubServer("a"), StubServer("b")]
    _, table = run("monolithic", {"mixed": stubs}, workload(2), routers={"mixed": "least_kv"})
    assert (table["status"] == "completed").all()
    assert all("/metrics" in stub.polled for stub in stubs)


def test_a_pool_of_one_is_never_asked_for_its_metrics():
    # nothing to choose, and rendering /metrics costs a CPU server's API core tens of ms
    prefill, decode = StubServer("p"), StubServer("d")
    _, table = run("disaggregated", {"prefill": [prefill], "decode": [decode]}, workload(2, gap_s=0.2),
                   routers={"prefill": "least_kv", "decode": "least_kv"})
    assert (table["status"] == "completed").all()
    assert decode.polled and set(prefill.polled + decode.polled) == {"/health"}


# --------------------------------------------------------------------------- the gateway never hangs a client

def closed_port() -> str:
    """The URL of a local port nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@contextlib.contextmanager
def unanswered_port():
    """A local port whose accept queue is full: a connection to it is never made (SYNs dropped),
    as with a server host that is down or unreachable."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [*fillers, server]:
            sock.close()


def timed_run(*args, **kwargs):
    started = time.monotonic()
    outcomes, table = run(*args, **kwargs)
    return outcomes, table, time.monotonic() - started


@pytest.mark.parametrize("role", ["mixed", "prefill", "decode"])
@pytest.mark.parametrize("status, body", [(400, None), (404, None), (500, None), (503, "Service Unavailable"),
                                          (502, "")])
def test_an_upstream_error_status_reaches_the_client_with_the_server_named(role, status, body):
    bad = StubServer("bad", refuse_status=status, refuse_text=body)
    stubs = ({"mixed": [bad]} if role == "mixed" else
             {"prefill": [bad if role == "prefill" else StubServer("p")],
              "decode": [bad if role == "decode" else StubServer("d")]})
    _, table = run("monolithic" if role == "mixed" else "disaggregated", stubs, workload(2))
    assert (table["status"] == ("rejected" if status == 400 else "failed")).all()
    detail = "bad refuses" if body is None else (body or "(empty body)")
    for reason in table["reason"]:
        assert reason.startswith(f"HTTP {status}: {role} server 0 (http://127.0.0.1:")
        assert reason.endswith(f"answered HTTP {status}: {detail}")


def test_an_upstream_that_goes_silent_mid_stream_is_reported_within_upstream_idle_s():
    stubs = {"mixed": [StubServer("hung", stall_after_tokens=2)]}
    outcomes, table, took = timed_run("monolithic", stubs, workload(2), upstream_idle_s=0.3,
                                      limits=ReplayLimits(request_s=20.0, idle_s=5.0))
    assert took < 5.0   # the gateway's 0.3 s, not the replayer's 5 s, ended them
    assert (table["status"] == "failed").all()
    for outcome in outcomes:
        assert len(outcome.token_times) == 2
        assert outcome.reason.startswith("RuntimeError: stream error: mixed server 0 (http://127.0.0.1:")
        assert "sent nothing for 0.3 s" in outcome.reason and "upstream_idle_s" in outcome.reason


def test_an_upstream_that_never_answers_gets_a_504_naming_it():
    stubs = {"prefill": [StubServer("p")], "decode": [StubServer("d", hang_s=30.0)]}
    outcomes, table, took = timed_run("disaggregated", stubs, workload(2), upstream_idle_s=0.3)
    assert took < 5.0
    assert (table["status"] == "failed").all()
    assert all(o.reason.startswith("HTTP 504: decode server 0") and "upstream_idle_s" in o.reason for o in outcomes)


def test_a_slow_prefill_gets_a_504_after_prefill_s():
    stubs = {"prefill": [StubServer("p", hang_s=30.0)], "decode": [StubServer("d")]}
    outcomes, table, took = timed_run("disaggregated", stubs, workload(2), prefill_s=0.3)
    assert took < 5.0
    assert (table["status"] == "failed").all()
    assert all(o.reason.startswith("HTTP 504: prefill server 0") and "prefill_s" in o.reason for o in outcomes)


def test_an_upstream_that_cannot_be_connected_to_gets_a_504_after_connect_s():
    with unanswered_port() as url:
        outcomes, table, took = timed_run("monolithic", {"mixed": [url]}, workload(2), connect_s=0.3)
    assert took < 5.0
    assert (table["status"] == "failed").all()
    # the first finds no connection; the server is then marked down (its /health fails too)
    assert outcomes[0].reason == f"HTTP 504: mixed server 0 ({url}): no connection within 0.3 s " \
                                 "(real.timeouts.connect_s)"
    assert all(o.reason.startswith("HTTP 50") for o in outcomes)


@pytest.mark.parametrize("stub, tokens, reason_end", [
    ({"end_after_tokens": 3}, 3, "without [DONE]"),
    ({"error_after_tokens": 2}, 2, "sent an error event: Internal server error"),   # vLLM's own, e.g. a failed KV load
], ids=["closed early", "error event"])
@pytest.mark.parametrize("role", ["mixed", "decode"])
def test_a_stream_that_ends_badly_ends_with_an_error_event_naming_the_server(role, stub, tokens, reason_end):
    bad = StubServer("bad", **stub)
    stubs = {"mixed": [bad]} if role == "mixed" else {"prefill": [StubServer("p")], "decode": [bad]}
    outcomes, table = run("monolithic" if role == "mixed" else "disaggregated", stubs, workload(2))
    assert (table["status"] == "failed").all()
    for outcome in outcomes:
        assert len(outcome.token_times) == tokens
        assert outcome.reason.startswith(f"RuntimeError: stream error: {role} server 0 (http://")
        assert outcome.reason.endswith(reason_end)


def test_a_connection_dropped_mid_stream_names_the_server_and_what_arrived():
    stubs = {"mixed": [StubServer("crash", fail_after_tokens=2)]}
    outcomes, table = run("monolithic", stubs, workload(1))
    assert table["status"].tolist() == ["failed"]
    assert outcomes[0].reason.startswith("RuntimeError: stream error: mixed server 0 (")
    assert "closed the connection" in outcomes[0].reason and len(outcomes[0].token_times) == 2


def test_a_prefill_answer_that_is_not_json_is_a_502():
    stubs = {"prefill": [StubServer("p", garbage_answer=True)], "decode": [StubServer("d")]}
    outcomes, table = run("disaggregated", stubs, workload(2))
    assert (table["status"] == "failed").all()
    assert all(o.reason.startswith("HTTP 502: prefill server 0") and "not a completion" in o.reason
               for o in outcomes)


def test_a_prefill_server_crashing_on_a_request_is_failed_over_to_another():
    crashing, alive = StubServer("p0", drop_requests=True), StubServer("p1")
    outcomes, table = run("disaggregated", {"prefill": [crashing, alive], "decode": [StubServer("d")]}, workload(4))
    assert (table["status"] == "completed").all(), table["reason"].tolist()
    assert (table["prefill_instance"] == 1).all()
    assert len(alive.received) == 4 and len(crashing.received) >= 1
    retried = [o for o in outcomes if "x-pdsim-retries" in o.headers]
    assert len(retried) == len(crashing.received)   # each request p0 dropped went on to p1
    for outcome in retried:
        assert outcome.headers["x-pdsim-retries"] == "1"
        assert outcome.headers["x-pdsim-prefill-failed"].startswith("prefill server 0 (http://127.0.0.1:")
        assert "closed the connection" in outcome.headers["x-pdsim-prefill-failed"]


def test_a_dead_prefill_server_gets_no_requests():
    outcomes, table = run("disaggregated", {"prefill": [closed_port(), StubServer("p1")], "decode": [StubServer("d")]},
                          workload(4))
    assert (table["status"] == "completed").all(), table["reason"].tolist()
    assert (table["prefill_instance"] == 1).all()


def test_with_no_other_prefill_server_the_request_fails_with_the_reason():
    outcomes, table = run("disaggregated", {"prefill": [StubServer("p", drop_requests=True)],
                                            "decode": [StubServer("d")]}, workload(3))
    assert (table["status"] == "failed").all()
    assert outcomes[0].reason.startswith("HTTP 502: prefill server 0 (http://127.0.0.1:")
    assert "closed the connection after 0 bytes" in outcomes[0].reason
    # later requests may find it marked down until its next /health
    assert all(o.reason.startswith(("HTTP 502: prefill server 0", "HTTP 503: no prefill server is up"))
               for o in outcomes)
    dead = closed_port()
    outcomes, table = run("disaggregated", {"prefill": [dead], "decode": [StubServer("d")]}, workload(2))
    assert all(o.reason.startswith((f"HTTP 502: prefill server 0 ({dead}) unreachable",
                                    "HTTP 503: no prefill server is up")) for o in outcomes)


def test_a_killed_server_process_fails_its_stream_and_rejoins_after_restart(tmp_path):
    """A stub server as its own process, SIGKILLed mid-stream and started again on its port: the
    gateway fails the cut streams with the reason, routes around it while its /health fails,
    and sends it requests again once it answers."""
    port = int(closed_port().rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "tests.real_stub", str(port), "a"],
                                   cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=1):
                return process
            time.sleep(0.05)
        process.kill()
        raise AssertionError("stub server did not start")

    async def scenario():
        other = StubServer("b", token_gap_s=0.02)
        runner_b, url_b = await serve(other.app)
        spec = GatewaySpec("monolithic", "127.0.0.1", 0, {"mixed": [url, url_b]}, {"mixed": "round_robin"},
                           model="stub", metrics_poll_s=0.1)
        process = await asyncio.to_thread(start)
        runner, gateway = await serve(make_app(spec))
        try:
            await asyncio.sleep(0.3)   # the first health polls
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, process.kill)   # 100 tokens at 20 ms: mid-stream
            cut = await replay(gateway, "stub", workload(2, output=100), 4096, LIMITS)
            process.wait(timeout=10)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gateway}/stats") as response:
                    down = await response.json()
            while_down = await replay(gateway, "stub", workload(4), 4096, LIMITS)
            process = await asyncio.to_thread(start)
            await asyncio.sleep(0.5)   # a few health polls
            after = await replay(gateway, "stub", workload(4), 4096, LIMITS)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{gateway}/stats") as response:
                    up = await response.json()
            return cut, down, while_down, after, up
        finally:
            process.kill()
            process.wait(timeout=10)
            await runner.cleanup()
            await runner_b.cleanup()

    cut, down, while_down, after, up = asyncio.run(scenario())
    on = {o.headers["x-pdsim-instance"]: o for o in cut}
    assert on["0"].status == "failed" and 0 < len(on["0"].token_times) < 100
    assert on["0"].reason.startswith(f"RuntimeError: stream error: mixed server 0 ({url}) closed the connection")
    assert on["1"].status == "completed"
    assert [s["up"] for s in down["mixed"]] == [False, True]
    assert [o.status for o in while_down] == ["completed"] * 4
    assert [o.headers["x-pdsim-instance"] for o in while_down] == ["1"] * 4
    assert [o.status for o in after] == ["completed"] * 4
    assert sorted(o.headers["x-pdsim-instance"] for o in after) == ["0", "0", "1", "1"]
    assert [s["up"] for s in up["mixed"]] == [True, True]
    assert up["mixed"][0]["sent"] == 3 and up["mixed"][0]["failed"] == 1


def test_stopping_a_process_group_leaves_no_process(tmp_path):
    """real.processes: the child, its children, and a grandchild that left the group (setsid)
    are all gone after stop_all, even though the leader ignores SIGTERM."""
    from real.processes import running, start, stop_all

    script = ("trap '' TERM; sleep 300 & sleep 300 & "
              f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(300)' & wait")
    process = start("family", ["bash", "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path / "family.log",
                    "http://127.0.0.1:9/health")
    deadline = time.monotonic() + 10
    while len(process.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = process.pids()
    assert len(pids) == 4
    started = time.monotonic()
    stop_all([process], grace_s=0.5)
    assert time.monotonic() - started < 5
    assert running(pids) == set()
