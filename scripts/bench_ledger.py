"""Apply pre-signed transactions to the ledger core in one process and time it.

Everything a replica does per transaction is inside the timing: decoding the wire
bytes, checking the shape, verifying the ed25519 signature, applying it (the loan
agreement runs in the VM for a repayment), and the state root of every block.
Signing happens before the clock starts.

    python scripts/bench_ledger.py [--transfers N] [--repays N] [--block-size N]
                                   [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from lendnet.ledger import keys, lending, tx as txm
from lendnet.ledger.keys import Keypair
from lendnet.ledger.ledger import TX_GAS_ROOM

CHAIN, T0, H32 = "bench", 1_767_225_600, b"\x11" * 32
OFFER = dict(products=["consumer"], methods=["annuity"], periods=["monthly"], min_term=1,
             max_term=60, max_grace=0, tiers=[[300, 1800, 10**9]], late_fee_bps=500,
             tolerance_days=3, default_days=90, collateral_bps=0, origination_fee_bps=0,
             penalty_bps=0)
LIMITS = dict(max_rate_bps=1800, max_late_fee_bps=500, min_default_days=90, max_penalty_bps=0,
              max_origination_fee_bps=0)


class Bench:
    def __init__(self, accounts: int):
        self.keys = [Keypair.from_name(f"bench-{i}") for i in range(accounts)]
        self.lender = Keypair.from_name("bench-lender")
        balances = {k.address: 10**12 for k in self.keys} | {self.lender.address: 10**15}
        self.ledger = lending.genesis(CHAIN, balances, time=T0)
        self.nonces: dict[str, int] = {}
        self.time = T0

    def sign(self, kp, kind, **fields) -> bytes:
        n = self.nonces.get(kp.address, 0)
        self.nonces[kp.address] = n + 1
        return txm.sign(txm.build(kp, CHAIN, kind, n, **fields), [kp]).raw

    def apply(self, raws, block_size, pool, threads):
        """Run blocks of wire transactions; return seconds spent in each phase."""
        phases = {"decode": 0.0, "verify": 0.0, "execute": 0.0}
        led = self.ledger
        i = 0
        while i < len(raws):
            # a block: up to block_size transactions whose gas limits fit its room, as
            # a proposer packs one (Mempool.batch)
            t0 = time.perf_counter()
            txs, gas = [], 0
            while i < len(raws) and len(txs) < block_size:
                tx = txm.parse(raws[i])
                if txs and gas + led.gas_limit(tx) > TX_GAS_ROOM:
                    break
                txs.append(tx)
                gas += led.gas_limit(tx)
                i += 1
            t1 = time.perf_counter()
            txm.verify_batch(txs, pool, threads)
            t2 = time.perf_counter()
            self.time += 5
            res = led.apply_block(led.height + 1, self.time, txs)
            t3 = time.perf_counter()
            assert all(r.ok for r in res.receipts)
            phases["decode"] += t1 - t0
            phases["verify"] += t2 - t1
            phases["execute"] += t3 - t2
        return phases

    def setup_loans(self, borrowers):
        """Register, offer and fund one loan per borrower (not timed)."""
        pre = [self.sign(self.lender, "register_lender", profile_hash=H32),
               self.sign(self.lender, "publish_offer", amount=10**13, **OFFER)]
        self.apply(pre, 10_000, None, 1)
        offer = txm.parse(pre[1]).id
        regs = [self.sign(k, "register_borrower", profile_hash=H32, docs_hash=H32)
                for k in borrowers]
        apps = [self.sign(k, "apply", amount=5_000_000, purpose="bench", term=24,
                          period="monthly", method="annuity", product="consumer",
                          grace=0, docs_hash=H32, **LIMITS) for k in borrowers]
        self.apply(regs + apps, 10_000, None, 1)
        funds = [self.sign(self.lender, "fund", application=txm.parse(a).id, offer=offer,
                           accept=[])
                 for a in apps]
        self.apply(funds, 10_000, None, 1)
        st = self.ledger.state
        return [st.applications.get(txm.parse(a).id)["loan"] for a in apps]


def calibrate(pool, threads, n=4000) -> dict:
    """Raw ed25519 verifications per second on this machine right now: the ceiling for
    signed transactions, and a yardstick for comparing runs on a noisy machine."""
    kp = Keypair.from_name("calibrate")
    msgs = [i.to_bytes(32, "big") for i in range(n)]
    sigs = [kp.sign(m) for m in msgs]
    t = time.perf_counter()
    for m, s in zip(msgs, sigs):
        keys.verify(kp.pubkey, m, s)
    single = n / (time.perf_counter() - t)
    out = {"verify_per_s_1_thread": round(single)}
    if pool is not None:
        t = time.perf_counter()
        list(pool.map(lambda i: [keys.verify(kp.pubkey, msgs[j], sigs[j])
                                 for j in range(i, n, threads)], range(threads)))
        out[f"verify_per_s_{threads}_threads"] = round(n / (time.perf_counter() - t))
    return out


def report(name, count, phases, wall):
    total = sum(phases.values())
    return {"workload": name, "txs": count, "seconds": round(wall, 3),
            "tx_per_s": round(count / wall), "us_per_tx": round(wall / count * 1e6, 1),
            "verify_share": round(phases["verify"] / total, 3),
            "phase_seconds": {k: round(v, 3) for k, v in phases.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--repays", type=int, default=20_000)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--block-size", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=2,
                    help="signature-verification threads (1 = verify inline)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if min(a.transfers, a.repays, a.accounts, a.block_size, a.threads) < 1:
        ap.error("every count must be at least 1")
    pool = ThreadPoolExecutor(a.threads) if a.threads > 1 else None
    calibration = calibrate(pool, a.threads)
    results = []

    b = Bench(a.accounts)
    raws = [b.sign(b.keys[i % a.accounts], "transfer", to=b.keys[(i + 1) % a.accounts].address,
                   amount=1 + i % 1000) for i in range(a.transfers)]
    t = time.perf_counter()
    phases = b.apply(raws, a.block_size, pool, a.threads)
    results.append(report("transfer", a.transfers, phases, time.perf_counter() - t))
    assert b.ledger.total_money() == b.ledger.supply

    b = Bench(a.accounts)
    loans = b.setup_loans(b.keys)
    raws = [b.sign(b.keys[i % a.accounts], "repay", loan=loans[i % a.accounts], amount=2_000)
            for i in range(a.repays)]
    t = time.perf_counter()
    phases = b.apply(raws, a.block_size, pool, a.threads)
    results.append(report("repay", a.repays, phases, time.perf_counter() - t))
    assert b.ledger.total_money() == b.ledger.supply

    out = {"block_size": a.block_size, "verify_threads": a.threads,
           "calibration": calibration, "results": results}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"ledger core, one process, blocks of {a.block_size}, "
          f"{a.threads} signature thread(s)")
    print("  machine now: " + ", ".join(f"{k} {v:,}" for k, v in calibration.items()))
    for r in results:
        p = r["phase_seconds"]
        print(f"  {r['workload']:9} {r['txs']:>7} txs  {r['tx_per_s']:>7,} tx/s  "
              f"{r['us_per_tx']:>6} us/tx  verify {r['verify_share']:.0%} of time "
              f"(decode {p['decode']}s, verify {p['verify']}s, execute {p['execute']}s)")


if __name__ == "__main__":
    main()
