"""`lendnet bench`: load a cluster of real node processes and measure what it commits.

Starts an N-node cluster on 127.0.0.1 (in a temporary directory), funds fresh accounts
(and, for repayments, sets up one loan per borrower), pre-signs the measured
transactions in worker processes before the clock starts, then offers them at a fixed
rate (open loop) through every node's API in turn. Commit times come from one node's
event stream. Prints committed tx/s, blocks/s, average batch, p50/p90/p99/max latency
from submission to commit (as the client sees it); `--json` gives one object.

    lendnet bench --nodes 4 --txs 3000 --rate 300 --workload mixed
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp

from ledger import keys
from ledger import tx as txm
from node.client import NodeClient
from node.cluster import Cluster
from node.workload import OFFER

CHAIN = "lendnet-dev"
SENDERS = 32


def _key(i: int) -> keys.Keypair:
    return keys.Keypair(hashlib.sha256(f"bench-sender:{i}".encode()).digest())


def _sign_batch(job: tuple) -> list[tuple[str, bytes]]:
    """In a worker process: sign one sender's transactions, nonces in order."""
    i, kind, start_nonce, fields = job
    kp = _key(i)
    out = []
    for k, f in enumerate(fields):
        raw = txm.sign(txm.build(kp, CHAIN, kind[k] if type(kind) is list else kind,
                                 start_nonce + k, **f), [kp]).raw
        out.append((txm.parse(raw).id, raw))
    return out


def _wait_all(client: NodeClient, hashes: list[str], timeout: float = 60) -> None:
    for h in hashes:
        st = client.wait_committed(h, timeout)
        if st["status"] != "committed":
            raise SystemExit(f"setup transaction {h} failed: {st.get('error')}")


def setup(api: NodeClient, workload: str) -> dict[int, str]:
    """Fund the senders; for repayments give each a loan. Returns sender -> loan id."""
    alice = keys.Keypair.from_name("alice")
    nonce = api.account(alice.address)["nonce"]
    hs = []
    for i in range(SENDERS):
        raw = txm.sign(txm.build(alice, CHAIN, "transfer", nonce + i,
                                 to=_key(i).address, amount=1_000_000), [alice]).raw
        hs.append(api.submit(raw))
    _wait_all(api, hs)
    if workload == "transfer":
        return {}
    lender = keys.Keypair.from_name("lender")
    ln = api.account(lender.address)["nonce"]
    h32 = hashlib.sha256(b"bench").digest()

    def lend(kind, **f):
        nonlocal ln
        raw = txm.sign(txm.build(lender, CHAIN, kind, ln, **f), [lender]).raw
        ln += 1
        return api.submit(raw)
    hs = [lend("register_lender", profile_hash=h32),
          lend("publish_offer", amount=50_000_000, **OFFER)]
    offer = hs[1]
    apps = {}
    for i in range(SENDERS):
        kp = _key(i)
        for n, (kind, f) in enumerate([
                ("register_borrower", dict(profile_hash=h32, docs_hash=h32)),
                ("apply", dict(amount=100_000, purpose="bench", term=12, period="monthly",
                               method="annuity", product="business", grace=0,
                               docs_hash=h32))]):
            h = api.submit(txm.sign(txm.build(kp, CHAIN, kind, n, **f), [kp]).raw)
            hs.append(h)
            if kind == "apply":
                apps[i] = h
    _wait_all(api, hs)
    funds = [lend("fund", application=apps[i], offer=offer) for i in range(SENDERS)]
    _wait_all(api, funds)
    return {i: api.get(f"/v1/applications/{apps[i]}")["loan"] for i in range(SENDERS)}


def presign(api: NodeClient, workload: str, txs: int, loans: dict) -> list[tuple[str, bytes]]:
    per = -(-txs // SENDERS)
    jobs = []
    for i in range(SENDERS):
        start = api.account(_key(i).address)["nonce"]
        kinds, fields = [], []
        for k in range(per):
            repay = workload == "repay" or (workload == "mixed" and k % 2)
            if repay:
                kinds.append("repay")
                fields.append({"loan": loans[i], "amount": 100})
            else:
                kinds.append("transfer")
                fields.append({"to": _key((i + 1) % SENDERS).address, "amount": 1})
        jobs.append((i, kinds, start, fields))
    with ProcessPoolExecutor(2) as pool:
        signed = list(pool.map(_sign_batch, jobs))
    # Interleave senders so every block can hold many accounts' transactions.
    out = [signed[i][k] for k in range(per) for i in range(SENDERS)]
    return out[:txs]


async def drive(urls: list[str], txs: list[tuple[str, bytes]], rate: float,
                settle_s: float) -> dict:
    submitted: dict[str, float] = {}
    committed: dict[str, float] = {}
    blocks: list[tuple[float, int]] = []
    refused = []
    async with aiohttp.ClientSession() as http:
        async def which(height: int, t: float):
            async with http.get(f"{urls[0]}/v1/blocks/{height}") as r:
                for h in (await r.json())["txs"]:
                    committed.setdefault(h, t)

        async def watch():
            lookups = set()
            async with http.ws_connect(urls[0] + "/v1/events?types=block") as ws:
                async for msg in ws:
                    event = json.loads(msg.data)
                    t = time.perf_counter()
                    blocks.append((t, event["txs"]))
                    if event["txs"]:                    # look it up without holding the stream
                        task = asyncio.create_task(which(event["height"], t))
                        lookups.add(task)
                        task.add_done_callback(lookups.discard)
            raise RuntimeError("the node closed the event stream")

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)

        async def submit(url, tx_id, raw):
            async with http.post(url + "/v1/tx", json={"tx": raw.hex()}) as r:
                if r.status != 202:
                    refused.append((tx_id, r.status, (await r.json()).get("error")))

        t0 = time.perf_counter()
        pending = set()
        for n, (tx_id, raw) in enumerate(txs):
            delay = t0 + n / rate - time.perf_counter() if rate else 0   # rate 0: no pacing
            if delay > 0:
                await asyncio.sleep(delay)
            submitted[tx_id] = time.perf_counter()
            task = asyncio.create_task(submit(urls[n % len(urls)], tx_id, raw))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if len(pending) > 512:                      # the client's own back-pressure
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)
        offered_s = time.perf_counter() - t0
        deadline = time.perf_counter() + settle_s
        while time.perf_counter() < deadline and \
                len(committed.keys() & submitted.keys()) < len(submitted) - len(refused):
            await asyncio.sleep(0.05)
        if watcher.done() and watcher.exception():
            raise watcher.exception()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    lat = sorted((committed[h] - submitted[h]) * 1000 for h in submitted if h in committed)
    done = [committed[h] for h in submitted if h in committed]
    span = (max(done) - t0) if done else 0
    window = [b for b in blocks if t0 <= b[0] <= t0 + span]
    full = [n for _, n in window if n]

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
    return {
        "offered": len(txs), "offered_tx_per_s": round(len(txs) / offered_s, 1),
        "committed": len(lat), "refused": len(refused),
        "refused_examples": refused[:3],
        "tx_per_s": round(len(lat) / span, 1) if span else 0,
        "blocks_per_s": round(len(window) / span, 2) if span else 0,
        "avg_batch": round(statistics.mean(full), 1) if full else 0,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else None,
    }


def _counters(url: str) -> dict:
    """A few of the node's own counters, from /metrics."""
    import urllib.request
    want = {"lendnet_txs_regossiped_total": "regossiped",
            "lendnet_p2p_frames_dropped_total": "frames_dropped",
            "lendnet_view_changes": "view_changes"}
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in want:
                out[want[name]] = int(float(value))
    return out


def _proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, peak RSS in KiB) of a local process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])            # utime + stime
        hwm = next(int(line.split()[1]) for line in
                   Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0, 0
    return ticks / os.sysconf("SC_CLK_TCK"), hwm


def bench(nodes: int = 4, txs: int = 3_000, rate: float = 300.0, workload: str = "mixed",
          nodes_from: Path | None = None, settle_s: float = 60.0) -> dict:
    """Run one benchmark; `nodes_from` targets a running cluster's directory instead of
    starting one. Returns the figures (see `lendnet bench --help`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(nodes_from or Path(tmp) / "cluster")
        started = nodes_from is None
        try:
            if started:
                members = cluster.up(nodes, wait_s=60)
            else:
                members = [m for m in cluster.members() if m.alive()]
                if not members:
                    raise RuntimeError(f"no running nodes in {nodes_from}")
            urls = [m.api for m in members]
            api = NodeClient(urls[0], timeout=10)
            loans = setup(api, workload)
            signed = presign(api, workload, txs, loans)
            before = {m.name: _proc_usage(m.pid) for m in members}
            result = asyncio.run(drive(urls, signed, rate, settle_s))
            after = {m.name: _proc_usage(m.pid) for m in members}
            cpu = sum(after[n][0] - before[n][0] for n in after)
            result["cpu_s_per_tx"] = round(cpu / result["committed"], 5) \
                if result["committed"] else None
            result["peak_rss_mib"] = {n: round(after[n][1] / 1024, 1) for n in after}
            result["nodes_at_end"] = [
                {**{k: st[k] for k in ("height", "view", "mempool")}, **_counters(u)}
                for u, st in ((u, NodeClient(u).status()) for u in urls)]
        finally:
            if started:
                cluster.down()
    return {"nodes": len(members), "workload": workload, "rate": rate, **result}


def describe(out: dict) -> str:
    lines = [f"{out['nodes']} nodes, {out['workload']}: offered {out['offered']} at "
             f"{out['offered_tx_per_s']} tx/s; committed {out['committed']} "
             f"({out['refused']} refused)",
             f"  committed tx/s {out['tx_per_s']}, blocks/s {out['blocks_per_s']}, "
             f"average batch {out['avg_batch']}, CPU s/tx {out['cpu_s_per_tx']}",
             f"  latency ms: p50 {out['p50_ms']}, p90 {out['p90_ms']}, p99 {out['p99_ms']}, "
             f"max {out['max_ms']}",
             f"  peak RSS MiB: {out['peak_rss_mib']}",
             f"  at the end: {out['nodes_at_end']}"]
    lines += [f"  refused: {r}" for r in out["refused_examples"]]
    return "\n".join(lines)
