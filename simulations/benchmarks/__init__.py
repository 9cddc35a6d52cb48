"""Micro-benchmarks of the aggregation maths (run each as ``python -m simulations.benchmarks.<name>``)."""
