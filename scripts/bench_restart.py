"""Time a node's restart from its store: from the latest snapshot versus a full replay.

A lone validator (tests/stored_chain.py's loop: the node's own Node and SQLiteStore, the
simulator's lending workload as clients, a virtual clock) commits a chain of about
`--txs` transactions with a snapshot every `--every` blocks. Then, each in this process:

  snapshot   Node(...) over the store as it is: restore the latest snapshot, replay
             the blocks after it
  replay     Node(...) over a copy of the store without its snapshots: replay from
             genesis (what every restart did before snapshots)

and both must reach the root stored with the last block.

    python scripts/bench_restart.py [--txs N] [--every N] [--burst N]
                                    [--workload lending|transfer|accounts] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_state import fresh_address  # noqa: E402
from tests.stored_chain import run_alone  # noqa: E402  (the tests' chain builder)

from lendnet.ledger.keys import Keypair  # noqa: E402
from lendnet.node.core.node import Genesis, Node  # noqa: E402
from lendnet.node.daemon import home as H  # noqa: E402
from lendnet.node.daemon.sqlstore import SQLiteStore  # noqa: E402
from lendnet.node.harness.workload import Client, LendingWorkload  # noqa: E402

T0 = 1_767_225_600
CHAIN = "lendnet-bench-restart"


class Transfers:
    """Plain transfers among `senders` clients, `per_step` at a time while fewer than
    `backlog` wait: the lending workload scans its tables every step, too slow for a
    chain of 100,000 transactions. `fresh`: each to a new address instead, so every
    transaction adds an account (a state as big as the chain is long)."""

    def __init__(self, total: int, senders: int = 1_000, per_step: int = 250,
                 backlog: int = 2_000, fresh: bool = False):
        self.clients = [Client(f"transfer-{i}", 1) for i in range(senders)]
        self.total, self.per_step, self.backlog = total, per_step, backlog
        self.fresh = fresh
        self.created, self.turn = 0, 0

    def balances(self) -> dict[str, int]:
        return {c.kp.address: 10**12 for c in self.clients}

    @property
    def done_creating(self) -> bool:
        return self.created >= self.total

    def step(self, ledger) -> list[bytes]:
        if self.done_creating:
            return []
        waiting = sum(c.next_nonce - ledger.account(c.kp.address)[1] for c in self.clients)
        if waiting >= self.backlog:
            return []
        out = []
        for _ in range(min(self.per_step, self.total - self.created)):
            c = self.clients[self.turn % len(self.clients)]
            c.settle(ledger)        # else each client keeps every transaction it signed
            to = (fresh_address(self.turn) if self.fresh
                  else self.clients[(self.turn * 7 + 1) % len(self.clients)].kp.address)
            self.turn += 1
            out.append(c.sign(CHAIN, "transfer", to=to, amount=1 + self.turn % 1_000))
        self.created += len(out)
        return out


WORKLOADS = ("lending", "transfer", "accounts")


def build(path: str, txs: int, every: int, burst: int,
          kind: str) -> tuple[Genesis, Keypair, dict]:
    """A chain of about `txs` transactions of a kind of WORKLOADS (accounts: transfers
    to fresh addresses) in the store at `path`; (genesis, the validator's key, counts)."""
    kp = Keypair.from_name("bench-restart")
    workload = (LendingWorkload(CHAIN, 1, random.Random(1), txs) if kind == "lending"
                else Transfers(txs, fresh=kind == "accounts"))
    genesis = Genesis(CHAIN, T0, workload.balances(), (kp.pubkey,),
                      dict(H.DAEMON_PARAMS, snapshot_every=every), lending=H.dev_lending())
    store = SQLiteStore(path)
    t = time.perf_counter()
    try:
        node = Node(genesis, kp, store, T0 * 1000)
        run_alone(node, workload, txs, burst)
        committed = sum(len(store.get_block(h)[0]["txs"]) for h in range(1, store.height + 1))
        info = {"height": store.height, "txs": committed,
                "snapshots": store.snapshot_heights(), "build_s": time.perf_counter() - t,
                "state_rows": sum(len(getattr(node.ledger.state, n))
                                  for n in node.ledger.state.TABLES)}
    finally:
        store.close()
    return genesis, kp, info


def restart(genesis: Genesis, kp: Keypair, path: str) -> tuple[float, list[str]]:
    store = SQLiteStore(path)
    try:
        t = time.perf_counter()
        node = Node(genesis, kp, store, T0 * 1000)
        took = time.perf_counter() - t
        assert node.ledger.state_root() == store.get_block(store.height)[2]
        return took, node.recovery
    finally:
        store.close()


def report(info: dict, as_json: bool) -> None:
    """Print a benchmark's figures: one JSON object, or a line each."""
    if as_json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txs", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=1_000)
    ap.add_argument("--burst", type=int, default=1,
                    help="workload steps per 25 ms tick (more: fewer, fuller blocks)")
    ap.add_argument("--workload", choices=WORKLOADS, default="lending")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path, bare = f"{d}/node.db", f"{d}/bare.db"
        genesis, kp, info = build(path, args.txs, args.every, args.burst,
                                 args.workload)
        shutil.copy(path, bare)
        with sqlite3.connect(bare) as db:
            db.execute("DELETE FROM snapshot_chunks")
            db.execute("DELETE FROM snapshots")
        db.close()
        info["snapshot_restart_s"], info["snapshot_log"] = restart(genesis, kp, path)
        info["replay_restart_s"], _ = restart(genesis, kp, bare)
        info["every"], info["burst"], info["workload"] = args.every, args.burst, args.workload
    report(info, args.json)


if __name__ == "__main__":
    main()
