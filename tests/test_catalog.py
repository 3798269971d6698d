"""Catalogue entries: derived sizes match what the model cards and the GQA arithmetic say."""

import pytest

from conftest import CONFIGS, load_yaml
from sim.catalog import gpu_from_config, link_from_config, model_from_config

MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
GPUS = sorted(p.stem for p in (CONFIGS / "hardware").glob("*.yaml") if not p.stem.startswith("cpu-"))  # cpu-*: test_calibration
LINKS = sorted(p.stem for p in (CONFIGS / "network").glob("*.yaml"))


def test_catalogue_covers_the_required_entries():
    assert {"llama3.1-8b", "llama3.1-70b", "llama2-7b", "llama2-70b", "qwen2.5-32b", "mixtral-8x7b"} <= set(MODELS)
    assert {"h100-sxm", "h200", "a100-80gb", "l40s", "b200"} <= set(GPUS)
    assert {"nvlink", "rdma", "tcp"} <= set(LINKS)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_the_model_card(name):
    cfg = load_yaml("model", name)
    model = model_from_config(cfg)
    assert model.num_params / 1e9 == pytest.approx(cfg["reported_params_b"], rel=0.015)


@pytest.mark.parametrize("name, kv_bytes", [
    ("llama3.1-8b", 2 * 32 * 8 * 128 * 2),     # GQA: 8 KV heads, 128 KiB per token
    ("llama2-7b", 2 * 32 * 32 * 128 * 2),      # MHA: 512 KiB per token
    ("llama3.1-70b", 2 * 80 * 8 * 128 * 2),
    ("llama2-70b", 2 * 80 * 8 * 128 * 2),
    ("qwen2.5-32b", 2 * 64 * 8 * 128 * 2),
    ("mixtral-8x7b", 2 * 32 * 8 * 128 * 2),
])
def test_kv_bytes_per_token_follow_the_kv_heads(name, kv_bytes):
    assert model_from_config(load_yaml("model", name)).kv_bytes_per_token == kv_bytes


def test_moe_activates_only_its_routed_experts():
    mixtral = model_from_config(load_yaml("model", "mixtral-8x7b"))
    assert mixtral.num_params / 1e9 == pytest.approx(46.7, rel=0.02)
    assert mixtral.active_params_per_token / 1e9 == pytest.approx(12.9 - 2 * 0.131, rel=0.03)


@pytest.mark.parametrize("name", GPUS)
def test_every_gpu_entry_loads_with_sane_units(name):
    gpu = gpu_from_config(load_yaml("hardware", name))
    assert 1e14 < gpu.peak_flops < 1e16          # FLOP/s
    assert 20e9 < gpu.memory_bytes < 300e9       # bytes
    assert 5e11 < gpu.memory_bandwidth < 1e13    # B/s
    assert 0 < gpu.efficiency.gemm <= 1 and 0 < gpu.efficiency.memory <= 1
    assert gpu.price_per_hour > 0


@pytest.mark.parametrize("name", LINKS)
def test_every_link_loads(name):
    link = link_from_config(load_yaml("network", name))
    assert link.bandwidth > 0 and 0 < link.efficiency <= 1 and link.shared_by in ("gpu", "node")
