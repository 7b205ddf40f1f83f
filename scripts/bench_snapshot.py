"""Time a snapshot of a large state: make it, check it, restore it (ledger/snapshot.py).

The state is a lendnet genesis with `--accounts` funded addresses, then `--loans` loans
registered, offered, applied for and funded through ordinary signed blocks (built
before the clock starts). Timed, each in this one process:

  manifest   the group hashes and root (the state's root is already up to date)
  make       every chunk, packed to `--chunk-bytes`
  check      every chunk checked against the manifest (Assembly.add), as a peer's would be
  restore    check_manifest + every chunk + the State rebuilt and its root recomputed
  ledger     Ledger.from_state (the wake-up heaps rebuilt)

and then one block of transfers is applied to the original and the restored ledger,
whose roots must agree.

    python scripts/bench_snapshot.py [--accounts N] [--loans N] [--chunk-bytes N] [--json]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from lendnet.ledger import keys, lending, snapshot as snap
from lendnet.ledger.keys import Keypair

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ledger import CHAIN, T0, Bench  # noqa: E402  (a sibling script, not a package)


def build(accounts: int, loans: int) -> Bench:
    """A Bench over a genesis of `accounts` derived addresses plus the loans' keys."""
    b = Bench.__new__(Bench)
    b.keys = [Keypair.from_name(f"bench-{i}") for i in range(loans)]
    b.lender = Keypair.from_name("bench-lender")
    balances = {keys.derive_address(b"bench-snapshot", i.to_bytes(4, "big")): 10**9 + i
                for i in range(accounts)}
    balances |= {k.address: 10**12 for k in b.keys} | {b.lender.address: 10**15}
    b.ledger = lending.genesis(CHAIN, balances, time=T0)
    b.nonces = {}
    b.time = T0
    if loans:
        b.setup_loans(b.keys)
    return b


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--loans", type=int, default=1_000)
    ap.add_argument("--chunk-bytes", type=int, default=snap.DEFAULT_CHUNK_BYTES)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.accounts < 0 or a.loans < 0:
        ap.error("counts must not be negative")

    (b, build_s) = timed(lambda: build(a.accounts, a.loans))
    led = b.ledger
    root = led.state_root()
    rows = sum(len(t) for t in led.state.tables.values())

    m, manifest_s = timed(lambda: snap.manifest(led.state))
    chunks, make_s = timed(lambda: list(snap.chunks(led.state, a.chunk_bytes)))

    def check_all():
        asm = snap.Assembly(m)
        for c in chunks:
            asm.add(c)
        return asm
    _, check_s = timed(check_all)
    state, restore_s = timed(lambda: snap.restore(m, chunks, root))
    assert state.root() == root
    restored, ledger_s = timed(lambda: lending.from_state(CHAIN, state))
    assert (restored.height, restored.time) == (led.height, led.time)

    # the next block, on both: the same root
    raws = [b.sign(b.keys[i % len(b.keys)], "transfer",
                   to=b.keys[(i + 1) % len(b.keys)].address, amount=1 + i)
            for i in range(min(100, len(b.keys)))] if len(b.keys) > 1 else []
    from lendnet.ledger import tx as txm
    txs = [txm.parse(r) for r in raws]
    r1 = led.apply_block(led.height + 1, led.time + 5, txs)
    r2 = restored.apply_block(restored.height + 1, restored.time + 5, txs)
    assert r1.state_root == r2.state_root

    out = {
        "accounts": a.accounts, "loans": a.loans, "rows": rows,
        "chunk_bytes": a.chunk_bytes, "chunks": len(chunks),
        "snapshot_bytes": sum(map(len, chunks)),
        "largest_chunk": max(map(len, chunks)),
        "split_chunks": sum(1 for c in chunks if c[-1:] and _is_part(c)),
        "manifest_groups": sum(len(t[1]) for t in m["tables"]),
        "manifest_bytes": len(snap.codec.encode(m)),
        "seconds": {"build_state": round(build_s, 3), "manifest": round(manifest_s, 3),
                    "make": round(make_s, 3), "check": round(check_s, 3),
                    "restore": round(restore_s, 3), "ledger": round(ledger_s, 3)},
        "next_block_same_root": r1.state_root == r2.state_root,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    s = out["seconds"]
    print(f"{a.accounts} accounts + {a.loans} loans: {rows} rows, "
          f"{out['snapshot_bytes']:,} bytes in {len(chunks)} chunks of <= {a.chunk_bytes}")
    print(f"manifest {s['manifest']} s, make {s['make']} s, check {s['check']} s, "
          f"restore {s['restore']} s, ledger {s['ledger']} s (state built in "
          f"{s['build_state']} s); next block same root: {out['next_block_same_root']}")


def _is_part(chunk: bytes) -> bool:
    sections = snap.codec.decode(chunk, max_size=snap.MAX_CHUNK_BYTES)[2]
    return len(sections) == 1 and not (sections[0][2] == 0 and sections[0][3])


if __name__ == "__main__":
    main()
