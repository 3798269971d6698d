"""Sweeps, benchmarks and capacity studies built on the simulator."""
