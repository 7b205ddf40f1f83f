"""What must hold after any run, whatever the faults: the checker over every honest
node's chain (its store) and ledger, and the clients' record of what they submitted."""
from __future__ import annotations

from consensus import messages as M
from ledger import tx as txm


def check(nodes: dict, created: dict, quorum: int) -> list[str]:
    """`nodes`: index -> Node for the honest replicas; `created`: tx hash -> raw for every
    transaction a client made. Returns the safety violations found (empty: none)."""
    problems = []
    chains = {i: n.store for i, n in nodes.items()}
    top = max((s.height for s in chains.values()), default=0)
    for h in range(1, top + 1):
        seen = {}
        for i, store in chains.items():
            got = store.get_block(h)
            if got is not None:
                block, cert, root = got
                seen.setdefault((M.block_hash(block["header"]), root), []).append(i)
                d = M.block_hash(block["header"])
                views = {m["body"]["v"] for m in cert}
                if not any(len(M.cert_signers(cert, M.COMMIT, v, h, d)) >= quorum
                           for v in views):
                    problems.append(f"height {h} on node {i}: commit certificate short "
                                    f"of a quorum")
        if len(seen) > 1:
            problems.append(f"agreement: nodes disagree at height {h}: "
                            + "; ".join(f"{d.hex()[:12]}/{r.hex()[:12]} on {ids}"
                                        for (d, r), ids in sorted(seen.items())))
    for i, store in chains.items():
        once = set()
        for h in range(1, store.height + 1):
            block = store.get_block(h)[0]
            for raw in block["txs"]:
                tx = txm.parse(raw)
                if tx.hash not in created:
                    problems.append(f"validity: node {i} committed {tx.id[:12]} at {h}, "
                                    f"which no client submitted")
                elif not tx.verify_signatures():
                    problems.append(f"validity: node {i} committed a badly signed tx at {h}")
                if tx.hash in once:
                    problems.append(f"integrity: node {i} committed {tx.id[:12]} twice")
                once.add(tx.hash)
        led = nodes[i].ledger
        if led.total_money() != led.supply:
            problems.append(f"money: node {i} holds {led.total_money()}, supply {led.supply}")
    return problems


def check_times(nodes: dict, committed_at: dict, cfg, ahead_ms: int) -> list[str]:
    """Chain time on every honest node's chain: never backwards, and never ahead of the
    true time at which the block was first committed by more than `ahead_ms` (scaled to
    chain time)."""
    problems = []
    for i, n in nodes.items():
        prev = cfg.genesis_time
        for h in range(1, n.store.height + 1):
            t = n.store.get_block(h)[0]["header"]["time"]
            if t < prev:
                problems.append(f"time: node {i} block {h} at {t} is before its parent "
                                f"({prev})")
            prev = t
            at = committed_at.get(h)
            if at is not None and t > cfg.chain_time(at + ahead_ms):
                problems.append(f"time: node {i} block {h} at {t} is ahead of the time it "
                                f"was committed ({cfg.chain_time(at)}) by more than the "
                                f"tolerated skew")
    return problems


class CommitLedger:
    """Every COMMIT vote any validator put on the wire, honest or not. A commit
    certificate is any 2f+1 of them for one (view, height, block), which anyone could
    collect; so two certificates for different blocks at one height break agreement even
    if no node executed either of them yet."""

    def __init__(self):
        self.signers: dict[int, dict[tuple, set]] = {}      # h -> (v, d) -> replicas

    def record(self, msg: dict) -> None:
        b = msg["body"]
        if b["t"] == M.COMMIT:
            self.signers.setdefault(b["h"], {}).setdefault((b["v"], b["d"]), set()).add(b["r"])

    def conflicts(self, quorum: int) -> list[str]:
        out = []
        for h in sorted(self.signers):
            blocks = sorted({d for (v, d), rs in self.signers[h].items() if len(rs) >= quorum})
            if len(blocks) > 1:
                out.append(f"agreement: commit certificates for {len(blocks)} different "
                           f"blocks at height {h}: "
                           + ", ".join(d.hex()[:12] for d in blocks))
        return out
