"""The compiled modules (sim/compiled.py): in use when built, equal to their sources bit for bit,
and kept out when a source changed since the build."""

import importlib
import importlib.machinery
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sim
from sim.compiled import COMPILED, DIGESTS, PURE_PYTHON_VARIABLE

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PURE = os.environ.get(PURE_PYTHON_VARIABLE) == "1"


def _file_of(module: str, package_root: Path) -> tuple[str, str]:
    """Where `module` imports from in a fresh interpreter with `package_root` first on the path, and
    the warnings printed."""
    code = f"import importlib; print(importlib.import_module({module!r}).__file__)"
    child = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True,
                           cwd=package_root, env={**os.environ, "PYTHONPATH": str(package_root)})
    return child.stdout.strip(), child.stderr


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.skipif(PURE, reason=f"{PURE_PYTHON_VARIABLE}=1 runs the sources")
def test_the_installed_build_runs_every_hot_module_compiled():
    assert sim.COMPILED, "no current build: `pip install -e .` compiles the hot modules"
    for name in COMPILED:
        assert _is_extension(importlib.import_module(f"sim.{name}").__file__), name


def _cases():
    """Loads that take every path of the compiled modules: preemption, KV-transfer contention,
    a decode pool short of blocks, random failures with retries and failed pulls."""
    from conftest import compose_config
    from sim.experiment import plan
    from sim.faults import fault_plan
    from sim.run import simulate
    from sim.workload import build_workload
    from test_cluster import STRESS, poisson, spec_for

    preempting = poisson(rate=14, duration=40, prompt=(50, 6000), output=(100, 900), seed=5)
    for overrides in (STRESS[3], STRESS[5]):
        yield " ".join(overrides), simulate(spec_for(*overrides), preempting)
    cfg = compose_config("workload.window.duration_s=200", "workload.rate_scale=6", "network=tcp",
                         "serving.disaggregated.prefill.instances=1")
    workload = build_workload(cfg["workload"], cfg["seed"])
    for architecture, spec in plan(cfg).items():
        yield f"tcp {architecture}", simulate(spec, workload)
    faults = fault_plan({"instance_mtbf_s": 8.0, "instance_mttr_s": 2.0, "kv_transfer_failure_rate": 0.05})
    failing = poisson(rate=10, duration=40, prompt=(200, 3000), output=(20, 300))
    for architecture in ("monolithic", "disaggregated"):
        yield f"faults {architecture}", simulate(spec_for(f"serving={architecture}"), failing, faults=faults, seed=3)


def _run_from_source(out: Path) -> None:
    env = {**os.environ, PURE_PYTHON_VARIABLE: "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    subprocess.run([sys.executable, __file__, str(out)], check=True, cwd=TESTS, env=env)


@pytest.mark.skipif(PURE, reason=f"{PURE_PYTHON_VARIABLE}=1: both sides would run the sources")
def test_compiled_runs_equal_runs_from_source_bit_for_bit(tmp_path):
    from test_fast_forward import assert_identical

    _run_from_source(tmp_path / "source.pkl")
    from_source = pickle.loads((tmp_path / "source.pkl").read_bytes())
    compiled = dict(_cases())
    assert list(compiled) == list(from_source)
    for name, result in compiled.items():
        assert_identical(result, from_source[name])


@pytest.mark.skipif(PURE or not sim.COMPILED, reason="needs a current build")
def test_a_module_edited_after_the_build_sends_all_of_them_to_their_sources(tmp_path):
    copy = tmp_path / "sim"
    shutil.copytree(ROOT / "sim", copy, ignore=shutil.ignore_patterns("__pycache__"))
    path, warnings = _file_of("sim.cluster", tmp_path)
    assert _is_extension(path) and Path(path).parent == copy and "changed since" not in warnings
    with open(copy / "engine.py", "a") as engine:
        engine.write("# edited\n")
    path, warnings = _file_of("sim.cluster", tmp_path)   # not edited itself: it calls engine's code
    assert path == str(copy / "cluster.py")
    assert "sim/engine.py changed since the simulator's compiled modules were built" in warnings
    assert "sim/cluster.py" not in warnings


@pytest.mark.skipif(PURE, reason=f"{PURE_PYTHON_VARIABLE}=1 silences both cases")
def test_without_a_build_the_sources_run_silently_in_a_checkout_and_with_a_warning_after_a_failed_install(tmp_path):
    copy = tmp_path / "sim"
    shutil.copytree(ROOT / "sim", copy, ignore=shutil.ignore_patterns("__pycache__", "*.so", DIGESTS))
    path, warnings = _file_of("sim.engine", tmp_path)   # a plain checkout
    assert path == str(copy / "engine.py") and "compiled modules" not in warnings
    (copy / DIGESTS).write_text("")   # setup.py records the sources before compiling, which then failed
    path, warnings = _file_of("sim.engine", tmp_path)
    assert path == str(copy / "engine.py")
    assert "the simulator's compiled modules were not built" in warnings


if __name__ == "__main__":   # `_run_from_source`'s child
    assert not sim.COMPILED
    Path(sys.argv[1]).write_bytes(pickle.dumps(dict(_cases())))
