"""The server's side of one SecAgg+ round: four metered stages, dropout handling, decoding.

Sets ``U1 ⊇ U2 ⊇ A`` of Bell et al. (arXiv:2002.06287, §3): ``U1`` sent public keys, ``U2`` sent
encrypted shares, ``A`` sent masked vectors (its members' vectors are summed). A client that
leaves, replies with an error, or sends something malformed is dropped at that stage and the round
goes on while every secret still needed has ``t`` live share holders; otherwise the round is
dropped (:class:`RoundDropped`) and the run goes on with the previous global arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from logging import INFO, WARNING

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from contract import ARRAYS
from contract import secagg as wire
from contract.secagg import SecAggConfig, VectorLayout
from server.metering import ByteLedger
from server.secagg.exchange import Exchange
from server.secagg.outcome import RoundDropped, SecAggOutcome, SecAggSum
from server.secagg.params import RoundParams
from server.secagg.replies import Malformed, check_keys, check_masked, check_share_keys, check_unmask
from server.secagg.reconstruct import Verify, key_check, reconstruct, remove_masks, seed_check, share_index


class SecAggDriver:
    """Runs SecAgg+ rounds on a Grid; every message is metered in ``ledger``.

    Parameters
    ----------
    config : SecAggConfig
        The ``secagg.*`` section.
    ledger : ByteLedger
        The run's byte ledger.
    weighted : bool
        ``w_i = min(num-examples, max-weight)`` if True, else ``w_i = 1`` (``strategy.weighted``).
    timeout : float | None
        Seconds each stage waits for replies (None: until all arrive).
    """

    def __init__(self, config: SecAggConfig, ledger: ByteLedger, *, weighted: bool, timeout: float | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.weighted = weighted
        self.timeout = timeout

    def run_round(self, grid: Grid, server_round: int, messages: Sequence[Message]) -> SecAggOutcome:
        """Run the round for the train ``messages`` the strategy built (one per sampled node).

        Raises
        ------
        ValueError
            If the messages carry different array layouts, or the ``secagg.*`` values cannot work
            for this many clients (the message names the key).
        """
        contents = {int(m.metadata.dst_node_id): m.content for m in messages}
        layouts = {VectorLayout.of(content[ARRAYS]) for content in contents.values()}
        if len(layouts) > 1:
            raise ValueError("SecAgg needs one array layout per round; the train messages differ")
        nodes = sorted(contents)
        if len(nodes) < 2:
            return RoundDropped(server_round, "set-up", len(nodes), 2,
                                f"{len(nodes)} sampled clients < 2: a sum of one client is that client's update")
        params = RoundParams.plan(self.config, server_round=server_round, nodes=nodes, layout=layouts.pop(),
                                  weighted=self.weighted)
        outcome = _Round(params, Exchange(grid, self.ledger, server_round, self.timeout), contents).run()
        if isinstance(outcome, RoundDropped):
            log(WARNING, "SecAgg: %s", outcome)
        else:
            log(INFO, "SecAgg round %d: decoded the sum of %d clients (%d dropped, threshold %d)",
                server_round, len(outcome.survivors), len(outcome.dropped), params.threshold)
        return outcome


class _Round:
    """One round's server state (module docstring for the sets)."""

    def __init__(self, params: RoundParams, exchange: Exchange, contents: dict[int, RecordDict]) -> None:
        self.params = params
        self.ex = exchange
        self.contents = contents
        self.pk1: dict[int, bytes] = {}
        self.pk2: dict[int, bytes] = {}
        self.share_nodes: dict[int, list[int]] = {}  # owner -> the group it shared with, in share order
        self.commitments: dict[int, bytes] = {}
        self.ciphertexts: dict[int, dict[int, bytes]] = {}  # src -> dst -> ciphertext
        self.masked_with: dict[int, set[int]] = {}
        self.public: dict[int, dict[str, int | float]] = {}
        self.rejected_shares: list[tuple[int, int, str]] = []

    def run(self) -> SecAggOutcome:
        t, rnd = self.params.threshold, self.params.server_round
        replied = self._setup(sorted(self.contents))
        u1 = self._prune(replied, lambda n: set(self.params.groups[n]), "set-up")
        if len(u1) < t:
            return self._dropped("set-up", len(replied))
        replied = self._share_keys(u1)
        u2 = self._prune(replied, lambda n: set(self.share_nodes[n]), "share-keys")
        if len(u2) < t:
            return self._dropped("share-keys", len(replied))
        vectors = self._collect(u2)
        active = self._consistent(set(vectors))
        dead = {d for d in u2 - active if any(d in self.masked_with[a] for a in active)}
        short = {n: len(self._holders(n, active, n in active)) for n in active | dead}
        short = {n: k for n, k in short.items() if k < t}
        if len(active) < t or short:
            detail = "; ".join(f"node {n}'s secrets have {k} live holders < threshold {t}" for n, k in sorted(short.items()))
            return self._dropped("collect", len(active), detail)
        total = np.zeros(self.params.layout.size, dtype=np.int64)
        for node in sorted(active):
            total = total + vectors[node].astype(np.int64)
        return self._unmask(active, dead, total, rnd)

    # --- stages ------------------------------------------------------------------------------
    def _setup(self, nodes: list[int]) -> set[int]:
        record = self.params.setup_record()
        good = self.ex.send(wire.SETUP, {n: RecordDict({wire.SECAGG: record}) for n in nodes})
        seen: set[bytes] = set()
        for node, content in sorted(good.items()):
            try:
                pk1, pk2 = check_keys(content.config_records[wire.SECAGG], seen)
            except Malformed as exc:
                self.ex.drop(node, "set-up", str(exc))
                continue
            self.pk1[node], self.pk2[node] = pk1, pk2
        return set(self.pk1)

    def _share_keys(self, alive: set[int]) -> set[int]:
        contents = {}
        for node in sorted(alive):
            group = [n for n in self.params.groups[node] if n in alive]
            self.share_nodes[node] = group
            contents[node] = RecordDict({wire.SECAGG: wire.compact_record({
                wire.ROUND: self.params.server_round, wire.NODES: group,
                wire.PK1_LIST: [self.pk1[n] for n in group], wire.PK2_LIST: [self.pk2[n] for n in group],
            })})
        good = self.ex.send(wire.SHARE_KEYS, contents)
        for node, content in sorted(good.items()):
            try:
                cts, commitment = check_share_keys(content.config_records[wire.SECAGG], set(self.share_nodes[node]) - {node})
            except Malformed as exc:
                self.ex.drop(node, "share-keys", str(exc))
                continue
            self.ciphertexts[node], self.commitments[node] = cts, commitment
        return set(self.ciphertexts)

    def _collect(self, alive: set[int]) -> dict[int, np.ndarray]:
        contents, sources = {}, {}
        for node in sorted(alive):
            sources[node] = [s for s in sorted(alive) if s != node and node in self.ciphertexts[s]]
            content = RecordDict(dict(self.contents[node].items()))
            content[wire.SECAGG] = wire.compact_record({
                wire.ROUND: self.params.server_round, wire.SOURCES: sources[node],
                wire.CIPHERTEXTS: [self.ciphertexts[s][node] for s in sources[node]],
            })
            contents[node] = content
        good = self.ex.send(wire.COLLECT, contents)
        vectors = {}
        for node, content in sorted(good.items()):
            try:
                vector, masked_with, public = check_masked(
                    content, size=self.params.layout.size, modulus_bits=self.params.modulus_bits,
                    sources=set(sources[node]),
                )
            except Malformed as exc:
                self.ex.drop(node, "collect", str(exc))
                continue
            vectors[node], self.masked_with[node], self.public[node] = vector, masked_with, public
        return vectors

    def _unmask(self, active: set[int], dead: set[int], total: np.ndarray, rnd: int) -> SecAggOutcome:
        t = self.params.threshold
        requests = {}
        for node in sorted(active):
            requests[node] = (
                sorted(n for n in active if n == node or n in self.masked_with[node]),
                sorted(d for d in dead if d in self.masked_with[node]),
            )
        good = self.ex.send(wire.UNMASK, {
            node: RecordDict({wire.SECAGG: wire.compact_record({wire.ROUND: rnd, wire.ACTIVE: act, wire.DEAD: dd})})
            for node, (act, dd) in requests.items()
        })
        seed_shares: dict[int, dict[int, bytes]] = {n: {} for n in active}
        key_shares: dict[int, dict[int, bytes]] = {n: {} for n in dead}
        for holder, content in sorted(good.items()):
            try:
                seeds, keys = check_unmask(content.config_records[wire.SECAGG], *requests[holder])
            except Malformed as exc:
                self.rejected_shares.append((holder, -1, str(exc)))
                continue
            for owned, by_owner in ((seeds, seed_shares), (keys, key_shares)):
                for owner, share in owned.items():
                    if share_index(share) != self.share_nodes[owner].index(holder) + 1:
                        self.rejected_shares.append((holder, owner, "share index does not match the holder"))
                    else:
                        by_owner[owner][holder] = share
        seed_secrets: dict[int, bytes] = {}
        for owner, shares in sorted(seed_shares.items()):
            secret = self._reconstruct(owner, shares, seed_check(self.commitments[owner]))
            if secret is None:
                return self._dropped("unmask", len(active), f"node {owner}'s mask seed: {len(shares)} shares, none {t} of them valid")
            seed_secrets[owner] = secret
        dead_keys: dict[int, bytes] = {}
        for owner, shares in sorted(key_shares.items()):
            secret = self._reconstruct(owner, shares, key_check(self.pk1[owner]))
            if secret is None:
                return self._dropped("unmask", len(active), f"dropped node {owner}'s key: {len(shares)} shares, none {t} of them valid")
            dead_keys[owner] = secret
        unmasked = remove_masks(total, seeds=seed_secrets, dead_keys=dead_keys, masked_with=self.masked_with, pk1s=self.pk1,
                                modulus_bits=self.params.modulus_bits)
        layout, q = self.params.layout, self.params.quantiser
        try:
            weight, update_sum, metric_sum = q.decode(unmasked, layout, len(active))
        except ValueError as exc:
            return self._dropped("decode", len(active), str(exc))
        return SecAggSum(
            server_round=rnd,
            weight=weight,
            weighted_sums=layout.unflatten(update_sum),
            metric_sums=dict(zip(layout.metrics, (float(v) for v in metric_sum), strict=True)),
            survivors=tuple(sorted(active)),
            threshold=t,
            error_bound=q.error_bound,
            dropped=tuple(self.ex.dropped),
            public={n: self.public[n] for n in sorted(active)},
            rejected_shares=tuple(self.rejected_shares),
        )

    # --- helpers -----------------------------------------------------------------------------
    def _reconstruct(self, owner: int, shares: dict[int, bytes], verify: Verify) -> bytes | None:
        secret, bad = reconstruct(shares, self.params.threshold, verify)
        self.rejected_shares.extend((holder, owner, "share does not reconstruct the committed secret") for holder in bad)
        return secret

    def _holders(self, node: int, active: set[int], is_active: bool) -> set[int]:
        """Survivors holding a share of ``node``'s secret that the unmask stage needs."""
        holders = {h for h in active if node in self.masked_with[h]}
        return holders | {node} if is_active else holders

    def _consistent(self, active: set[int]) -> set[int]:
        """Drop a survivor that masked with a survivor which did not mask back (that one could not
        decrypt the first one's share), until the pairwise masks of the survivors all cancel."""
        changed = True
        while changed:
            changed = False
            for a in sorted(active):
                lonely = sorted(b for b in self.masked_with[a] & active if a not in self.masked_with[b])
                if lonely:
                    active.discard(a)
                    self.ex.drop(a, "collect", f"node {lonely[0]} could not use its key share")
                    changed = True
        return active

    def _prune(self, alive: set[int], group: Callable[[int], set[int]], stage: str) -> set[int]:
        """Drop nodes with fewer than ``t`` live share-group members, until none is left short."""
        t = self.params.threshold
        alive = set(alive)
        changed = True
        while changed:
            changed = False
            for node in sorted(alive):
                live = len(group(node) & alive)
                if live < t:
                    alive.discard(node)
                    self.ex.drop(node, stage, f"{live} of its share group survive < threshold {t}")
                    changed = True
        return alive

    def _dropped(self, stage: str, survivors: int, detail: str = "") -> RoundDropped:
        t = self.params.threshold
        reason = f"{survivors} survivors < threshold {t}" if survivors < t or not detail else detail
        return RoundDropped(self.params.server_round, stage, survivors, t, reason, tuple(self.ex.dropped))
