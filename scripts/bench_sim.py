"""Benchmark of the deterministic simulator: how fast seeds can be hammered.

Runs `--seeds` seeds of a 4-validator (or `--validators`) simulation with the chosen
faults and a lending workload of `--txs` transactions, in this one process, and prints:
simulated runs per second, committed transactions per simulated second (what the
protocol achieved on the virtual clock, faults included), committed transactions per
real second (what the simulator costs), and the real time of each run. `--json` prints
the same figures as one JSON object. Every run is also checked; a failing seed is
reported, since a fast wrong answer is not a figure.

    python scripts/bench_sim.py                       # 1,000 txs, all faults, 5 seeds
    python scripts/bench_sim.py --txs 200 --seeds 20 --faults none --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from lendnet.ledger import keys
from lendnet.node.sim.simulation import FAULT_CLASSES, Simulation


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--txs", type=int, default=1_000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1, help="first seed")
    ap.add_argument("--faults", choices=["none", *FAULT_CLASSES, "all"], default="all")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not (4 <= a.validators <= 16 and 1 <= a.txs <= 100_000 and 1 <= a.seeds <= 10_000):
        ap.error("validators 4-16, txs 1-100000, seeds 1-10000")

    runs, failed = [], []
    for seed in range(a.seed, a.seed + a.seeds):
        before = dict(keys.stats)
        t0 = time.perf_counter()
        sim = Simulation(seed, validators=a.validators, faults=a.faults, txs=a.txs)
        r = sim.run()
        real = time.perf_counter() - t0
        if not r.ok:
            failed.append(seed)
        runs.append({"seed": seed, "real_s": round(real, 3), "sim_s": round(r.sim_ms / 1000, 3),
                     "height": r.height, "committed_txs": r.committed_txs,
                     "view_changes": r.view_changes,
                     "signatures_verified": keys.stats["verified"] - before["verified"],
                     "signature_memo_hits": keys.stats["memo_hits"] - before["memo_hits"]})
    real = sum(r["real_s"] for r in runs)
    simulated = sum(r["sim_s"] for r in runs)
    txs = sum(r["committed_txs"] for r in runs)
    out = {
        "validators": a.validators, "faults": a.faults, "txs": a.txs, "seeds": a.seeds,
        "runs_per_s": round(len(runs) / real, 3),
        "committed_tx_per_sim_s": round(txs / simulated, 1),
        "committed_tx_per_real_s": round(txs / real, 1),
        "real_s_per_run": {"median": round(statistics.median(r["real_s"] for r in runs), 3),
                           "max": max(r["real_s"] for r in runs)},
        "seeds_failed": failed,
        "runs": runs,
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{a.validators} validators, faults {a.faults}, {a.txs} txs per run, "
              f"{a.seeds} seeds")
        for r in runs:
            print(f"  seed {r['seed']:>5}: {r['real_s']:6.3f} s real, {r['sim_s']:7.3f} s "
                  f"simulated, height {r['height']:>5}, {r['view_changes']} view changes, "
                  f"{r['signatures_verified']} signatures verified "
                  f"({r['signature_memo_hits']} memo hits)")
        print(f"runs per second:                    {out['runs_per_s']}")
        print(f"committed tx per simulated second:  {out['committed_tx_per_sim_s']}")
        print(f"committed tx per real second:       {out['committed_tx_per_real_s']}")
        print(f"real seconds per run (median, max): {out['real_s_per_run']['median']}, "
              f"{out['real_s_per_run']['max']}")
        print(f"seeds failed:                       {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
