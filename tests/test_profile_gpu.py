"""The GPU profiling script runs on the CPU on a tiny shape and writes a valid calibration file.
Skipped where torch is not installed (it belongs to the `real` extra, not the core install)."""

import pytest

from sim.calibration import read_calibration_file

torch = pytest.importorskip("torch")


def test_quick_cpu_profile_writes_a_calibration_file(tmp_path):
    from experiments.profile_gpu import main

    path = main(["--device", "cpu", "--quick", "--model", "tiny-llama", "--hardware", "h100-sxm",
                 "--repeats", "1", "--out", str(tmp_path / "tiny.json")])
    calibration = read_calibration_file(path)
    kinds = {p.kind for p in calibration.points}
    assert kinds == {"linear", "attention", "transfer"}
    assert calibration.metadata["torch_version"] == torch.__version__
    assert all(p.time_s > 0 and p.model == "tiny-llama" for p in calibration.points)
