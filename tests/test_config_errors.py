"""Impossible configs are refused before the run, with a message that says what to change."""

import subprocess
import sys

import pytest

from conftest import compose_config
from sim.config import ConfigError
from sim.experiment import plan, run_experiment
from sim.workload import WorkloadError


@pytest.mark.parametrize("overrides, expected", [
    (("model=llama3.1-70b", "serving=monolithic"), "raise serving.tp to"),
    (("serving=monolithic", "serving.engine.gpu_memory_utilization=0.25"), "max_model_len"),
    (("serving=disaggregated", "serving.decode.instances=0"), "serving.decode.instances>=1"),
    (("serving=monolithic", "serving.instances=0"), "serving.instances>=1"),
    (("model=qwen2.5-32b", "serving=monolithic", "serving.tp=3"), "does not divide"),
    (("serving=monolithic", "serving.tp=16"), "tensor parallelism across nodes"),
    (("serving=monolithic", "serving.engine.chunked_prefill=false"), "enable chunked_prefill"),
    (("serving=monolithic", "serving.router=fastest"), "choose one of"),
    (("serving=monolithic", "serving.engine.max_model_len=1000000"), "exceeds"),
    (("serving.monolithic.engine.max_num_seqs=0",), "serving.monolithic.engine.max_num_seqs"),
])
def test_impossible_cluster_is_refused_with_advice(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        plan(compose_config(*overrides))


def test_negative_rate_is_refused():
    with pytest.raises(WorkloadError, match="rate_scale"):
        run_experiment(compose_config("workload.rate_scale=-1"), plot=False)


def test_bad_slo_is_refused():
    with pytest.raises(ConfigError, match="slo"):
        run_experiment(compose_config("slo.ttft_s=0", "workload.max_requests=5"), plot=False)


def test_command_line_prints_the_error_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sim", "serving=disaggregated", "serving.decode.instances=0",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "serving.decode.instances" in done.stderr
    assert "Traceback" not in done.stderr
