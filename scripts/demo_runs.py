"""Does the README's first command work every time? Run `lendnet demo` again and again.

Each run must exit 0, end with every node holding the same state, and leave no node
process behind; `--burners K` keeps K CPU-bound processes running throughout, as on a
busy machine. Prints one line per run and a summary (or one JSON value).

    python scripts/demo_runs.py [--runs 20] [--burners 0] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BURN = "while True: pass"


def demo_nodes() -> int:
    """Live `lendnet node start` processes of a demo cluster (its homes are lendnet-demo-*)."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue                            # gone meanwhile, or not ours to read
        if b"start" in cmd and any(b"lendnet-demo-" in part for part in cmd):
            count += 1
    return count


def one_run() -> dict:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lendnet.cli", "demo", "--json"],
                         capture_output=True, text=True, timeout=180)
    seconds = round(time.monotonic() - t0, 1)
    try:
        identical = json.loads(out.stdout)["identical_on_all_nodes"] is True
    except (ValueError, KeyError, TypeError):
        identical = False
    return {"exit": out.returncode, "seconds": seconds, "identical": identical,
            "nodes_left": demo_nodes(), "stderr": out.stderr.strip()[-300:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--burners", type=int, default=0,
                    help="CPU-bound processes kept running meanwhile")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not 1 <= a.runs <= 1000 or not 0 <= a.burners <= 64:
        ap.error("--runs is 1 to 1000, --burners 0 to 64")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(a.burners)]
    runs = []
    try:
        for i in range(a.runs):
            r = one_run()
            runs.append(r)
            if not a.json:
                ok = r["exit"] == 0 and r["identical"] and not r["nodes_left"]
                print(f"run {i + 1:3}: {'ok ' if ok else 'FAIL'} {r['seconds']:5.1f} s, exit "
                      f"{r['exit']}, nodes left {r['nodes_left']}"
                      + ("" if ok else f": {r['stderr']}"), flush=True)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    good = [r for r in runs if r["exit"] == 0 and r["identical"] and not r["nodes_left"]]
    secs = sorted(r["seconds"] for r in runs)
    summary = {"runs": len(runs), "ok": len(good), "burners": a.burners,
               "seconds_min": secs[0], "seconds_max": secs[-1],
               "nodes_left": sum(r["nodes_left"] for r in runs), "results": runs}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(good)} of {len(runs)} runs ok ({a.burners} burners), "
              f"{secs[0]}-{secs[-1]} s, node processes left: {summary['nodes_left']}")
    return 0 if len(good) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
