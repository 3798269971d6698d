"""Failures of a real 1P+1D deployment (vLLM's CPU build, NixlConnector) mid-replay: the prefill
server killed, the decode server (the proxy's streaming upstream) killed mid-stream, each
restarted and routed to again, and no process left once the deployment is stopped.

One deployment serves the whole module, in order (each test leaves it whole again). Marked
`real`; about 5 minutes on 2 cores (three server starts).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
pytest.importorskip("vllm")

from hydra import compose, initialize_config_dir  # noqa: E402

from real.deployment import Deployment  # noqa: E402
from real.measure import measure  # noqa: E402
from real.plan import plan_deployment  # noqa: E402
from real.processes import running  # noqa: E402
from sim.experiment import as_dict  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE_PORT = 18600


def deploy_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return as_dict(compose(config_name="deploy", overrides=list(overrides)))


def workload(requests: int, rate: float, prompt: tuple[int, int], output: int) -> dict:
    return deploy_config("workload=poisson", f"workload.num_requests={requests}", f"workload.rate={rate}",
                         "~workload.lengths.prompt",
                         f"+workload.lengths.prompt={{dist:uniform,low:{prompt[0]},high:{prompt[1]}}}",
                         f"workload.lengths.output.value={output}")["workload"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    # short limits so a failure that no error reports (a lost KV pull) ends in seconds, not minutes
    cfg = deploy_config("serving=disaggregated", f"real.base_port={BASE_PORT}", "real.nixl_base_port=18700",
                        "real.metrics_poll_s=0.5", "real.timeouts.upstream_idle_s=20", "real.timeouts.idle_s=30",
                        "real.timeouts.request_s=90")
    plan = plan_deployment(cfg, tmp_path_factory.mktemp("faults"))
    with Deployment(plan, cfg["model"]) as deployment:
        yield cfg, deployment


def stats(deployment: Deployment) -> dict:
    with urllib.request.urlopen(f"{deployment.plan.url}/stats", timeout=5) as response:
        return json.loads(response.read())


def wait_until_up(deployment: Deployment, role: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = stats(deployment)
        if now[role][0]["up"]:
            return now
        time.sleep(0.1)
    raise AssertionError(f"the gateway still has {role} 0 down {timeout_s} s after it answered /health")


def replay_with_kill(cfg: dict, deployment: Deployment, load: dict, victim: str, after_s: float):
    killer = threading.Timer(after_s, deployment.kill, [victim])
    killer.start()
    started = time.monotonic()
    try:
        measurement = measure(cfg | {"workload": load}, deployment.plan.url)
    finally:
        killer.cancel()
        killer.join()   # the kill returns once the victim's processes are gone
    table = measurement.requests
    print(f"{victim} killed after {after_s:g} s:\n" + table[["status", "reason"]].to_string())   # shown with -s
    return table, time.monotonic() - started


def check_rejoins(cfg: dict, deployment: Deployment, name: str) -> None:
    """Restart `name`; the gateway marks it up by its next /health and sends it new requests."""
    role = name.rstrip("0123456789")
    assert not stats(deployment)[role][0]["up"]
    deployment.restart(name)
    before = wait_until_up(deployment, role)[role][0]["sent"]
    table = measure(cfg | {"workload": workload(4, 4.0, (16, 200), 8)}, deployment.plan.url).requests
    assert (table["status"] == "completed").all(), table["reason"].tolist()
    assert stats(deployment)[role][0]["sent"] == before + 4


def test_killing_the_prefill_server_fails_its_requests_with_the_reason_and_the_replay_ends(deployed):
    cfg, deployment = deployed
    old = deployment.pids()["prefill0"]
    # long prompts at 6 req/s: prefills are queued and running when the server dies at 1.2 s
    table, took = replay_with_kill(cfg, deployment, workload(12, 6.0, (1500, 3000), 8), "prefill0", 1.2)
    assert took < 120
    assert len(table) == 12 and set(table["status"]) <= {"completed", "failed"}
    failed = table[table["status"] == "failed"]
    assert len(failed) >= 3, table[["status", "reason"]].to_string()
    # every failure names the server and what happened: the prefill's connection closed or refused, no
    # prefill server up; or, for a prompt whose KV was still to be pulled from it, the decode side
    for reason in failed["reason"]:
        assert ("prefill server 0 (http://" in reason or "no prefill server is up" in reason
                or "decode server 0 (http://" in reason), reason
    assert failed["reason"].str.contains("prefill").sum() >= 3
    assert failed["completion_s"].isna().all()
    assert running(old) == set()   # the killed server's whole process group is gone
    check_rejoins(cfg, deployment, "prefill0")


def test_killing_the_decode_server_mid_stream_ends_each_stream_with_the_reason(deployed):
    cfg, deployment = deployed
    old = deployment.pids()["decode0"]
    table, took = replay_with_kill(cfg, deployment, workload(4, 8.0, (16, 100), 1000), "decode0", 4.0)
    assert took < 120
    assert (table["status"] == "failed").all(), table[["status", "reason"]].to_string()
    cut = table[table["reason"].str.contains("stream error: decode server 0")]
    assert len(cut) >= 1, table["reason"].tolist()
    assert cut["reason"].str.contains("closed the connection after").all()
    assert (cut["first_token_s"].notna()).all()   # they had streamed tokens before the cut
    assert running(old) == set()
    check_rejoins(cfg, deployment, "decode0")


def test_stopping_the_deployment_leaves_no_process(deployed):
    _, deployment = deployed
    pids = set().union(*deployment.pids().values())
    assert len(pids) >= 5   # 2 servers (API server + engine core each) and the gateway
    deployment.stop()
    assert running(pids) == set()
    assert all(not p.alive() for p in deployment.processes.values())
