"""Aggregation maths on plain numpy arrays: no Flower records, no torch (``docs/algorithms.md``).

One concept per module; the Flower strategies in :mod:`strategies` call them:

- :mod:`.averaging`: aggregation weights and the per-key weighted mean (FedIT, every strategy);
- :mod:`.deviation`: FedIT's relative deviation from exact aggregation (``dev_rel``);
- :mod:`.residual`: the FedEx-LoRA residual and its exact factored forms;
- :mod:`.hadamard`: ABBA's exact Hadamard-product residual (Khatri–Rao factors);
- :mod:`.stacking`: FLoRA's stacked factors;
- :mod:`.shared_factor`: FFA-LoRA's ``B``-only mean over a bit-identical shared ``A``;
- :mod:`.latent`: Fed-SB's ``R`` averaging, with rank-heterogeneous clients;
- :mod:`.transport`: a base-weight delta as dense or exact factors, and its orientation;
- :mod:`.residual_log`: the versioned cumulative base deltas a base-changing strategy keeps;
- :mod:`.numerics`: dtype and shape checks, float64 sums.

Notation: ``docs/algorithms.md §1``.
"""
