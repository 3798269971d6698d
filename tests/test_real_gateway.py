"""The router, the proxy and the replayer against real HTTP servers that stand in for vLLM
(tests/real_stub.py): routing, the two-hop protocol, streaming, per-request failures, timeouts
and the replayer's own scheduling delay. Fast; needs aiohttp (the `real` extra), not vLLM."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("aiohttp")

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


async def _replay_through(architecture: str, stubs: dict[str, list[StubServer]], load: Workload,
                          routers: dict[str, str] | None = None, limits: ReplayLimits = LIMITS):
    runners = []
    try:
        urls: dict[str, list[str]] = {}
        for role, servers in stubs.items():
            urls[role] = []
            for stub in servers:
                runner, url = await serve(stub.app)
                runners.append(runner)
                urls[role].append(url)
        spec = GatewaySpec(architecture, "127.0.0.1", 0, urls, routers or {role: "round_robin" for role in urls},
                           model="stub", metrics_poll_s=0.05)
        runner, gateway_url = await serve(make_app(spec))
        runners.append(runner)
        return await replay(gateway_url, "stub", load, 4096, limits)
    finally:
        for runner in runners:
            await runner.cleanup()


def run(architecture: str, stubs: dict[str, list[StubServer]], load: Workload, **kwargs):
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
    # replayer has its loop to itself); bounds loose enough for a busy 2-core machine
    load = workload(100, gap_s=0.01, output=2)
    outcomes, table = run("monolithic", {"mixed": [StubServer("a", token_gap_s=0.001)]}, load)
    assert (table["status"] == "completed").all()
    delays = scheduling_delays(outcomes)
    assert delays.min() >= 0 and np.median(delays) < 0.02 and np.percentile(delays, 99) < 0.1


def test_least_kv_reads_the_servers_metrics():
    text = '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
    assert metric_value(text, "vllm:kv_cache_usage_perc") == 0.25
    stubs = [StubServer("a"), StubServer("b")]
    _, table = run("monolithic", {"mixed": stubs}, workload(2), routers={"mixed": "least_kv"})
    assert (table["status"] == "completed").all()
