"""Secure aggregation (SecAgg+) for the linear strategies, on Flower's Message API.

Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020
(arXiv:2002.06287, §3), with the stage structure of Flower's ``SecAggPlusWorkflow`` and Flower's
cryptographic primitives (``flwr.common.secure_aggregation``). The server learns ``Σ w_i·u_i``
and ``Σ w_i`` over the surviving clients, never one client's update or weight.

Message flow of one round (``S`` = server, ``C_i`` = sampled client, group ``G_i`` = the share group)::

    1 set-up       S -> C_i  query.secagg_setup    t, group size, c, b, m, max-weight, weighted
                   C_i -> S                        pk1_i, pk2_i                (fresh ECDH key pairs)
    2 share-keys   S -> C_i  query.secagg_share_keys  {(j, pk1_j, pk2_j) : j in G_i alive}
                   C_i -> S                        for j in G_i: Enc(KA(sk2_i, pk2_j), (i, j, s_ij^seed,
                                                   s_ij^sk1)), sha256(seed_i)  (Shamir t-of-|G_i|)
    3 collect      S -> C_i  train.secagg_collect  the round's train content + ciphertexts for C_i
                   C_i -> S                        y_i = [w_i, w_i q(u_i), w_i q(loss_i)] + PRG(seed_i)
                                                   + Σ_j ±PRG(KA(sk1_i, pk1_j)) mod 2^m, masked-with,
                                                   public protocol metrics
    4 unmask       S -> C_i  query.secagg_unmask   active A ∩ G_i, dropped D ∩ G_i
                   C_i -> S                        seed shares of A, sk1 shares of D (never both)
    S: reconstruct each seed (checked against its commitment) and each dropped sk1 (checked
       against its pk1), Σ_{i∈A} y_i − PRG(seed_i) ± pairwise masks of D, decode.

Every message is booked in the run's ``ByteLedger`` under ``secagg-setup``, ``secagg-share-keys``,
``secagg-collect`` or ``secagg-unmask`` (the train content inside collect as ``train``).
Threat model: honest-but-curious server (as Flower's implementation; no signatures or consistency
checks against a malicious server), clients may drop out or send garbage at any stage.
"""

from server.secagg.driver import SecAggDriver
from server.secagg.outcome import Dropout, RoundDropped, SecAggOutcome, SecAggSum
from server.secagg.setup import check_secagg, secagg_summary, secure_strategy
from server.secagg.strategy import SecAggStrategy

__all__ = [
    "Dropout", "RoundDropped", "SecAggDriver", "SecAggOutcome", "SecAggStrategy", "SecAggSum", "check_secagg",
    "secagg_summary", "secure_strategy",
]
