"""Bad input to the real deployment stops before or during start with a message that says what
to change, and leaves no process: unknown model directory, port in use, too little memory or
KV cache, a server that dies at start or never gets healthy. Fast; starts no vLLM."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from hydra import compose, initialize_config_dir  # noqa: E402

from real.plan import plan_deployment  # noqa: E402
from real.processes import DeploymentError, start, stop_all, wait_healthy  # noqa: E402
from sim.experiment import as_dict  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def deploy_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return as_dict(compose(config_name="deploy", overrides=list(overrides)))


def test_the_disaggregated_plan_pins_cores_and_wires_nixl(tmp_path):
    plan = plan_deployment(deploy_config("serving=disaggregated", "real.base_port=18100"), tmp_path)
    prefill, decode = plan.servers
    assert (prefill.name, decode.name) == ("prefill0", "decode0")
    assert prefill.cores != decode.cores or len(prefill.cores) == 0
    assert '"kv_role": "kv_producer"' in " ".join(prefill.command)
    assert decode.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] != prefill.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    assert "--block-size" in prefill.command and prefill.command[prefill.command.index("--block-size") + 1] == "32"
    assert plan.gateway.pools == {"prefill": [prefill.url], "decode": [decode.url]}


def test_an_unknown_model_directory_is_refused(tmp_path):
    with pytest.raises(DeploymentError, match="real.model_dir"):
        plan_deployment(deploy_config("serving=monolithic", f"real.model_dir={tmp_path / 'nope'}"), tmp_path)


def test_a_port_in_use_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"port {port} .*real.base_port"):
            plan_deployment(deploy_config("serving=monolithic", f"real.base_port={port}"), Path("/tmp"))


@pytest.mark.parametrize("overrides, message", [
    (["real.kv_cache_gib=0.5"], "whole GiB .*an integer >= 1"),
    (["model=llama3.1-8b", "real.kv_cache_gib=1"], "holds 8192 tokens .* raise real.kv_cache_gib"),
])
def test_a_kv_cache_that_vllm_would_refuse_is_refused(tmp_path, overrides, message):
    with pytest.raises(DeploymentError, match=message):
        plan_deployment(deploy_config("serving=monolithic", *overrides), tmp_path)


def test_more_memory_than_the_machine_has_is_refused(tmp_path):
    with pytest.raises(DeploymentError, match="GiB is available; lower real.kv_cache_gib"):
        plan_deployment(deploy_config("serving=monolithic", "real.kv_cache_gib=100000"), tmp_path)


@pytest.mark.parametrize("script, timeout_s, message", [
    ("raise ValueError('KV cache too small for max_model_len')", 30.0,
     "server exited .*ValueError: KV cache too small"),
    ("import time; print('starting'); time.sleep(60)", 0.5,
     "server not healthy after 0.5 s; raise real.timeouts.startup_s"),
])
def test_a_server_that_dies_or_never_gets_healthy_is_reported_and_stopped(tmp_path, script, timeout_s, message):
    server = start("server", [sys.executable, "-c", script], {}, tmp_path / "server.log", "http://127.0.0.1:9/health")
    with pytest.raises(DeploymentError, match=message):
        wait_healthy([server], timeout_s=timeout_s, poll_s=0.1)
    stop_all([server], grace_s=1)
    assert not server.alive()
