"""Time a new full node reaching the head of a chain: block by block from genesis versus
`--state-sync` (a peer's snapshot, then the blocks after it).

A lone validator (bench_restart.py's chain builder: the node's own Node and SQLiteStore,
a virtual clock) commits a chain of about `--txs` transactions with a snapshot every
`--every` blocks, in a real home. That validator is then started as a real daemon
(`lendnet node start`), and two fresh full nodes, one after the other, are started as
real daemons pointing at it: one plain, one with `--state-sync`. Each is timed from its
start until its /v1/status height reaches the validator's height when it started, and
its state root there is compared with the validator's.

Nothing here holds the chain in memory: the builder keeps only the ledger's state (as
the node does) and the counts come from the store a block at a time.

    python scripts/bench_sync.py [--txs N] [--every N] [--burst N]
                                 [--workload transfer|lending|accounts] [--timeout S]
                                 [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_restart import WORKLOADS, build, report  # noqa: E402  (the same builder)

from lendnet.node.daemon import home as H  # noqa: E402


def _status(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _block_root(url: str, h: int) -> str:
    with urllib.request.urlopen(f"{url}/v1/blocks/{h}", timeout=5) as r:
        return json.loads(r.read())["state_root"]


class Proc:
    """A node process of this script: stopped (SIGTERM, then SIGKILL) on leaving."""

    def __init__(self, home: Path, extra: list[str]):
        self.log = home / "node.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lendnet.cli", "node", "start", "--home", str(home),
                 *extra], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def api(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = re.findall(r"api (http://[0-9.]+:[0-9]+)", self.log.read_text("utf-8",
                                                                                "replace"))
            if got:
                return got[-1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.parent.name} exited:\n"
                                   + self.log.read_text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError(f"{self.log.parent.name} did not start within {timeout} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def catch_up(root: Path, name: str, genesis, validator: str, state_sync: bool,
             timeout: float) -> dict:
    """Start a fresh full node pointing at the validator; time it to the head."""
    home = root / name
    H.init_home(home, H.NodeConfig("127.0.0.1", 0, [validator.removeprefix("http://")]),
                genesis=genesis)
    target = _status(validator)["height"]
    started = time.monotonic()
    with Proc(home, ["--state-sync"] if state_sync else []) as p:
        url = p.api(timeout)
        while True:
            st = _status(url)
            if st and st["height"] >= target:
                break
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{name} did not reach height {target} within "
                                   f"{timeout} s (at {st and st['height']})")
            if p.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n" + p.log.read_text()[-2000:])
            time.sleep(0.05)
        seconds = time.monotonic() - started
        same = _block_root(url, target) == _block_root(validator, target)
        text = p.log.read_text("utf-8", "replace")
    out = {"seconds": round(seconds, 2), "height": target, "same_root": same,
           "synced_from": st.get("synced_from")}
    got = re.search(r"state-synced to height (\d+) in ([0-9.]+) s \((\d+) chunks, (\d+) "
                    r"bytes", text)
    if got:
        out.update(snapshot_height=int(got[1]), snapshot_s=float(got[2]),
                   chunks=int(got[3]), bytes=int(got[4]),
                   blocks_after_snapshot=target - int(got[1]))
    else:
        out["blocks_replayed"] = target
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txs", type=int, default=20_000)
    ap.add_argument("--every", type=int, default=10, help="a snapshot every N blocks")
    ap.add_argument("--burst", type=int, default=4,
                    help="workload steps per 25 ms tick (more: fewer, fuller blocks)")
    ap.add_argument("--workload", choices=WORKLOADS, default="transfer",
                    help="accounts: transfers to fresh addresses (the state grows with "
                         "the chain)")
    ap.add_argument("--timeout", type=float, default=3_600,
                    help="seconds a node may take to reach the head")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
        root = Path(d)
        vhome = root / "validator"
        vhome.mkdir()
        genesis, kp, info = build(str(vhome / "node.db"), args.txs, args.every, args.burst,
                                  args.workload)
        H.init_home(vhome, H.NodeConfig("127.0.0.1", 0, []), kp=kp, genesis=genesis)
        info.update(every=args.every, burst=args.burst, workload=args.workload)
        with Proc(vhome, []) as v:
            validator = v.api(args.timeout)
            info["block_sync"] = catch_up(root, "plain", genesis, validator, False,
                                          args.timeout)
            info["state_sync"] = catch_up(root, "synced", genesis, validator, True,
                                          args.timeout)
    info.pop("snapshot_log", None)
    report(info, args.json)


if __name__ == "__main__":
    main()
