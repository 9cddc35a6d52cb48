"""Benchmarks: aggregation maths, DP-SGD cost, accuracy against ε (run each as ``python -m simulations.benchmarks.<name>``)."""
