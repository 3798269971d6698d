"""Per-pool hardware: a disaggregated cluster with a different GPU for prefill and decode."""

import pytest

from sim.config import ConfigError
from sim.experiment import plan
from sim.run import simulate
from sim.workload import build_workload
from tests.conftest import compose_config


def test_prefill_pool_names_its_own_gpu_and_cost_follows():
    cfg = compose_config("serving=disaggregated", "+serving.prefill.hardware=a100-80gb")
    spec = plan(cfg)["disaggregated"]
    assert spec.pool("prefill").gpu.name == "a100-80gb"
    assert spec.pool("decode").gpu.name == "h100-sxm"
    assert spec.cost_per_hour == pytest.approx(2.21 + 4.25)
    workload = build_workload(compose_config("workload=poisson", "workload.duration_s=5")["workload"], 0)
    result = simulate(spec, workload)
    assert (result.requests["status"] == "completed").all()
    assert set(result.instances["gpu"]) == {"a100-80gb", "h100-sxm"}


def test_unknown_pool_hardware_is_refused_with_the_choices():
    cfg = compose_config("serving=disaggregated", "+serving.decode.hardware=tpu")
    with pytest.raises(ConfigError, match="h100-sxm"):
        plan(cfg)
