"""Does a flood of API requests starve consensus? Measured, not asserted.

Starts a 4-node cluster on 127.0.0.1 and runs `lendnet bench` (transfers at a fixed rate)
three times: alone; beside a flood of API reads (listings of 1,000 records, status,
catch-up answers of 256 blocks) from 127.0.0.2, a client the rate limit applies to; and
beside the same flood from 127.0.0.1, an address the nodes exempt from the limit (what
an unlimited API would do). Prints, for each, committed tx/s and commit latency, and
what the flood got (answers by HTTP status).

    python scripts/api_flood.py [--txs 3000] [--rate 300] [--clients 32] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
from collections import Counter
from pathlib import Path

import aiohttp

from lendnet.node.harness.bench import bench
from lendnet.node.harness.cluster import Cluster

PATHS = ("/v1/applications?status=open&limit=1000", "/v1/loans?limit=1000", "/v1/status",
         "/v1/sync/1?count=256", "/v1/offers?limit=1000")


def flood(urls: list[str], source: str, clients: int, stop: threading.Event,
          answers: Counter) -> threading.Thread:
    """`clients` concurrent readers from address `source`, each asking as fast as it is
    answered, until `stop`; answers counted by status."""
    async def run():
        connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            async def reader(i: int):
                n = i
                while not stop.is_set():
                    url = urls[n % len(urls)] + PATHS[n % len(PATHS)]
                    n += 1
                    try:
                        async with http.get(url) as r:
                            await r.read()
                            answers[r.status] += 1
                    except (aiohttp.ClientError, TimeoutError):
                        answers["error"] += 1
            await asyncio.gather(*(reader(i) for i in range(clients)))
    t = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    t.start()
    return t


def measure(txs: int, rate: float, clients: int, source: str | None) -> dict:
    """One bench run on a fresh cluster (bench spends its funding account), with a flood
    from `source` beside it (None: no flood)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cluster"
        cluster = Cluster(root)
        stop, answers, t = threading.Event(), Counter(), None
        try:
            members = cluster.up(4, wait_s=60, config={"api_exempt": ["127.0.0.1"]})
            if source:
                t = flood([m.api for m in members], source, clients, stop, answers)
            out = bench(txs=txs, rate=rate, workload="transfer", nodes_from=root)
        finally:
            stop.set()
            if t is not None:
                t.join(60)
            cluster.down()
    keep = ("tx_per_s", "committed", "offered", "p50_ms", "p99_ms", "cpu_s_per_tx")
    return {**{k: out[k] for k in keep}, "flood": {str(k): v for k, v in answers.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--txs", type=int, default=3_000)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs = {"alone": measure(a.txs, a.rate, a.clients, None),
            "flood, rate-limited (127.0.0.2)": measure(a.txs, a.rate, a.clients, "127.0.0.2"),
            "flood, exempt (127.0.0.1)": measure(a.txs, a.rate, a.clients, "127.0.0.1")}
    if a.json:
        print(json.dumps({"txs": a.txs, "rate": a.rate, "clients": a.clients, "runs": runs},
                         indent=2))
        return
    for name, r in runs.items():
        print(f"{name:34} {r['tx_per_s']:>8} tx/s committed {r['committed']}/{r['offered']}"
              f"  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  flood answers {r['flood']}")


if __name__ == "__main__":
    main()
