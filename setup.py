"""Compiles the simulator's per-event modules with mypyc (sim/compiled.py says which, and why the
`.py` files stay the source of truth); the project's metadata is in pyproject.toml."""

import importlib.util
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup


def _compiled_module():
    spec = importlib.util.spec_from_file_location("_pdsim_compiled", Path(__file__).parent / "sim" / "compiled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compiled = _compiled_module()
compiled.write_digests()
extensions = mypycify(["--config-file=pyproject.toml", *(f"sim/{name}.py" for name in compiled.COMPILED)],
                      group_name=compiled.GROUP)
for extension in extensions:   # without a C compiler the install warns and goes on; sim then runs from source
    extension.optional = True
setup(ext_modules=extensions)
