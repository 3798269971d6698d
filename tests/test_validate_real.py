"""End to end on the real vLLM CPU deployment: a short light load through both architectures,
simulated with the cpu-core calibration, and the error table written (about 3 minutes on 2 cores).

Marked `real`; start it under `flock /tmp/real_vllm.lock` where other jobs start deployments."""

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.real
pytest.importorskip("vllm")

from experiments.validate import ARCHITECTURES, LATENCIES, PERCENTILES, main  # noqa: E402


def test_a_light_load_validates_end_to_end(tmp_path):
    out = tmp_path / "validation"
    main(["--out", str(out), "--loads", "light=0.5", "--duration-s", "15", "--max-context", "512",
          "real.base_port=18500", "real.nixl_base_port=18600"])
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == len(ARCHITECTURES) * (len(LATENCIES) * len(PERCENTILES) + 1)
    assert set(errors["architecture"]) == set(ARCHITECTURES) and set(errors["load"]) == {"light"}
    assert np.isfinite(errors["rel_error"]).all() and (errors["real"] > 0).all() and (errors["sim"] > 0).all()
    for arch in ARCHITECTURES:
        requests = pd.read_parquet(out / "real" / "light" / f"requests_{arch}.parquet")
        assert (requests["status"] == "completed").all(), requests["reason"].tolist()
    assert (out / "cdf_light.png").stat().st_size > 0 and "Targets" in (out / "report.md").read_text()
