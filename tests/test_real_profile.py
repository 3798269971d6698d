"""`python -m real profile` on the real vLLM CPU build: a quick grid of engine steps, written as a
calibration file that `sim.calibrate` fits (about 2 minutes on 2 cores). The deployment stages
(served decode, KV hand-offs) run in tests/test_validate_real.py's deployments' place: here they
are off (`real.profile.transfers=false`) to keep the test short.

Marked `real`; start it under `flock /tmp/real_vllm.lock` where other jobs start deployments."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.real
pytest.importorskip("vllm")

from hydra import compose, initialize_config_dir  # noqa: E402

from real.profile import profile  # noqa: E402
from sim.calibrate import main as calibrate_main  # noqa: E402
from sim.calibration import read_calibration_file  # noqa: E402
from sim.experiment import as_dict  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_quick_profile_writes_a_calibration_file_that_fits(tmp_path):
    overrides = ["serving=disaggregated", "real.profile.size=quick", "real.profile.repeats=1",
                 "real.profile.transfers=false",
                 "real.base_port=18700", "real.nixl_base_port=18800"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = as_dict(compose(config_name="deploy", overrides=overrides))
    path = profile(cfg, tmp_path, "test")
    calibration = read_calibration_file(path)
    meta = calibration.metadata
    assert meta["hardware"] == "cpu-core" and meta["model"] == "tiny-llama" and meta["vllm_version"]
    assert meta["peaks_measured"]["gemm_flops_float32"] > 1e9 and meta["source"] == "test"
    kinds = {p.kind for p in calibration.points}
    assert kinds == {"prefill", "decode", "mixed", "overhead"}
    prefill = sorted((p.batch.tokens, p.time_s) for p in calibration.points if p.kind == "prefill"
                     and p.batch.sampled_seqs == 1)
    assert prefill[-1][1] > prefill[0][1]                  # a longer prompt takes longer
    decodes = {p.batch.sampled_seqs: p.time_s for p in calibration.points if p.kind == "decode"}
    assert decodes[8] > decodes[1]                          # a larger batch over longer contexts takes longer
    named = calibrate_main([str(path), "--name", "cpu-test", "--seq-overhead", "--fit-kinds", "prefill,decode,mixed",
                            "--out-dir", str(tmp_path / "calibration")])
    assert named.is_file()
