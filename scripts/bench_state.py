"""Measure the ledger state on disk: a node's RSS as its state grows, and its restart
time as its chain grows.

A lone validator's real `Node` over a real `SQLiteStore` executes and stores blocks of
plain transfers, each to a fresh address (so every transaction adds an account row),
built directly (signed transactions in blocks, executed and flushed as the daemon does;
no consensus rounds: they cost the same whatever the state holds). At each checkpoint it
prints the process's resident memory (VmRSS, /proc/self/status) and then times a
restart: a second `Node(...)` over the store, until it is ready, in this process.

    python scripts/bench_state.py [--accounts 100000,1000000] [--block 2000]
                                  [--memory] [--cache-rows N] [--json]

`--memory` keeps the state in memory as before issue 19 (the store does not keep it), for
comparison: its restart replays the chain from genesis (or the latest snapshot).
Snapshots are off (snapshot_every=0): making one holds the whole snapshot's chunks, which
is measured separately (see docs/NODE.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lendnet.ledger import tx as txm
from lendnet.ledger.keys import Keypair
from lendnet.node.core.node import Genesis, Node
from lendnet.node.daemon import home as H
from lendnet.node.daemon.sqlstore import SQLiteStore

T0 = 1_767_225_600
CHAIN = "lendnet-bench-state"
SENDERS = 500


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class WithoutState:
    """The store as before issue 19: it keeps blocks, not the state (Node then holds the
    whole state in memory and replays at start)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __getattr__(self, name):
        if name in ("open_state", "put_state_base"):
            raise AttributeError(name)
        return getattr(self._store, name)


def fresh_address(i: int) -> str:
    return "ln" + hashlib.sha256(b"bench-state:%d" % i).hexdigest()[:40]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", default="100000,1000000",
                    help="checkpoints: new accounts committed (comma-separated)")
    ap.add_argument("--block", type=int, default=2_000, help="transfers per block")
    ap.add_argument("--memory", action="store_true", help="state in memory (before)")
    ap.add_argument("--cache-rows", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    marks = sorted(int(x) for x in args.accounts.split(","))
    senders = [Keypair(hashlib.sha256(b"bench-state-sender:%d" % i).digest())
               for i in range(SENDERS)]
    kp = Keypair.from_name("bench-state-validator")
    genesis = Genesis(CHAIN, T0, {s.address: 10**15 for s in senders}, (kp.pubkey,),
                      dict(H.DAEMON_PARAMS, snapshot_every=0))
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    path = str(work / "node.db")

    def open_store():
        store = SQLiteStore(path, state_cache_rows=args.cache_rows)
        return store, (WithoutState(store) if args.memory else store)

    store, view = open_store()
    node = Node(genesis, kp, view, T0 * 1000)
    nonces = [0] * SENDERS
    made, h, out = 0, 0, []
    t_build = time.perf_counter()
    for mark in marks:
        while made < mark:
            raws = []
            for _ in range(min(args.block, mark - made)):
                i = made % SENDERS
                body = txm.build(senders[i], CHAIN, "transfer", nonces[i],
                                 to=fresh_address(made), amount=1)
                raws.append(txm.sign(body, [senders[i]]).raw)
                nonces[i] += 1
                made += 1
            h += 1
            header = {"height": h, "time": T0 + h, "prev": node.block_hash(h - 1).hex()}
            node.execute(h, {"header": header, "txs": raws}, [])
            node._results.pop(h)                  # (no Committed effect to carry it)
            node.flush()
        rss = rss_mib()
        accounts = len(node.ledger.state.accounts)
        root = node.ledger.state_root()
        build_s = time.perf_counter() - t_build
        store.close()
        node = None
        store, view = open_store()
        t = time.perf_counter()
        node = Node(genesis, kp, view, T0 * 1000)
        restart_s = time.perf_counter() - t
        assert node.ledger.state_root() == root and node.height == h
        row = {"accounts_created": made, "accounts": accounts, "height": h,
               "state": "memory" if args.memory else "disk", "rss_mib": round(rss, 1),
               "restart_s": round(restart_s, 3), "rss_after_restart_mib": round(rss_mib(), 1),
               "build_s": round(build_s, 1), "recovery": node.recovery,
               "db_mib": round(store.stats()["bytes"] / 2**20, 1)}
        out.append(row)
        if not args.json:
            print(f"{row['state']:6} {made:>9} accounts (height {h}): RSS {row['rss_mib']} MiB,"
                  f" restart {row['restart_s']} s (RSS after {row['rss_after_restart_mib']}"
                  f" MiB), store {row['db_mib']} MiB, built in {row['build_s']} s",
                  flush=True)
    store.close()
    shutil.rmtree(work)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
