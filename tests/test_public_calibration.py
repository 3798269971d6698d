"""The shipped public calibrations (configs/calibration/*-public.yaml) load, and the errors they
record are what their bundled points (sim/data/calibration/*.json) give again."""

import pytest

from conftest import CONFIGS, load_yaml
from experiments.calibrate_public import POINTS_DIR, calibrate, held_out
from sim.calibrate import inline_gpu, models_of
from sim.calibration import read_calibration_file
from sim.catalog import gpu_from_config
from sim.fit import parameters_of, predict, relative_errors, summarise

NAMES = ["h100-public", "a100-public"]


@pytest.mark.parametrize("name", NAMES)
def test_recorded_errors_are_what_the_bundled_points_give(name):
    record = load_yaml("calibration", name)
    points = read_calibration_file(POINTS_DIR / f"{name}.json").points
    models, mask = models_of(points), held_out(points)
    calibrated = gpu_from_config({**load_yaml("hardware", record["hardware"]), "calibration": name})
    for key, gpu in (("error", calibrated), ("error_with_inline_values", inline_gpu(record["hardware"]))):
        errors = relative_errors(predict(points, gpu, models), points)
        assert summarise(errors[mask]).as_dict() == record[key]["held_out"], key
        assert summarise(errors[~mask]).as_dict() == record[key]["fitted"], key


def test_refitting_the_bundled_points_gives_the_shipped_calibration():
    shipped = load_yaml("calibration", "h100-public")
    refit = calibrate(POINTS_DIR / "h100-public.json", "h100-public")
    for key in ("efficiency", "allreduce_latency_s", "step_overhead_s", "fitted_parameters", "error"):
        assert refit[key] == shipped[key], key


@pytest.mark.parametrize("hardware", ["h100-sxm", "a100-80gb"])
def test_hardware_entries_load_the_calibration_they_name(hardware):
    cfg = load_yaml("hardware", hardware)
    if not cfg.get("calibration"):
        pytest.skip(f"{hardware} names no calibration")
    record = load_yaml("calibration", cfg["calibration"])
    values = parameters_of(gpu_from_config(cfg))
    assert values == {**record["efficiency"], "allreduce_latency_s": record["allreduce_latency_s"],
                      "step_overhead_s": record["step_overhead_s"]}
    assert (CONFIGS / "calibration" / f"{cfg['calibration']}.yaml").is_file()
