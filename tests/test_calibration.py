"""Calibration: the file round-trips and refuses malformed input; the fit recovers the parameters
that generated synthetic points; hardware entries load named calibrations."""

import json

import numpy as np
import pytest

from conftest import load_yaml
from sim.calibrate import main as calibrate_main
from sim.calibration import CalibrationFileError, Point, read_calibration_file, write_calibration_file
from sim.catalog import gpu_from_config
from sim.fit import fit, holdout_mask, parameters_of, predict, relative_errors, with_parameters
from sim.step_time import BatchShape

METADATA = {"hardware": "h100-sxm", "model": "llama3.1-8b", "tp": 1, "date": "2026-11-26",
            "vllm_version": None, "torch_version": None, "source": "synthetic"}
TRUE = {"gemm": 0.63, "attention": 0.41, "memory": 0.72, "nvlink": 0.55,
        "allreduce_latency_s": 18e-6, "step_overhead_s": 2.5e-3}


def synthetic_points(seed: int = 0, noise: float = 0.02) -> list[Point]:
    """Whole steps and all-reduces of Llama-3.1-8B on H100 at TP 1/2/4, timed by the model itself
    with TRUE parameters, times (1 + noise) lognormal."""
    shapes = []
    for tp in (1, 2, 4):
        for n in (256, 1024, 4096, 8192):                       # prefills, some after a cached prefix
            shapes += [("prefill", tp, BatchShape.of([(n, 0)], 1)), ("prefill", tp, BatchShape.of([(n, 8 * n)], 1))]
        for seqs in (1, 8, 64, 256):                            # decodes at short and long contexts
            for ctx in (512, 8192):
                shapes.append(("decode", tp, BatchShape.of([(1, ctx)] * seqs, seqs)))
        shapes.append(("mixed", tp, BatchShape.of([(512, 2048)] + [(1, 1000)] * 32, 33)))
    points = [Point(kind, 1.0, "llama3.1-8b", tp, batch) for kind, tp, batch in shapes]
    points += [Point("allreduce", 1.0, "llama3.1-8b", tp, bytes=float(b))
               for tp in (2, 4) for b in (8e3, 1e6, 64e6)]
    gpu = with_parameters(gpu_from_config(load_yaml("hardware", "h100-sxm")), TRUE)
    times = predict(points, gpu, _models()) * np.random.default_rng(seed).lognormal(0.0, noise, len(points))
    return [Point(p.kind, float(t), p.model, p.tp, p.batch, p.bytes) for p, t in zip(points, times)]


def _models():
    from sim.catalog import model_from_config
    return {"llama3.1-8b": model_from_config(load_yaml("model", "llama3.1-8b"))}


def test_fit_recovers_the_parameters_that_generated_the_points(h100):
    points = synthetic_points()
    held = holdout_mask(len(points), 0.2, seed=1)
    result = fit(points, h100, _models(), held)           # starts from the H100 entry's defaults
    assert set(result.free) == set(TRUE)
    for name, value in TRUE.items():
        assert result.parameters[name] == pytest.approx(value, rel=0.08), name
    held_errors = relative_errors(result.predicted_s, points)[result.held_out]
    assert np.median(np.abs(held_errors)) < 0.03          # ~ the 2 % noise


def test_parameters_no_point_depends_on_keep_their_values(h100):
    decodes = [p for p in synthetic_points() if p.kind == "decode" and p.tp == 1]
    result = fit(decodes, h100, _models())
    assert "nvlink" not in result.free and "allreduce_latency_s" not in result.free
    assert result.parameters["nvlink"] == h100.efficiency.nvlink


def test_calibration_file_round_trips(tmp_path):
    points = synthetic_points()[:5] + [Point("transfer", 2e-3, "llama3.1-8b", 1, bytes=1e8, link="d2h")]
    path = write_calibration_file(tmp_path / "c.json", METADATA, points)
    read = read_calibration_file(path)
    assert read.metadata == METADATA and read.points == points


def test_chunks_describe_the_batch(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"metadata": METADATA, "points": [
        {"kind": "mixed", "time_s": 0.01, "chunks": [[512, 100], [1, 30]], "sampled_seqs": 1}]}))
    assert read_calibration_file(path).points[0].batch == BatchShape.of([(512, 100), (1, 30)], 1)


@pytest.mark.parametrize("document, message", [
    ({"points": []}, "'metadata'"),
    ({"metadata": {**METADATA, "tp": None}, "points": [{}]}, "metadata lacks ['tp']"),
    ({"metadata": METADATA, "points": []}, "non-empty list"),
    ({"metadata": METADATA, "points": [{"kind": "warmup", "time_s": 1}]}, "points[0].kind"),
    ({"metadata": METADATA, "points": [{"kind": "decode", "time_s": -1}]}, "points[0].time_s"),
    ({"metadata": METADATA, "points": [{"kind": "decode", "time_s": 1, "tokens": 1}]}, "missing ['attention_pairs'"),
    ({"metadata": METADATA, "points": [{"kind": "decode", "time_s": 1, "chunks": [[1]]}]}, "points[0].chunks"),
    ({"metadata": METADATA, "points": [{"kind": "allreduce", "time_s": 1, "tp": 2}]}, "points[0].bytes"),
    ({"metadata": METADATA, "points": [{"kind": "allreduce", "time_s": 1, "bytes": 8}]}, "points[0].tp"),
    ({"metadata": METADATA, "points": [{"kind": "transfer", "time_s": 1, "bytes": 8}]}, "points[0].link"),
])
def test_malformed_files_name_the_file_and_the_field(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CalibrationFileError) as error:
        read_calibration_file(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(CalibrationFileError, match="not JSON"):
        read_calibration_file(path)


def test_cli_writes_a_calibration_that_a_hardware_entry_loads(tmp_path, monkeypatch, capsys):
    import sim.catalog
    source = write_calibration_file(tmp_path / "c.json", METADATA, synthetic_points())
    path = calibrate_main([str(source), "--name", "synthetic-h100", "--holdout", "0.2",
                           "--out-dir", str(tmp_path / "calibration")])
    out = capsys.readouterr().out
    assert "held out" in out and "median |err|" in out
    monkeypatch.setattr(sim.catalog, "CONFIG_DIR", tmp_path)
    gpu = gpu_from_config({**load_yaml("hardware", "h100-sxm"), "calibration": "synthetic-h100"})
    assert parameters_of(gpu) == pytest.approx(TRUE, rel=0.1)
    with pytest.raises(ValueError, match="fitted for 'h100-sxm'"):
        gpu_from_config({**load_yaml("hardware", "a100-80gb"), "calibration": "synthetic-h100"})
    assert path.parent == tmp_path / "calibration"


CPU_TRUE = {"gemm": 0.09, "attention": 0.2, "memory": 0.6, "step_overhead_s": 3e-3, "seq_overhead_s": 4e-4}


def cpu_points(seed: int = 0, noise: float = 0.02, truth: dict = CPU_TRUE) -> list[Point]:
    """Whole steps of the tiny Llama on one core (cpu-core), timed by the model with `truth`,
    a host cost per sampled sequence included; times (1 + noise) lognormal."""
    from sim.catalog import model_from_config

    shapes = [("prefill", BatchShape.of([(n, 0)] * k, k)) for n in (16, 128, 512, 2048) for k in (1, 4)]
    shapes += [("prefill", BatchShape.of([(n, 0)] * k, k)) for n in (8, 32) for k in (16, 64)]
    shapes += [("decode", BatchShape.of([(1, c)] * b, b)) for b in (1, 4, 16, 64) for c in (128, 2048)]
    shapes += [("mixed", BatchShape.of([(256, 0)] + [(1, 500)] * b, b + 1)) for b in (4, 16)]
    points = [Point(kind, 1.0, "tiny-llama", 1, batch) for kind, batch in shapes]
    gpu = with_parameters(gpu_from_config({**load_yaml("hardware", "cpu-core"), "calibration": None}), truth)
    models = {"tiny-llama": model_from_config(load_yaml("model", "tiny-llama"))}
    times = predict(points, gpu, models) * np.random.default_rng(seed).lognormal(0.0, noise, len(points))
    return [Point(p.kind, float(t), p.model, p.tp, p.batch) for p, t in zip(points, times)], models


def test_fit_recovers_the_host_cost_per_sampled_sequence():
    from sim.fit import PARAMETERS, SEQ_OVERHEAD

    points, models = cpu_points()
    prior = gpu_from_config({**load_yaml("hardware", "cpu-core"), "calibration": None})
    result = fit(points, prior, models, parameters=PARAMETERS + (SEQ_OVERHEAD,))
    assert SEQ_OVERHEAD in result.free
    for name in ("gemm", "step_overhead_s", "seq_overhead_s"):
        assert result.parameters[name] == pytest.approx(CPU_TRUE[name], rel=0.1), name
    without = fit(points, prior, models)                  # the same points, no per-sequence term
    assert SEQ_OVERHEAD not in without.parameters
    with_term = np.abs(relative_errors(result.predicted_s, points))
    without_term = np.abs(relative_errors(without.predicted_s, points))
    assert np.median(with_term) < 0.03 and np.median(without_term) > 2 * np.median(with_term)
    assert without_term.max() > 0.1 > with_term.max()    # without the term, its worst steps are off by over 10 %


def test_fit_recovers_a_kv_read_efficiency_apart_from_memory():
    # decode attention reading its KV at a fifth of the weights' efficiency: only the decode points
    # at two contexts tell it apart; fitting it recovers it, leaving it tied to memory does not fit
    from sim.fit import KV_READ, PARAMETERS, SEQ_OVERHEAD

    truth = CPU_TRUE | {KV_READ: 0.12}
    points, models = cpu_points(truth=truth)
    prior = gpu_from_config({**load_yaml("hardware", "cpu-core"), "calibration": None})
    result = fit(points, prior, models, parameters=PARAMETERS + (SEQ_OVERHEAD, KV_READ))
    assert KV_READ in result.free
    for name in ("memory", "kv_read", "step_overhead_s", "seq_overhead_s"):
        assert result.parameters[name] == pytest.approx(truth[name], rel=0.1), name
    tied = fit(points, prior, models, parameters=PARAMETERS + (SEQ_OVERHEAD,))
    assert KV_READ not in tied.parameters
    worst = [np.abs(relative_errors(r.predicted_s, points)).max() for r in (result, tied)]
    assert worst[0] < 0.06 and worst[1] > 0.15


def test_fit_recovers_the_front_end_cost_from_served_prompts():
    # lone prompts through a server take its front end's 9 ms plus the prompt's step
    from sim.fit import FRONTEND, PARAMETERS, SEQ_OVERHEAD

    truth = CPU_TRUE | {FRONTEND: 9e-3}
    steps, models = cpu_points(truth=truth)
    prompts = [Point("served_prompt", 1.0, "tiny-llama", 1, BatchShape.of([(n, 0)], 1)) for n in (32, 256, 1024, 2048)]
    gpu = with_parameters(gpu_from_config({**load_yaml("hardware", "cpu-core"), "calibration": None}), truth)
    times = predict(prompts, gpu, models) * np.random.default_rng(1).lognormal(0.0, 0.02, len(prompts))
    points = steps + [Point(p.kind, float(t), p.model, p.tp, p.batch) for p, t in zip(prompts, times)]
    prior = gpu_from_config({**load_yaml("hardware", "cpu-core"), "calibration": None})
    result = fit(points, prior, models, parameters=PARAMETERS + (SEQ_OVERHEAD, FRONTEND))
    assert FRONTEND in result.free
    assert result.parameters[FRONTEND] == pytest.approx(9e-3, rel=0.15)
    assert result.parameters["step_overhead_s"] == pytest.approx(truth["step_overhead_s"], rel=0.1)
    # without served prompts nothing depends on it: it keeps the entry's value (0)
    assert fit(steps, prior, models, parameters=PARAMETERS + (SEQ_OVERHEAD, FRONTEND)).parameters[FRONTEND] == 0.0


def test_kv_read_efficiency_slows_only_attention_reads(h100, llama8b):
    from dataclasses import replace

    from sim.step_time import StepTimeModel
    slow = replace(h100, efficiency=replace(h100.efficiency, kv_read=h100.efficiency.memory / 4))
    decode, prompt = BatchShape.of([(1, 8000)] * 64, 64), BatchShape.of([(4000, 0)], 1)
    base, costly = StepTimeModel(llama8b, h100, 1), StepTimeModel(llama8b, slow, 1)
    assert costly.breakdown(decode)["attention"] == pytest.approx(4 * base.breakdown(decode)["attention"])
    assert costly.breakdown(decode)["linear"] == base.breakdown(decode)["linear"]
    assert costly.cost(prompt).time_s == base.cost(prompt).time_s    # prefill attention is compute-bound


def test_a_zero_host_cost_per_sequence_changes_no_step_time(h100, llama8b):
    from dataclasses import replace

    from sim.window_steps import window_steps
    from sim.step_time import StepTimeModel
    batch = BatchShape.of([(512, 0)] + [(1, 900)] * 31, 32)
    base = StepTimeModel(llama8b, h100, 1)
    assert h100.seq_overhead_s == 0.0
    costly = StepTimeModel(llama8b, replace(h100, seq_overhead_s=1e-4), 1)
    assert costly.cost(batch).time_s == pytest.approx(base.cost(batch).time_s + 32e-4, rel=1e-12)
    ends = window_steps(costly, 8, 8000, 5, 0.0)[0]
    assert ends[0] == costly.cost(BatchShape.of([(1, 1000)] * 8, 8)).time_s


@pytest.mark.parametrize("hardware", ["cpu-core", "cpu-core-nixl"])
def test_the_cpu_core_entries_load_their_measured_calibrations(hardware):
    """cpu-core and cpu-core-nixl (one core of this machine; tests/test_catalog checks the GPU
    entries) with the calibrations fitted to python -m real profile: efficiencies are fractions,
    overheads of the order of milliseconds."""
    gpu = gpu_from_config(load_yaml("hardware", hardware))
    record = load_yaml("calibration", f"{hardware}-measured")
    assert record["hardware"] == hardware and record["source"]["metadata"]["vllm_version"]
    assert 1e10 < gpu.peak_flops < 1e12 and 1e9 < gpu.memory_bandwidth < 1e11
    assert all(0 < value <= 1 for value in record["efficiency"].values())
    assert gpu.step_overhead_s == record["step_overhead_s"] and 1e-4 < gpu.step_overhead_s < 0.05
    assert gpu.seq_overhead_s == record["seq_overhead_s"]
    assert record["error"]["fitted"]["median_abs"] < 0.25
