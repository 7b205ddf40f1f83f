"""The benchmark sweep behind docs/BENCHMARKS.md: one run on this machine.

1. Offered load against commit latency (the throughput-latency curve), 4 validators.
2. Committed throughput against cluster size (4, 7, 10 validators) at one offered load.
3. Time from the primary's SIGKILL to the next commit of a new transaction.
4. Catch-up: a validator stopped while the others commit N transactions, then restarted;
   transactions replayed per second until it reaches their height.

Writes a JSON file (and a PNG plot if matplotlib is installed: pip install '.[plot]').

    python scripts/sweep.py --out docs/benchmarks.json [--quick]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import keys  # noqa: E402
from ledger import tx as txm  # noqa: E402
from node.bench import bench  # noqa: E402
from node.client import NodeClient  # noqa: E402
from node.cluster import Cluster  # noqa: E402

CHAIN = "lendnet-dev"


def load_curve(rates: list[int], txs: int, workload: str) -> list[dict]:
    out = []
    for rate in rates:
        r = bench(4, max(txs, rate * 8), rate, workload)
        out.append({k: r[k] for k in ("rate", "offered_tx_per_s", "tx_per_s", "p50_ms",
                                      "p90_ms", "p99_ms", "max_ms", "blocks_per_s",
                                      "avg_batch", "cpu_s_per_tx", "refused")})
        print(f"  load {rate}/s: {out[-1]}", flush=True)
    return out


def by_size(sizes: list[int], rate: int, txs: int) -> list[dict]:
    out = []
    for n in sizes:
        r = bench(n, txs, rate, "transfer")
        out.append({"nodes": n, **{k: r[k] for k in ("tx_per_s", "p50_ms", "p99_ms",
                                                     "blocks_per_s", "avg_batch",
                                                     "cpu_s_per_tx")}})
        print(f"  {n} nodes: {out[-1]}", flush=True)
    return out


def _transfer(api: NodeClient, kp, to: str) -> str:
    raw = txm.sign(txm.build(kp, CHAIN, "transfer", api.account(kp.address)["nonce"],
                             to=to, amount=1), [kp]).raw
    return api.submit(raw)


def primary_kill(tmp: Path) -> dict:
    c = Cluster(tmp / "kill")
    try:
        members = c.up(4, wait_s=60)
        apis = [NodeClient(m.api, timeout=3) for m in members]
        alice, bob = keys.Keypair.from_name("alice"), keys.Keypair.from_name("bob")
        apis[1].wait_committed(_transfer(apis[1], alice, bob.address))
        primary = apis[1].status()["primary"]
        survivor = apis[(primary + 1) % 4]
        c.kill_member(f"node{primary}", signal.SIGKILL)
        t0 = time.monotonic()
        h = _transfer(survivor, alice, bob.address)
        survivor.wait_committed(h, 60)
        took = time.monotonic() - t0
        return {"seconds_to_next_commit": round(took, 2),
                "view_after": survivor.status()["view"]}
    finally:
        c.down()


def catch_up(tmp: Path, txs: int, rate: int) -> dict:
    c = Cluster(tmp / "catchup")
    try:
        members = c.up(4, wait_s=60)
        c.kill_member("node3", signal.SIGTERM)
        r = bench(4, txs, rate, "transfer", nodes_from=tmp / "catchup")
        top = NodeClient(members[0].api).status()["height"]
        c.start_member("node3")
        t0 = time.monotonic()
        lagging = NodeClient(members[3].api, timeout=3)
        lagging.wait_height(top, timeout=3_600)
        took = time.monotonic() - t0
        return {"missed_txs": r["committed"], "missed_blocks": top,
                "seconds": round(took, 2), "tx_per_s": round(r["committed"] / took, 1),
                "blocks_per_s": round(top / took, 1)}
    finally:
        c.down()


def plot(result: dict, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install '.[plot]'): no plot"
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    curve = result["load_curve"]
    a.plot([x["tx_per_s"] for x in curve], [x["p50_ms"] for x in curve], "o-", label="p50")
    a.plot([x["tx_per_s"] for x in curve], [x["p99_ms"] for x in curve], "s-", label="p99")
    a.set_xlabel("committed tx/s (4 validators)")
    a.set_ylabel("commit latency, ms")
    a.set_yscale("log")
    a.legend()
    sizes = result["by_size"]
    b.bar([str(x["nodes"]) for x in sizes], [x["tx_per_s"] for x in sizes])
    b.set_xlabel("validators")
    b.set_ylabel("committed tx/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks.json"))
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    a = ap.parse_args()
    q = a.quick
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("throughput-latency curve", flush=True)
        result["load_curve"] = load_curve([100, 200] if q else [100, 200, 400, 600, 800],
                                          1_000 if q else 3_000, "transfer")
        print("cluster size", flush=True)
        result["by_size"] = by_size([4, 7] if q else [4, 7, 10], 200, 1_000 if q else 3_000)
        print("primary killed", flush=True)
        result["primary_kill"] = primary_kill(tmp)
        print(f"  {result['primary_kill']}", flush=True)
        print("catch-up", flush=True)
        result["catch_up"] = catch_up(tmp, 2_000 if q else 50_000, 500)
        print(f"  {result['catch_up']}", flush=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}; plot: {plot(result, a.out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
