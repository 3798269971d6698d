"""Pieces of `python -m real profile` that need no vLLM: the served-decode window and the engine
settings a profile runs with."""

import numpy as np
import pytest

from real.profile import GRIDS, SERVED_DECODE, TRANSFER_PROMPTS, _engine_config, decode_gaps, served_prompt_point


def test_decode_gaps_keep_only_the_steps_where_every_stream_decodes():
    # Stream a starts at 0 and ticks every 10 ms; b joins at 0.05 and a stops at 0.2: the batch of
    # both runs from 0.05 to 0.2, and there the gaps are 20 ms (two streams share a step).
    a = list(np.arange(0.0, 0.05, 0.01)) + list(np.arange(0.05, 0.2001, 0.02))
    b = list(np.arange(0.05, 0.3, 0.02))
    gaps = decode_gaps([a, b])
    assert np.allclose(gaps, 0.02) and len(gaps) == 2 * 7


def test_every_grid_has_each_kind_and_the_quick_one_is_smaller():
    for size in ("default", "quick"):
        assert set(GRIDS[size]) == {"prefill", "decode", "mixed"} and TRANSFER_PROMPTS[size] and SERVED_DECODE[size]
    assert sum(map(len, GRIDS["quick"].values())) < sum(map(len, GRIDS["default"].values()))
    assert len({prompt for _, prompt in SERVED_DECODE["default"]}) >= 2   # contexts apart: kv_read can be fitted


def test_the_engine_settings_come_from_any_serving_config():
    engine = {"max_num_seqs": 8}
    assert _engine_config({"architecture": "monolithic", "engine": engine}) is engine
    assert _engine_config({"architecture": "disaggregated", "prefill": {"engine": engine}}) is engine
    assert _engine_config({"architecture": "compare", "monolithic": {"engine": engine}}) is engine


def test_a_served_prompt_is_a_point_of_one_prompt_that_the_front_end_adds_to():
    from dataclasses import replace

    from sim.calibration import parse_calibration
    from sim.catalog import gpu_from_config, load_config, model_from_config
    from sim.fit import predict

    record = {"model": "tiny-llama", "tp": 1, **served_prompt_point(0.5, 1024, "monolithic server")}
    (point,) = parse_calibration({"metadata": {"hardware": "cpu-core", "model": "tiny-llama", "tp": 1, "date": "x"},
                                  "points": [record]}, "test").points
    assert point.kind == "served_prompt" and point.batch.tokens == 1024 and point.batch.sampled_seqs == 1
    gpu = gpu_from_config(load_config("hardware", "cpu-core"))
    models = {"tiny-llama": model_from_config(load_config("model", "tiny-llama"))}
    without, with_front_end = (predict([point], replace(gpu, frontend_s=f), models)[0] for f in (0.0, 0.009))
    assert with_front_end - without == pytest.approx(0.009)
