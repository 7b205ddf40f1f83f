"""The store's size on disk for an archive node against a pruned one after the same chain.

Two lone validators (the node's own Node and SQLiteStore, a virtual clock, as
scripts/bench_restart.py) are driven in lockstep with the same transactions and ticks,
so they commit the same chain: one keeps every block (archive), the other its last
`--keep` (pruned every 64 blocks, as the daemon does: node/core/pruning.py). Both must
end at the same state root. Then each store's size: node.db plus its WAL while open (what
a running node holds), and node.db alone once closed (SQLite checkpoints the WAL into it).
A pruned store does not shrink, but reuses the pages its deleted blocks freed, so it
stops growing with the chain.

    python scripts/bench_prune.py [--txs N] [--per-block N] [--keep K] [--every N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.stored_chain import _ahead  # noqa: E402  (the tests' chain builder)

from bench_restart import T0, Transfers  # noqa: E402  (this directory)
from lendnet.ledger.keys import Keypair  # noqa: E402
from lendnet.node.core import pruning  # noqa: E402
from lendnet.node.core.node import Genesis, Node  # noqa: E402
from lendnet.node.core.shell import carry_out  # noqa: E402
from lendnet.node.daemon import home as H  # noqa: E402
from lendnet.node.daemon.sqlstore import SQLiteStore  # noqa: E402
from tests.stored_chain import Alone  # noqa: E402

CHAIN = "lendnet-bench-restart"        # bench_restart's Transfers sign for this chain


class Pruning(Alone):
    def __init__(self, pruner: pruning.Pruner | None):
        self.pruner, self.seconds = pruner, 0.0

    def committed(self, e) -> None:
        if self.pruner is not None:
            t = time.perf_counter()
            self.pruner.after_commit(e.height)
            self.seconds += time.perf_counter() - t


def size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def run(d: str, txs: int, per_block: int, keep: int, every: int) -> dict:
    kp = Keypair.from_name("bench-prune")
    workload = Transfers(txs, per_step=per_block, backlog=4 * per_block)
    genesis = Genesis(CHAIN, T0, workload.balances(), (kp.pubkey,),
                      dict(H.DAEMON_PARAMS, snapshot_every=every), lending=H.dev_lending())
    pruning.check_keep_blocks(keep, genesis.config())
    paths = {"archive": f"{d}/archive.db", "pruned": f"{d}/pruned.db"}
    stores = {k: SQLiteStore(p) for k, p in paths.items()}
    try:
        nodes = {k: Node(genesis, kp, s, T0 * 1000) for k, s in stores.items()}
        shells = {"archive": Pruning(None),
                  "pruned": Pruning(pruning.Pruner(stores["pruned"], keep))}
        now, waiting, idle, started = T0 * 1000, [], 0, time.perf_counter()
        lead = nodes["archive"]
        while idle < 40:                    # a second of chain time with nothing new
            fresh, waiting = waiting + workload.step(lead.ledger), []
            for raw in fresh:
                took = [n.receive_tx(raw) for n in nodes.values()]
                if not took[0] and _ahead(lead, raw):
                    waiting.append(raw)
            now += 25
            before = lead.height
            for k, n in nodes.items():
                carry_out(n, n.tick(now), shells[k])
            done = workload.done_creating and not waiting
            idle = idle + 1 if done and lead.height == before else 0
        build_s = time.perf_counter() - started
        roots = {k: s.get_block(s.height)[2] for k, s in stores.items()}
        assert roots["archive"] == roots["pruned"], "the two nodes' chains differ"
        out = {"txs": txs, "per_block": per_block, "keep": keep, "snapshot_every": every,
               "height": lead.height, "build_s": round(build_s, 1),
               "prune_s": round(shells["pruned"].seconds, 3)}
        for k, s in stores.items():
            out[k] = {"blocks_kept": s.height - s.base, "first_block": s.base + 1,
                      "bytes_open": size(paths[k])}
    finally:
        for s in stores.values():
            s.close()
    for k, p in paths.items():
        out[k]["bytes_closed"] = size(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txs", type=int, default=50_000)
    ap.add_argument("--per-block", type=int, default=5,
                    help="transactions the clients sign each 25 ms tick (fewer: more, "
                         "smaller blocks; 5 makes blocks of about 10)")
    ap.add_argument("--keep", type=int, default=1_000, help="K: the pruned node's blocks")
    ap.add_argument("--every", type=int, default=1_000, help="snapshot_every")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = run(d, args.txs, args.per_block, args.keep, args.every)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{out['txs']:,} transactions in {out['height']:,} blocks (built in "
          f"{out['build_s']} s; pruning took {out['prune_s']} s of it)")
    for k in ("archive", "pruned"):
        o = out[k]
        print(f"{k:8} keeps {o['blocks_kept']:>6,} blocks (from height {o['first_block']:,}):"
              f" {o['bytes_open'] / 2**20:8.2f} MiB open (node.db + WAL), "
              f"{o['bytes_closed'] / 2**20:8.2f} MiB closed")


if __name__ == "__main__":
    main()
