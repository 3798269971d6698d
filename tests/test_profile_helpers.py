"""Pieces of `python -m real profile` that need no vLLM: the served-decode window and the engine
settings a profile runs with."""

import numpy as np

from real.profile import GRIDS, SERVED_DECODE, TRANSFER_PROMPTS, _engine_config, decode_gaps


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


def test_the_engine_settings_come_from_any_serving_config():
    engine = {"max_num_seqs": 8}
    assert _engine_config({"architecture": "monolithic", "engine": engine}) is engine
    assert _engine_config({"architecture": "disaggregated", "prefill": {"engine": engine}}) is engine
    assert _engine_config({"architecture": "compare", "monolithic": {"engine": engine}}) is engine
