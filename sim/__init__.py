"""SimPy simulator of monolithic and prefill/decode-disaggregated LLM serving."""
