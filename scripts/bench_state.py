"""Measure the ledger state on disk: a node's RSS as its state grows, and its restart
time as its chain grows.

A lone validator's real `Node` over a real `SQLiteStore` executes and stores blocks of
plain transfers, each to a fresh address (so every transaction adds an account row),
built directly (signed transactions in blocks, executed and flushed as the daemon does;
no consensus rounds: they cost the same whatever the state holds). At each checkpoint it
prints the resident memory (VmRSS, /proc/self/status) of the process that built the
last stretch (it opened the store, as a restarted node does, and committed up to the
checkpoint), then times a restart: `Node(...)` over the store, until it is ready, and its
RSS. Each in a fresh process, so one measurement's garbage is not the next one's RSS.

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
import subprocess
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


def build_to(path: str, mark: int, block: int, cache_rows: int, memory: bool) -> dict:
    """In this process: open the store (a restart), commit blocks of `block` transfers to
    fresh addresses until `mark` accounts were created, and report the RSS there."""
    senders, kp, genesis = chain()
    store = SQLiteStore(path, state_cache_rows=cache_rows)
    node = Node(genesis, kp, WithoutState(store) if memory else store, T0 * 1000)
    made, h = sum(node.ledger.account(s.address)[1] for s in senders), node.height
    nonces = [node.ledger.account(s.address)[1] for s in senders]
    t = time.perf_counter()
    while made < mark:
        raws = []
        for _ in range(min(block, mark - made)):
            i = made % SENDERS
            body = txm.build(senders[i], CHAIN, "transfer", nonces[i],
                             to=fresh_address(made), amount=1)
            raws.append(txm.sign(body, [senders[i]]).raw)
            nonces[i] += 1
            made += 1
        h += 1
        header = {"height": h, "time": T0 + h, "prev": node.block_hash(h - 1).hex()}
        node.execute(h, {"header": header, "txs": raws}, [])
        node._results.pop(h)                      # (no Committed effect to carry it)
        node.flush()
    out = {"accounts_created": made, "accounts": len(node.ledger.state.accounts),
           "height": h, "rss_mib": round(rss_mib(), 1),
           "build_s": round(time.perf_counter() - t, 1),
           "root": node.ledger.state_root().hex()}
    store.close()
    return out


def restart(path: str, cache_rows: int, memory: bool) -> dict:
    """In this process: open the store as a node starting does, timed."""
    _, kp, genesis = chain()
    store = SQLiteStore(path, state_cache_rows=cache_rows)
    t = time.perf_counter()
    node = Node(genesis, kp, WithoutState(store) if memory else store, T0 * 1000)
    took = time.perf_counter() - t
    out = {"restart_s": round(took, 3), "rss_after_restart_mib": round(rss_mib(), 1),
           "recovery": node.recovery, "root": node.ledger.state_root().hex(),
           "db_mib": round(store.stats()["bytes"] / 2**20, 1)}
    store.close()
    return out


def chain() -> tuple[list[Keypair], Keypair, Genesis]:
    senders = [Keypair(hashlib.sha256(b"bench-state-sender:%d" % i).digest())
               for i in range(SENDERS)]
    kp = Keypair.from_name("bench-state-validator")
    genesis = Genesis(CHAIN, T0, {s.address: 10**15 for s in senders}, (kp.pubkey,),
                      dict(H.DAEMON_PARAMS, snapshot_every=0))
    return senders, kp, genesis


def child(*args: str) -> dict:
    """Run this script in a fresh process (so one measurement's garbage is not the next
    one's RSS) and take the JSON it prints."""
    out = subprocess.run([sys.executable, __file__, *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", default="100000,1000000",
                    help="checkpoints: new accounts committed (comma-separated)")
    ap.add_argument("--block", type=int, default=2_000, help="transfers per block")
    ap.add_argument("--memory", action="store_true", help="state in memory (before)")
    ap.add_argument("--cache-rows", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--build-to", type=int, help=argparse.SUPPRESS)   # (the children)
    ap.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_to is not None or args.restart:
        print(json.dumps(build_to(args.path, args.build_to, args.block, args.cache_rows,
                                  args.memory) if args.build_to is not None
                         else restart(args.path, args.cache_rows, args.memory)))
        return
    marks = sorted(int(x) for x in args.accounts.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    flags = ["--path", str(work / "node.db"), "--block", str(args.block),
             "--cache-rows", str(args.cache_rows)] + (["--memory"] if args.memory else [])
    out = []
    try:
        for mark in marks:
            built = child("--build-to", str(mark), *flags)
            again = child("--restart", *flags)
            assert again.pop("root") == built.pop("root")
            row = {**built, **again, "state": "memory" if args.memory else "disk"}
            out.append(row)
            if not args.json:
                print(f"{row['state']:6} {row['accounts_created']:>9} accounts (height "
                      f"{row['height']}): RSS {row['rss_mib']} MiB, restart "
                      f"{row['restart_s']} s (RSS {row['rss_after_restart_mib']} MiB), "
                      f"store {row['db_mib']} MiB, built in {row['build_s']} s", flush=True)
    finally:
        shutil.rmtree(work)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
