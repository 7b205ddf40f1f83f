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
import os
import signal
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon.client import NodeClient
from lendnet.node.harness.cluster import Cluster
from lendnet.node.harness.workload import LIMITS, OFFER

CHAIN = "lendnet-dev"
SENDERS = 256            # accounts the load comes from: each may have 64 nonces in flight
WINDOW = 32              # as-fast-as-accepted: nonces in flight per account (mempool: 64)
SLICE_S = 0.005          # the client posts what is due every slice, one batch per node
RETRY_S = 0.2            # a transaction refused as too far ahead is offered again after
RETRY_FOR_S = 30.0       # ... for at most this long after it was first due
POST_MAX = 250           # transactions per POST /v1/txs (a node takes up to 1 MiB)
RSS_EVERY_S = 5.0        # how often node memory is sampled during a run
FUND = 200_000           # each sender's float: 1 per transfer, 100 per repayment


def _key(i: int) -> keys.Keypair:
    return keys.Keypair(hashlib.sha256(f"bench-sender:{i}".encode()).digest())


def _sign_batch(job: tuple) -> list[tuple[int, str, bytes]]:
    """In a worker process: sign one sender's transactions, nonces in order."""
    i, kind, start_nonce, fields = job
    kp = _key(i)
    out = []
    for k, f in enumerate(fields):
        raw = txm.sign(txm.build(kp, CHAIN, kind[k] if type(kind) is list else kind,
                                 start_nonce + k, **f), [kp]).raw
        out.append((i, txm.parse(raw).id, raw))
    return out


def _commit_all(api: NodeClient, raws: list[bytes], timeout: float = 60) -> list[str]:
    """Submit set-up transactions in nonce-window-sized rounds and wait for each round."""
    hashes = []
    for k in range(0, len(raws), WINDOW):
        round_ = [api.submit(raw) for raw in raws[k:k + WINDOW]]
        for h in round_:
            st = api.wait_committed(h, timeout)
            if st["status"] != "committed":
                raise RuntimeError(f"setup transaction {h} failed: {st.get('error')}")
        hashes += round_
    return hashes


def setup(api: NodeClient, workload: str) -> dict[int, str]:
    """Fund the senders; for repayments give each a loan. Returns sender -> loan id."""
    def signer(kp):
        nonce = api.account(kp.address)["nonce"]

        def sign(kind, **f):
            nonlocal nonce
            nonce += 1
            return txm.sign(txm.build(kp, CHAIN, kind, nonce - 1, **f), [kp]).raw
        return sign
    alice = signer(keys.Keypair.from_name("alice"))
    _commit_all(api, [alice("transfer", to=_key(i).address, amount=FUND)
                      for i in range(SENDERS)])
    if workload == "transfer":
        return {}
    lender = signer(keys.Keypair.from_name("lender"))
    h32 = hashlib.sha256(b"bench").digest()
    _, offer = _commit_all(api, [lender("register_lender", profile_hash=h32),
                                 lender("publish_offer", amount=50_000_000, **OFFER)])
    borrowers, apps = [], []
    for i in range(SENDERS):
        borrower = signer(_key(i))
        borrowers.append(borrower("register_borrower", profile_hash=h32, docs_hash=h32))
        apps.append(borrower("apply", amount=100_000, purpose="bench", term=12,
                             period="monthly", method="annuity", product="business",
                             grace=0, docs_hash=h32, **LIMITS))
    _commit_all(api, borrowers)
    apps = _commit_all(api, apps)
    _commit_all(api, [lender("fund", application=a, offer=offer, accept=[]) for a in apps])
    return {i: api.get(f"/v1/applications/{apps[i]}")["loan"] for i in range(SENDERS)}


def presign(api: NodeClient, workload: str, txs: int,
            loans: dict) -> list[tuple[int, str, bytes]]:
    """(sender, tx id, raw) in the order they are offered: senders interleaved, so every
    block can hold many accounts' transactions."""
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
        signed = list(pool.map(_sign_batch, jobs, chunksize=8))
    out = [signed[i][k] for k in range(per) for i in range(SENDERS)]
    return out[:txs]


async def drive(urls: list[str], txs: list[tuple[int, str, bytes]], rate: float,
                settle_s: float, pids: dict[str, int], quiet_s: float = 5.0) -> dict:
    """Offer `txs`: open loop at `rate`/s (latency counts from when each was due, so a
    slow client or node cannot hide it), or with rate 0 as fast as accepted — each
    account keeps WINDOW transactions in flight. Every SLICE_S the due transactions go
    out as one POST /v1/txs per node, round-robin."""
    submitted: dict[str, float] = {}
    committed: dict[str, float] = {}
    sender_of = {tx_id: i for i, tx_id, _ in txs}
    in_flight = [0] * SENDERS
    blocks: list[tuple[float, int]] = []
    refused = []
    async with aiohttp.ClientSession() as http:
        async def which(height: int, t: float):
            async with http.get(f"{urls[0]}/v1/blocks/{height}") as r:
                for h in (await r.json())["txs"]:
                    if h in sender_of and h not in committed:
                        committed[h] = t
                        in_flight[sender_of[h]] -= 1

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

        rss = []                                     # [committed so far, {node: MiB}]

        async def sample_rss():
            while True:
                rss.append([len(committed), {n: round(_rss_kib(pid) / 1024, 1)
                                             for n, pid in pids.items()}])
                await asyncio.sleep(RSS_EVERY_S)

        watcher = asyncio.create_task(watch())
        sampler = asyncio.create_task(sample_rss())
        await asyncio.sleep(0.5)

        async def post(url, batch):
            async with http.post(url + "/v1/txs", json={"txs": [raw.hex() for _, _, raw in
                                                               batch]}) as r:
                answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"POST /v1/txs: {r.status} {answer}")
            for item, res in zip(batch, answer["results"]):
                i, tx_id, _ = item
                why = res.get("error") or ""
                if res["http"] == 202:
                    continue
                if res["code"] == "nonce-ahead" and \
                        time.perf_counter() - submitted[tx_id] < RETRY_FOR_S:
                    # The mempool's back-pressure: its account has 64 nonces waiting.
                    # A wallet offers it again a little later; its latency keeps counting.
                    retry.append((time.perf_counter() + RETRY_S, item))
                    retried.add(tx_id)
                elif tx_id in retried and res["code"] in ("duplicate", "nonce-used"):
                    pass                                # gossip got it there meanwhile
                else:
                    refused.append((tx_id, res["http"], why))
                    in_flight[i] -= 1

        queues = [[] for _ in range(SENDERS)]
        for item in reversed(txs):
            queues[item[0]].append(item)                # pop() gives nonce order
        t0 = time.perf_counter()
        posts: set[asyncio.Task] = set()
        retry: list[tuple[float, tuple]] = []           # (when, item), in time order
        retried: set[str] = set()
        turn, n = 0, 0
        while n < len(txs) or retry or posts:
            now = time.perf_counter()
            due = []
            while retry and retry[0][0] <= now:
                due.append(retry.pop(0)[1])
            if rate:
                upto = min(len(txs), int((now - t0) * rate) + 1)
                for k in range(n, upto):
                    item = txs[k]
                    due.append(item)
                    submitted[item[1]] = t0 + k / rate
                    in_flight[item[0]] += 1
            else:
                for i, q in enumerate(queues):
                    while q and in_flight[i] < WINDOW:
                        item = q.pop()
                        due.append(item)
                        submitted[item[1]] = now
                        in_flight[i] += 1
            n += len(due) - sum(1 for item in due if item[1] in retried)
            for k in range(0, len(due), POST_MAX):      # round-robin over the nodes
                task = asyncio.create_task(post(urls[turn % len(urls)], due[k:k + POST_MAX]))
                posts.add(task)
                task.add_done_callback(posts.discard)
                turn += 1
            if len(posts) > 64:                         # the client's own back-pressure
                await asyncio.wait(posts, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(SLICE_S)
        await asyncio.gather(*posts)
        offered_s = time.perf_counter() - t0
        deadline = time.perf_counter() + settle_s
        last, last_at = -1, time.perf_counter()
        while time.perf_counter() < deadline and len(committed) < len(submitted) - len(refused):
            if len(committed) != last:
                last, last_at = len(committed), time.perf_counter()
            elif time.perf_counter() - last_at > quiet_s:
                break                                   # nothing more is coming
            await asyncio.sleep(0.05)
        if watcher.done() and watcher.exception():
            raise watcher.exception()
        watcher.cancel()
        sampler.cancel()
        await asyncio.gather(watcher, sampler, return_exceptions=True)
    lat = sorted((committed[h] - submitted[h]) * 1000 for h in submitted if h in committed)
    done = [committed[h] for h in submitted if h in committed]
    span = (max(done) - t0) if done else 0
    window = [b for b in blocks if t0 <= b[0] <= t0 + span]
    full = [n for _, n in window if n]

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
    return {
        "offered": len(txs), "offered_tx_per_s": round(len(txs) / offered_s, 1),
        "committed": len(lat), "refused": len(refused), "retried": len(retried),
        "refused_examples": refused[:3],
        "seconds": round(span, 2),
        "tx_per_s": round(len(lat) / span, 1) if span else 0,
        "blocks_per_s": round(len(window) / span, 2) if span else 0,
        "avg_batch": round(statistics.mean(full), 1) if full else 0,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else None,
        "rss_mib_by_committed": rss,
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
    except (OSError, ValueError, IndexError):
        return 0.0, 0
    return ticks / os.sysconf("SC_CLK_TCK"), _status_kib(pid, "VmHWM:")


def _rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS:")


def _status_kib(pid: int, field: str) -> int:
    """A memory figure (KiB) from /proc/PID/status; 0 if the process is gone."""
    try:
        return next(int(line.split()[1]) for line in
                    Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith(field))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0


def bench(nodes: int = 4, txs: int = 3_000, rate: float = 300.0, workload: str = "mixed",
          nodes_from: Path | None = None, settle_s: float = 60.0,
          params: dict | None = None) -> dict:
    """Run one benchmark; `nodes_from` targets a running cluster's directory instead of
    starting one. Returns the figures (see `lendnet bench --help`)."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")    # unwinds through cluster.down()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return _bench(nodes, txs, rate, workload, nodes_from, settle_s, params)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bench(nodes, txs, rate, workload, nodes_from, settle_s, params) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(nodes_from or Path(tmp) / "cluster")
        started = nodes_from is None
        try:
            if started:
                members = cluster.up(nodes, wait_s=60, params=params)
            else:
                members = [m for m in cluster.members() if m.alive()]
                if not members:
                    raise RuntimeError(f"no running nodes in {nodes_from}")
            urls = [m.api for m in members]
            api = NodeClient(urls[0], timeout=10)
            loans = setup(api, workload)
            signed = presign(api, workload, txs, loans)
            before = {m.name: _proc_usage(m.pid) for m in members}
            result = asyncio.run(drive(urls, signed, rate, settle_s,
                                       {m.name: m.pid for m in members}))
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
             f"({out['refused']} refused; {out['retried']} offered again after refusals)",
             f"  committed tx/s {out['tx_per_s']}, blocks/s {out['blocks_per_s']}, "
             f"average batch {out['avg_batch']}, CPU s/tx {out['cpu_s_per_tx']}",
             f"  latency ms: p50 {out['p50_ms']}, p90 {out['p90_ms']}, p99 {out['p99_ms']}, "
             f"max {out['max_ms']}",
             f"  peak RSS MiB: {out['peak_rss_mib']}",
             f"  at the end: {out['nodes_at_end']}"]
    lines += [f"  refused: {r}" for r in out["refused_examples"]]
    return "\n".join(lines)
