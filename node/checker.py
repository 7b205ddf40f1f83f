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
