"""Which of the simulator's modules run compiled, and the guard that keeps a stale build out.

The modules of `COMPILED` hold the per-event work (engines, schedulers, decode windows, KV
pools, routers, the KV network, the cluster's request flow). `setup.py` compiles them with mypyc
into one extension library (`GROUP`) at install time, and records a digest of each module's
source in `DIGESTS`. A compiled module computes what its source computes, bit for bit
(tests/test_compiled.py); it only runs faster, mostly because its attribute reads and calls
between compiled functions skip the interpreter. Modules with numba kernels stay out (numba
compiles a function from its Python code), which is why a kernel lives apart from the code that
calls it (sim/window_steps.py).

The `.py` files stay the source of truth, and they run as they are, through the finder
installed by `use_sources`, when

- `PDSIM_PURE_PYTHON=1` is set (profiling with cProfile, a debugger, a quick edit-and-run);
- no build exists: silently in a plain checkout on `PYTHONPATH` (as `experiments/benchmark_speed.py
  --at` makes), with a warning after an install whose compilation failed (no C compiler:
  setup.py lets the install go on);
- any of them changed since the build: compiled modules call each other directly, so one
  stale module makes the whole group stale. A warning names the changed files and how to
  rebuild (`pip install -e .`).

This module imports nothing of `sim`: `setup.py` loads it on its own, and `sim/__init__.py`
runs `guard()` before any compiled module can be imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
COMPILED = ("cluster", "decode_window", "engine", "events", "kv_cache", "kv_transfer", "metrics", "prefix_cache",
            "request", "router", "scheduler")
GROUP = "sim._native"          # mypyc's shared library: sim/_native__mypyc.<abi>.so
DIGESTS = "compiled_sources.sha256"
PURE_PYTHON_VARIABLE = "PDSIM_PURE_PYTHON"


def source_digests() -> dict[str, str]:
    """sha256 of each compiled module's source, as it is now."""
    return {name: hashlib.sha256((PACKAGE_DIR / f"{name}.py").read_bytes()).hexdigest() for name in COMPILED}


def write_digests() -> None:
    """Record the sources a build compiles (setup.py, before it compiles them)."""
    lines = [f"{digest}  {name}.py\n" for name, digest in source_digests().items()]
    (PACKAGE_DIR / DIGESTS).write_text("".join(lines))


def _built_digests() -> dict[str, str] | None:
    path = PACKAGE_DIR / DIGESTS
    if not path.exists():
        return None
    return {file.removesuffix(".py"): digest for digest, file in (line.split() for line in path.read_text().splitlines())}


def _is_built() -> bool:
    """Whether the group's library and every compiled module's extension exist (a build without a
    C compiler leaves none; setup.py lets the install go on)."""
    def exists(name: str) -> bool:
        return any((PACKAGE_DIR / f"{name}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)

    return exists(f"{GROUP.rpartition('.')[2]}__mypyc") and all(exists(name) for name in COMPILED)


class _SourceFinder:
    """Finds the `.py` of a compiled module ahead of its extension (import prefers extensions)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "sim" or name not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, PACKAGE_DIR / f"{name}.py")


def use_sources() -> None:
    """From now on, the compiled modules import from their `.py` files."""
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


def guard() -> bool:
    """Decide, once per process, whether the compiled modules run; True if they do."""
    if os.environ.get(PURE_PYTHON_VARIABLE) == "1":
        use_sources()
        return False
    built = _built_digests()
    if not _is_built():
        if built is not None:   # setup.py ran (it records the sources first), and compiling failed
            warnings.warn("the simulator's compiled modules were not built (pip install -v shows why; mypyc needs a "
                          "C compiler and Python's headers): running them from source (same results, slower)",
                          stacklevel=2)
        use_sources()
        return False
    changed = [f"sim/{name}.py" for name, digest in source_digests().items() if (built or {}).get(name) != digest]
    if changed:
        warnings.warn(f"{', '.join(changed)} changed since the simulator's compiled modules were built: running "
                      "them all from source (same results, slower). Rebuild with `pip install -e .`", stacklevel=2)
        use_sources()
        return False
    return True
