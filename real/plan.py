"""From the Hydra config to a checked plan of processes: which vLLM servers with which flags,
cores and ports, and the gateway in front of them. Everything a user can get wrong is refused
here, before anything starts, with a message that names the setting to change.

Servers are numbered in start order: monolithic `mixed0..`, disaggregated `prefill0..` then
`decode0..`; server k listens on `real.base_port + 1 + k` and gets the next
`real.cores_per_instance` cores of the machine (wrapping round when there are more servers
than cores).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil

from real.gateway import GatewaySpec
from real.processes import DeploymentError
from sim.catalog import model_from_config
from sim.kv_cache import GIB

ARCHITECTURES = ("monolithic", "disaggregated")
CONNECTORS = ("NixlConnector", "ExampleConnector")


@dataclass(frozen=True)
class ServerPlan:
    name: str                  # mixed0, prefill0, decode1, ...
    role: str                  # mixed | prefill | decode
    instance_id: int           # position in its pool
    host: str
    port: int
    cores: tuple[int, ...]
    command: tuple[str, ...]
    env: dict[str, str]        # added to the parent's environment

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class DeploymentPlan:
    architecture: str
    run_dir: Path
    model_dir: Path
    generate_model: bool       # write the model/ config's shapes to model_dir before starting
    servers: tuple[ServerPlan, ...]
    gateway: GatewaySpec
    startup_s: float
    shutdown_s: float

    @property
    def url(self) -> str:
        return f"http://{self.gateway.host}:{self.gateway.port}"

    def server(self, role: str, instance_id: int) -> ServerPlan:
        return next(s for s in self.servers if s.role == role and s.instance_id == instance_id)


def _pools(serving: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    architecture = serving.get("architecture")
    if architecture == "monolithic":
        return [("mixed", serving)]
    if architecture == "disaggregated":
        return [("prefill", serving["prefill"]), ("decode", serving["decode"])]
    raise DeploymentError(f"serving.architecture is {architecture!r}: a deployment is one of {ARCHITECTURES} "
                          f"(serving=monolithic or serving=disaggregated; `python -m real run` also takes serving=compare)")


def block_size(engine: Mapping[str, Any], multiple: int) -> int:
    """The engine's block size rounded up to a multiple the CPU attention backend accepts."""
    size = int(engine.get("block_size", 16))
    return -(-size // multiple) * multiple


def _engine_flags(engine: Mapping[str, Any], max_model_len: int, block: int) -> list[str]:
    flags = ["--max-model-len", str(max_model_len),
             "--max-num-seqs", str(int(engine.get("max_num_seqs", 256))),
             "--max-num-batched-tokens", str(int(engine.get("max_num_batched_tokens", 8192))),
             "--block-size", str(block)]
    flags.append("--enable-chunked-prefill" if engine.get("chunked_prefill", True) else "--no-enable-chunked-prefill")
    flags.append("--enable-prefix-caching" if engine.get("enable_prefix_caching", True) else "--no-enable-prefix-caching")
    return flags


def _kv_transfer_config(connector: str, role: str, run_dir: Path) -> str:
    if connector == "NixlConnector":
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
        return json.dumps({"kv_connector": connector, "kv_role": kv_role, "kv_buffer_device": "cpu"})
    return json.dumps({"kv_connector": connector, "kv_role": "kv_both",
                       "kv_connector_extra_config": {"shared_storage_path": str(run_dir / "kv_store")}})


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port held only by closed connections (TIME_WAIT) is free to listen on.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise DeploymentError(f"port {port} ({what}) is in use on {host}; stop what listens there or set "
                                  f"real.base_port / real.nixl_base_port to a free range") from None


def plan_deployment(cfg: Mapping[str, Any], run_dir: Path) -> DeploymentPlan:
    """The checked plan for `cfg` (a resolved config of configs/deploy.yaml), logs and files in `run_dir`."""
    real = cfg["real"]
    serving = cfg["serving"]
    pools = _pools(serving)
    connector = str(real["connector"])
    if serving["architecture"] == "disaggregated" and connector not in CONNECTORS:
        raise DeploymentError(f"real.connector is {connector!r}; choose one of {CONNECTORS}")

    model = model_from_config(cfg["model"])
    generate = real.get("model_dir") is None
    model_dir = run_dir / "model" if generate else Path(str(real["model_dir"])).expanduser().resolve()
    if not generate and not (model_dir / "config.json").is_file():
        raise DeploymentError(f"real.model_dir={real['model_dir']} is not a Hugging Face model directory (no "
                              f"config.json there); point it at one, or set real.model_dir=null to generate "
                              f"the {model.name} shapes locally")

    kv_gib = real["kv_cache_gib"]
    if not isinstance(kv_gib, int) or kv_gib < 1:
        raise DeploymentError(f"real.kv_cache_gib is {kv_gib!r}; vLLM's CPU backend takes whole GiB "
                              f"(VLLM_CPU_KVCACHE_SPACE): set it to an integer >= 1")
    kv_tokens = int(kv_gib * GIB / model.kv_bytes_per_token)
    host = str(real["host"])
    cores = sorted(os.sched_getaffinity(0))
    per_instance = int(real["cores_per_instance"])
    if not 1 <= per_instance <= len(cores):
        raise DeploymentError(f"real.cores_per_instance={per_instance}; this machine offers {len(cores)} cores")

    servers: list[ServerPlan] = []
    for role, pool in pools:
        if int(pool.get("instances", 0)) < 1:
            raise DeploymentError(f"the {role} pool has {pool.get('instances')} instances; set its instances>=1")
        if int(pool.get("tp", 1)) != 1:
            raise DeploymentError(f"the {role} pool asks for tp={pool.get('tp')}; the CPU deployment runs one "
                                  f"process per server: set tp=1 and use real.cores_per_instance for more cores")
        engine = pool.get("engine") or {}
        max_model_len = min(int(engine.get("max_model_len") or model.max_model_len), model.max_model_len)
        if kv_tokens < max_model_len:
            raise DeploymentError(f"real.kv_cache_gib={kv_gib} holds {kv_tokens} tokens of {model.name} KV, fewer "
                                  f"than one request of max_model_len={max_model_len}; raise real.kv_cache_gib "
                                  f"or lower the engine's max_model_len")
        for instance_id in range(int(pool["instances"])):
            k = len(servers)
            mine = tuple(cores[(k * per_instance + j) % len(cores)] for j in range(per_instance))
            port = int(real["base_port"]) + 1 + k
            env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": str(kv_gib),
                   "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, mine)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                   "PYTHONUNBUFFERED": "1"}
            command = ["taskset", "-c", ",".join(map(str, mine)), sys.executable, "-m", "real.vllm_server", "serve",
                       str(model_dir), "--served-model-name", model.name, "--host", host, "--port", str(port),
                       "--load-format", str(real["load_format"]), "--dtype", str(real["dtype"]),
                       "--enable-prompt-tokens-details", "--enable-per-request-metrics", "--disable-uvicorn-access-log", *_engine_flags(engine, max_model_len, block_size(engine, int(real["block_size_multiple"])))]
            if real.get("enforce_eager", True):
                command.append("--enforce-eager")
            if role != "mixed":
                command += ["--kv-transfer-config", _kv_transfer_config(connector, role, run_dir)]
                if connector == "NixlConnector":
                    nixl_port = int(real["nixl_base_port"]) + k
                    check_port_free(host, nixl_port, f"NIXL side channel of {role}{instance_id} = real.nixl_base_port+{k}")
                    env |= {"VLLM_NIXL_SIDE_CHANNEL_PORT": str(nixl_port), "VLLM_NIXL_SIDE_CHANNEL_HOST": host}
            check_port_free(host, port, f"vLLM server {role}{instance_id} = real.base_port+{1 + k}")
            servers.append(ServerPlan(f"{role}{instance_id}", role, instance_id, host, port, mine, tuple(command), env))

    gateway_port = int(real["base_port"])
    check_port_free(host, gateway_port, "router/proxy = real.base_port")
    _check_memory(len(servers), kv_gib, float(real["server_overhead_gib"]))
    gateway = GatewaySpec(
        architecture=str(serving["architecture"]), host=host, port=gateway_port,
        pools={role: [s.url for s in servers if s.role == role] for role, _ in pools},
        routers={role: str(pool.get("router", "round_robin")) for role, pool in pools},
        connector=connector, model=model.name, metrics_poll_s=float(real["metrics_poll_s"]),
        connect_s=float(real["timeouts"]["connect_s"]), upstream_idle_s=float(real["timeouts"]["upstream_idle_s"]),
        prefill_s=float(real["timeouts"]["prefill_s"]))
    timeouts = real["timeouts"]
    return DeploymentPlan(str(serving["architecture"]), run_dir, model_dir, generate, tuple(servers), gateway,
                          float(timeouts["startup_s"]), float(timeouts["shutdown_s"]))


def _check_memory(servers: int, kv_gib: int, overhead_gib: float) -> None:
    need = servers * (kv_gib + overhead_gib)
    available = psutil.virtual_memory().available / GIB
    if need > available:
        raise DeploymentError(f"{servers} vLLM servers need about {need:.1f} GiB ({kv_gib:g} GiB KV cache "
                              f"(real.kv_cache_gib) + {overhead_gib:g} GiB each), but only {available:.1f} GiB is "
                              f"available; lower real.kv_cache_gib or the number of instances")
