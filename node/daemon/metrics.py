"""The node's Prometheus metrics (prometheus-client, one registry per node so tests can
run several nodes in one process)."""
from __future__ import annotations

from lendnet.ledger import keys
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .transport import STATS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Live:
    """Values read at scrape time from where they already live."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self):
        p2p = self.m.p2p
        for name in STATS:
            yield CounterMetricFamily(f"lendnet_p2p_{name}", f"peer frames: {name}",
                                      value=p2p.get(name, 0))
        yield CounterMetricFamily("lendnet_signatures_verified",
                                  "ed25519 verifications done (process)",
                                  value=keys.stats["verified"])
        yield CounterMetricFamily("lendnet_signature_memo_hits",
                                  "signatures found already verified (process)",
                                  value=keys.stats["memo_hits"])
        yield GaugeMetricFamily("lendnet_peers", "outbound peer links up",
                                value=self.m.peer_count())
        rep = self.m.replica()
        if rep is not None:
            yield CounterMetricFamily("lendnet_block_requests_throttled",
                                      "peers' requests for blocks left unanswered (over "
                                      "their byte budget)", value=rep.throttled)


class Metrics:
    def __init__(self, peer_count=lambda: 0, replica=lambda: None):
        self.registry = r = CollectorRegistry()
        self.p2p: dict = {}
        self.peer_count = peer_count
        self.replica = replica
        self.height = Gauge("lendnet_height", "last committed height", registry=r)
        self.view = Gauge("lendnet_view", "current consensus view", registry=r)
        self.view_changes = Gauge("lendnet_view_changes", "view changes started", registry=r)
        self.mempool = Gauge("lendnet_mempool_txs", "transactions waiting", registry=r)
        self.commits = Counter("lendnet_blocks_committed", "blocks committed", registry=r)
        self.committed_txs = Counter("lendnet_txs_committed", "transactions committed",
                                     registry=r)
        self.messages = Counter("lendnet_consensus_messages", "consensus messages received",
                                registry=r)
        self.rejected_messages = Counter("lendnet_consensus_messages_rejected",
                                         "messages malformed, badly signed or not from a "
                                         "validator", registry=r)
        self.rejected_txs = Counter("lendnet_txs_rejected", "client transactions refused",
                                    registry=r)
        self.rate_limited = Counter("lendnet_api_rate_limited", "API requests refused "
                                    "with 429: over a client's rate", registry=r)
        self.regossiped = Counter("lendnet_txs_regossiped", "waiting transactions passed "
                                  "on again", registry=r)
        self.evidence = Counter("lendnet_evidence", "byzantine evidence recorded (in the "
                                "store: kept across restarts)", registry=r)
        self.refused = Counter("lendnet_proposals_refused", "proposals this validator "
                               "would not vote for, by reason", ["reason"], registry=r)
        self.commit_latency = Histogram("lendnet_commit_latency_seconds",
                                        "from a client's submission to this node's commit",
                                        buckets=LATENCY_BUCKETS, registry=r)
        # a pruned node's prunes (node/core/pruning.py): blocks forgotten, time spent
        self.pruned_blocks = Counter("lendnet_blocks_pruned", "old blocks deleted by "
                                     "pruning (keep_blocks)", registry=r)
        self.prune_seconds = Counter("lendnet_prune_seconds", "time spent pruning old "
                                     "blocks", registry=r)
        r.register(_Live(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
