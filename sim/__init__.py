"""SimPy simulator of monolithic and prefill/decode-disaggregated LLM serving."""

from sim.compiled import guard

COMPILED = guard()   # whether the hot modules run compiled (sim/compiled.py); before any of them is imported
