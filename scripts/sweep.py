"""The benchmark sweep behind docs/BENCHMARKS.md: one run on this machine.

1. Offered load against commit latency (the throughput-latency curve), 4 validators.
2. Saturation: transfers and VM repayments offered as fast as accepted for about 60 s.
3. Committed throughput against cluster size (4, 7, 10 validators) at one offered load.
4. Time from the primary's SIGKILL to the next commit of a new transaction (3 runs);
   and a view change under full load: 10 validators, blocks of up to 2,000 transactions,
   the primary killed while every mempool is full.
5. Catch-up: a validator stopped while the others commit N transactions, then restarted;
   transactions replayed per second until it reaches their height.
6. Memory: node RSS sampled while a cluster commits 1,000,000 transfers.

Writes a JSON file (and a PNG plot if matplotlib is installed: pip install '.[plot]').

    python scripts/sweep.py --out docs/benchmarks.json [--quick] [--only SECTION ...]
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.harness.bench import bench
from lendnet.node.daemon.client import ApiError, NodeClient
from lendnet.node.harness.cluster import Cluster

CHAIN = "lendnet-dev"
ROOT = Path(__file__).resolve().parent.parent


SECTIONS = ("load_curve", "saturation", "by_size", "primary_kill", "view_change_loaded",
            "catch_up", "memory")
KEYS = ("rate", "offered_tx_per_s", "tx_per_s", "seconds", "p50_ms", "p90_ms", "p99_ms",
        "max_ms", "blocks_per_s", "avg_batch", "cpu_s_per_tx", "refused")


def load_curve(rates: list[int], seconds: int, workload: str) -> list[dict]:
    out = []
    for rate in rates:
        r = bench(4, max(5_000, rate * seconds), rate, workload)
        out.append({k: r[k] for k in KEYS})
        print(f"  load {rate}/s: {out[-1]}", flush=True)
    return out


def saturation(workloads: dict[str, int]) -> list[dict]:
    """Each workload offered as fast as the nodes accept (per-account windows)."""
    out = []
    for workload, txs in workloads.items():
        r = bench(4, txs, 0, workload)
        out.append({"workload": workload, **{k: r[k] for k in KEYS},
                    "peak_rss_mib": r["peak_rss_mib"]})
        print(f"  {workload}: {out[-1]}", flush=True)
    return out


def by_size(sizes: list[int], rate: int, txs: int) -> list[dict]:
    out = []
    for n in sizes:
        r = bench(n, txs, rate, "transfer")
        out.append({"nodes": n, **{k: r[k] for k in KEYS}})
        print(f"  {n} nodes: {out[-1]}", flush=True)
    return out


def memory(txs: int, rate: int) -> dict:
    """RSS per node against transactions committed, in one long run."""
    r = bench(4, txs, rate, "transfer", settle_s=120)
    samples = r["rss_mib_by_committed"]
    at_100k = next((s for s in samples if s[0] >= txs // 10), samples[0])
    last = samples[-1]
    growth = {n: round(100 * (last[1][n] - at_100k[1][n]) / at_100k[1][n], 1)
              for n in last[1] if at_100k[1].get(n)}
    return {"txs": txs, "rate": rate, "tx_per_s": r["tx_per_s"], "committed": r["committed"],
            "rss_at_tenth": at_100k, "rss_at_end": last, "growth_pct": growth,
            "samples": samples}


def _transfer(api: NodeClient, kp, to: str) -> str:
    raw = txm.sign(txm.build(kp, CHAIN, "transfer", api.account(kp.address)["nonce"],
                             to=to, amount=1), [kp]).raw
    return api.submit(raw)


def primary_kill(tmp: Path, runs: int) -> dict:
    out = []
    for run in range(runs):
        c = Cluster(tmp / f"kill{run}")
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
            out.append(round(time.monotonic() - t0, 2))
            print(f"  run {run + 1}: {out[-1]} s to the next commit, "
                  f"view {survivor.status()['view']}", flush=True)
        finally:
            c.down()
    return {"seconds_to_next_commit": out, "median": sorted(out)[len(out) // 2]}


def view_change_loaded(tmp: Path, nodes: int, block_txs: int, txs: int) -> dict:
    """Kill the primary of an `nodes`-validator cluster whose blocks hold up to
    `block_txs` transactions while a benchmark keeps every mempool full; time from the
    kill to the first block committed in a later view, and what that view committed."""
    root = tmp / "vc-loaded"
    c = Cluster(root)
    load = None
    try:
        members = c.up(nodes, wait_s=120, params={"max_block_txs": block_txs})
        apis = [NodeClient(m.api, timeout=10) for m in members]
        load = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "bench", "--nodes-from",
                                 str(root), "--txs", str(txs), "--rate", "0", "--workload",
                                 "transfer", "--json"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        st = apis[1].status()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:      # until blocks are full and mempools deep
            st = apis[1].status()
            top = apis[1].get(f"/v1/blocks/{st['height']}") if st["height"] else {"txs": []}
            if len(top["txs"]) >= block_txs and st["mempool"] >= 2 * block_txs:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the load never filled a block: {st}")
        old_view, old_height, mempool = st["view"], st["height"], st["mempool"]
        primary = st["primary"]
        survivor = apis[(primary + 1) % nodes]
        c.kill_member(f"node{primary}", signal.SIGKILL)
        t0 = time.monotonic()
        while time.monotonic() < t0 + 300:
            st = survivor.status()
            if st["view"] > old_view and st["normal"] and st["height"] > old_height:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"no commit in a new view within 300 s: {st}")
        took = time.monotonic() - t0
        first = survivor.get(f"/v1/blocks/{st['height']}")
        survivor.wait_height(st["height"] + 10, timeout=120)
        after = [len(survivor.get(f"/v1/blocks/{h}")["txs"])
                 for h in range(st["height"] + 1, st["height"] + 11)]
        print(f"  {took:.2f} s from the kill to a commit in view {st['view']}; "
              f"blocks after it: {after}", flush=True)
        return {"validators": nodes, "max_block_txs": block_txs,
                "mempool_at_kill": mempool, "seconds_to_commit_in_new_view": round(took, 2),
                "new_view": st["view"], "first_block_txs": len(first["txs"]),
                "next_blocks_txs": after}
    finally:
        if load is not None:
            load.kill()
            load.wait()
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
        while True:                            # the process is up: Python, store, links
            try:
                start = lagging.status()["height"]
                break
            except (OSError, ApiError):
                time.sleep(0.02)
        up = time.monotonic() - t0
        lagging.wait_height(top, timeout=3_600, interval=0.02)
        took = time.monotonic() - t0
        return {"missed_txs": r["committed"], "missed_blocks": top,
                "seconds": round(took, 2), "start_s": round(up, 2),
                "height_when_up": start,
                "tx_per_s": round(r["committed"] / took, 1),
                "replay_tx_per_s": round(r["committed"] / (took - up), 1),
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
    fig, (a, b, m) = plt.subplots(1, 3, figsize=(15, 4))
    curve = result["load_curve"]
    a.plot([x["tx_per_s"] for x in curve], [x["p50_ms"] for x in curve], "o-", label="p50")
    a.plot([x["tx_per_s"] for x in curve], [x["p99_ms"] for x in curve], "s-", label="p99")
    a.set_xlabel("committed tx/s (4 validators, transfers)")
    a.set_ylabel("commit latency, ms")
    a.set_yscale("log")
    a.legend()
    sizes = result["by_size"]
    b.bar([str(x["nodes"]) for x in sizes], [x["p50_ms"] for x in sizes])
    b.set_xlabel(f"validators ({sizes[0]['rate']} tx/s offered)")
    b.set_ylabel("p50 commit latency, ms")
    samples = result["memory"]["samples"]
    for node in samples[-1][1]:
        m.plot([s[0] for s in samples], [s[1].get(node, 0) for s in samples], label=node)
    m.set_xlabel("transactions committed")
    m.set_ylabel("RSS, MiB")
    m.set_ylim(bottom=0)
    m.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks.json"))
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    ap.add_argument("--only", choices=SECTIONS, action="append",
                    help="run only this section (repeatable), replacing it in --out")
    a = ap.parse_args()
    q = a.quick
    only = set(a.only or SECTIONS)
    result = json.loads(a.out.read_text()) if a.only and a.out.exists() else {}
    result["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {
            "load_curve": lambda: load_curve(
                [250, 500] if q else [250, 500, 1_000, 1_500, 2_000, 2_500], 4 if q else 10,
                "transfer"),
            "saturation": lambda: saturation({"transfer": 5_000, "repay": 3_000} if q else
                                             {"transfer": 140_000, "repay": 75_000}),
            "by_size": lambda: by_size([4, 7] if q else [4, 7, 10], 500,
                                       2_000 if q else 8_000),
            "primary_kill": lambda: primary_kill(tmp, 1 if q else 3),
            "view_change_loaded": lambda: view_change_loaded(
                tmp, 4 if q else 10, 2_000, 20_000 if q else 200_000),
            "catch_up": lambda: catch_up(tmp, 5_000 if q else 50_000, 2_000),
            # as fast as accepted: 1,000,000 commits in about ten minutes
            "memory": lambda: memory(20_000 if q else 1_000_000, 0),
        }
        for name in SECTIONS:
            if name in only:
                print(name.replace("_", " "), flush=True)
                result[name] = runs[name]()
                shown = {k: v for k, v in result[name].items() if k != "samples"} \
                    if type(result[name]) is dict else "done"
                print(f"  {shown}", flush=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}; plot: {plot(result, a.out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
