"""The frozen-factors part of the message contract: adapter weights sent once, checked every round.

FFA-LoRA freezes A and Fed-SB freezes A and B; aggregation is exact only if every client holds
bit-identical frozen factors (``docs/algorithms.md §9.3``). The server sends them once per node under
:data:`FROZEN_FACTORS` and puts their sha256 (:data:`FROZEN_HASH`) in every message's config; a
node verifies the hash before training and refuses to train on anything else. Metering books the
one-time record under the ``setup`` phase, apart from per-round traffic.
"""

from __future__ import annotations

FROZEN_FACTORS = "frozen-factors"
FROZEN_HASH = "frozen-hash"
FROZEN_CONFIRMED = "frozen-hash-ok"  # reply metric: 1 once the node verified and installed the factors
SETUP_RECORDS = (FROZEN_FACTORS,)  # records metered as one-time set-up traffic

GRADIENT_ESTIMATE = "train.gradient_estimate"  # one-time message: clients reply with summed raw gradients
INIT_EXAMPLES = "init-examples"  # config key: how many local examples the estimate uses
