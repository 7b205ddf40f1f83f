"""What must hold after any run, whatever the faults: the checker over every honest
node's chain (its store) and ledger, and the clients' record of what they submitted."""
from __future__ import annotations

from lendnet.consensus import messages as M
from lendnet.ledger import tx as txm


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
                if not M.commit_certified(cert, h, M.block_hash(block["header"]), quorum):
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
            header = block["header"]
            if nodes[i].root_at(header["exec_height"]) != header["exec_root"]:
                problems.append(f"validity: node {i} committed block {h}, whose header "
                                f"claims a state root at height {header['exec_height']} "
                                f"that is not the chain's")
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


def vote_key(body: dict) -> tuple | None:
    """(type, view, height) -> what was voted, for the messages a replica may sign only
    once per slot; None for the others (a VIEW-CHANGE may be signed again, a FETCH ...)."""
    t = body["t"]
    if t == M.PROPOSE:
        return (t, body["v"], body["h"]), M.block_hash(body["header"])
    if t in (M.PREPARE, M.COMMIT):
        return (t, body["v"], body["h"]), body["d"]
    if t == M.CHECKPOINT:
        return (t, 0, body["h"]), body["d"] + body["root"]
    return None


class VoteLedger:
    """Every vote any validator put on the wire, honest or not.

    - A commit certificate is any 2f+1 COMMITs for one (view, height, block), which anyone
      could collect; so two certificates for different blocks at one height break
      agreement even if no node executed either of them yet.
    - An honest validator signs at most one value per slot (PROPOSE, PREPARE, COMMIT per
      view and height; CHECKPOINT per height), across crashes and restarts: two are a
      broken vote rule or votes that left before they were persisted."""

    def __init__(self):
        self.signers: dict[int, dict[tuple, set]] = {}      # h -> (v, d) -> replicas
        self.votes: dict[tuple, bytes] = {}                 # (signer, t, v, h) -> value
        self.twice: list[tuple] = []                        # (signer, slot, first, second)

    def record(self, msg: dict) -> None:
        b = msg["body"]
        got = vote_key(b)
        if got is None:
            return
        (t, v, h), value = got
        if t == M.COMMIT:
            self.signers.setdefault(h, {}).setdefault((v, value), set()).add(b["r"])
        key = (b["r"], t, v, h)
        first = self.votes.setdefault(key, value)
        if first != value and len(self.twice) < 100:
            self.twice.append((b["r"], (t, v, h), first, value))

    def conflicts(self, quorum: int) -> list[str]:
        out = []
        for h in sorted(self.signers):
            blocks = sorted({d for (v, d), rs in self.signers[h].items() if len(rs) >= quorum})
            if len(blocks) > 1:
                out.append(f"agreement: commit certificates for {len(blocks)} different "
                           f"blocks at height {h}: "
                           + ", ".join(d.hex()[:12] for d in blocks))
        return out

    def double_votes(self, honest: set) -> list[str]:
        return [f"integrity: honest validator {r} signed two different {t}s for view {v} "
                f"height {h} ({a.hex()[:12]}, then {b.hex()[:12]})"
                for r, (t, v, h), a, b in self.twice if r in honest]


class EvidenceWatch:
    """What an honest replica must report: it was handed two different signed PROPOSEs
    of one view and height from that view's primary (or two different PREPAREs or COMMITs
    from one replica) while both were messages it acts on — its view, above its executed
    height, inside its window — and it said nothing."""

    def __init__(self):
        self.first: dict[tuple, bytes] = {}       # (node, kind, signer, v, h) -> value
        self.expected: dict[tuple, str] = {}      # (node, kind, signer, v[, h]) -> what
        self.reported: set[tuple] = set()

    def delivered(self, i: int, before: tuple, rep, msg: dict) -> None:
        """Replica `rep` of honest node i took `msg` (well signed); `before` is its
        (view, executed height, stable checkpoint) as the message arrived."""
        b = msg["body"]
        t = b["t"]
        if t not in (M.PROPOSE, M.PREPARE, M.COMMIT):
            return
        view, height, low = before
        v, h, r = b["v"], b["h"], b["r"]
        if v > view or not (h > height and low < h <= low + rep.cfg.window):
            return                                # held for a later view, or not acted on
        if t == M.COMMIT or (v == view and (t == M.PREPARE or r == rep.vals.primary(v))):
            value = M.block_hash(b["header"]) if t == M.PROPOSE else b["d"]
            first = self.first.setdefault((i, t, r, v, h), value)
            if first != value:
                key = (i, "equivocation", r, v, h) if t == M.PROPOSE else \
                    (i, "conflicting-vote", r, v, t)
                self.expected.setdefault(key, f"node {i} was handed two different {t}s of "
                                              f"view {v} height {h} signed by {r}")

    def forget(self, i: int) -> None:
        """Node i restarted: it remembers only what it persisted, and votes are not
        evidence it must still hold."""
        self.first = {k: v for k, v in self.first.items() if k[0] != i}

    def emitted(self, i: int, e) -> None:
        b = e.messages[-1]["body"]
        self.reported.add((i, e.kind, e.replica, b["v"], b["h"]) if e.kind == "equivocation"
                          else (i, e.kind, e.replica, b["v"], b["t"]))

    def missing(self) -> list[str]:
        return [f"evidence: {what} and reported nothing"
                for key, what in sorted(self.expected.items()) if key not in self.reported]
