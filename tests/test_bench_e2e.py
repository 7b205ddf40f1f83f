"""`lendnet bench` end to end: it starts a real 4-node cluster on 127.0.0.1, loads it with
VM repayments and transfers through POST /v1/txs, stops the cluster, and reports figures
that are consistent with each other. (How fast is for scripts/sweep.py, not a test.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_reports_what_a_real_cluster_committed():
    run = subprocess.run(
        [sys.executable, "-m", "lendnet.cli", "bench", "--nodes", "4", "--txs", "400",
         "--rate", "200", "--workload", "mixed", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["nodes"] == 4 and out["workload"] == "mixed"
    assert out["offered"] == out["committed"] == 400 and out["refused"] == 0
    assert 0 < out["tx_per_s"] <= out["offered_tx_per_s"] * 1.5
    assert 0 < out["p50_ms"] <= out["p90_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert out["blocks_per_s"] > 0 and out["avg_batch"] >= 1 and out["cpu_s_per_tx"] > 0
    assert set(out["peak_rss_mib"]) == {"node0", "node1", "node2", "node3"}
    assert all(10 < mib < 2_000 for mib in out["peak_rss_mib"].values())
    assert out["rss_mib_by_committed"] and out["rss_mib_by_committed"][0][0] == 0
    ends = out["nodes_at_end"]
    heights = [n["height"] for n in ends]               # read one after another: an empty
    assert max(heights) - min(heights) <= 1               # block may land in between
    assert all(n["mempool"] == 0 for n in ends)


def test_bench_refuses_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "lendnet.cli", "bench", "--nodes", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--nodes" in run.stderr
