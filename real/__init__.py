"""Real vLLM deployments (monolithic and prefill/decode-disaggregated) started from the
simulator's configs, and a trace replayer that measures them into the simulator's tables."""
