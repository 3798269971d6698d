"""Proof that the real deployments are real: vLLM's CPU build serving the tiny model, a short
trace replayed through the project's proxy and router, the KV of the split deployment counted
by the decode server as received over NixlConnector, and a decode server killed mid-run.

Marked `real` (select with `-m real`, skip with `-m "not real"`); needs the `real` extra. Each
deployment takes one to two minutes to start on 2 cores, the replays a few seconds.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
pytest.importorskip("vllm")

from hydra import compose, initialize_config_dir  # noqa: E402

from real.deployment import Deployment  # noqa: E402
from real.measure import measure  # noqa: E402
from real.plan import plan_deployment  # noqa: E402
from sim.experiment import as_dict  # noqa: E402
from sim.table import REQUEST_COLUMNS  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def workload(requests: int, rate: float, output: int) -> list[str]:
    return ["workload=poisson", f"workload.num_requests={requests}", f"workload.rate={rate}",
            "~workload.lengths.prompt", "+workload.lengths.prompt={dist:uniform,low:16,high:200}",
            f"workload.lengths.output.value={output}"]


def deploy_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return as_dict(compose(config_name="deploy", overrides=list(overrides)))


@pytest.fixture(scope="module")
def disaggregated(tmp_path_factory):
    cfg = deploy_config("serving=disaggregated", "real.base_port=18300", "real.nixl_base_port=18400")
    plan = plan_deployment(cfg, tmp_path_factory.mktemp("disaggregated"))
    with Deployment(plan, cfg["model"]) as deployment:
        yield cfg, deployment


def assert_served_exactly(measurement) -> None:
    table = measurement.requests
    assert list(table.columns) == list(REQUEST_COLUMNS)
    assert (table["status"] == "completed").all(), table["reason"].tolist()
    per_request = measurement.tokens.groupby("request_id").size()
    assert per_request.tolist() == table["output_tokens"].tolist()
    assert (table["ttft_s"] > 0).all() and (table["e2e_s"] >= table["ttft_s"]).all()


def test_one_prefill_one_decode_serve_a_trace_with_the_kv_over_nixl(disaggregated):
    base, deployment = disaggregated
    measurement = measure(base | {"workload": deploy_config(*workload(6, 4.0, 16))["workload"]}, deployment.plan.url)
    assert_served_exactly(measurement)
    table, summary = measurement.requests, measurement.summary
    prompt_tokens = table["prompt_tokens"].sum()
    assert summary["decode0_prompt_tokens_external_kv_transfer"] >= 0.9 * prompt_tokens
    assert summary["prefill0_prompt_tokens_local_compute"] >= prompt_tokens
    assert (table["prefill_end_s"] <= table["transfer_start_s"]).all()
    assert (table["transfer_start_s"] <= table["first_token_s"]).all()


def test_killing_the_decode_server_fails_requests_one_by_one_and_the_replay_ends(disaggregated):
    base, deployment = disaggregated
    cfg = base | {"workload": deploy_config(*workload(6, 10.0, 400))["workload"],
                  "real": base["real"] | {"timeouts": base["real"]["timeouts"] | {"idle_s": 30.0}}}
    killer = threading.Timer(3.0, deployment.kill, ["decode0"])
    killer.start()
    try:
        measurement = measure(cfg, deployment.plan.url)
    finally:
        killer.cancel()
    table = measurement.requests
    assert len(table) == 6 and set(table["status"]) <= {"completed", "failed"}
    failed = table[table["status"] == "failed"]
    assert len(failed) >= 1
    assert failed["reason"].str.len().gt(0).all()
    assert failed["completion_s"].isna().all()


def test_a_monolithic_pair_serves_the_same_trace(tmp_path):
    cfg = deploy_config("serving=monolithic", "serving.instances=2", "serving.router=round_robin",
                        "real.base_port=18500", *workload(6, 4.0, 16))
    plan = plan_deployment(cfg, tmp_path)
    with Deployment(plan, cfg["model"]):
        measurement = measure(cfg, plan.url)
    assert_served_exactly(measurement)
    table, summary = measurement.requests, measurement.summary
    assert sorted(set(table["prefill_instance"])) == [0, 1]
    assert (table["prefill_instance"] == table["decode_instance"]).all()
    assert summary["mixed0_prompt_tokens_local_compute"] + summary["mixed1_prompt_tokens_local_compute"] \
        >= table["prompt_tokens"].sum()
    assert summary.get("mixed0_prompt_tokens_external_kv_transfer", 0) == 0
    assert table["transfer_start_s"].isna().all()
