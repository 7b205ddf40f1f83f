"""Issue 18's products end to end on a real 4-node cluster with a fast chain clock (one
real second is two chain days), every step a signed transaction committed by consensus:

- a group of 5 whose members pledge compulsory savings; one member stops paying, the
  group covers two of its instalments, then it defaults and its pledged savings are drawn;
  the others repay, their savings are released and withdrawn;
- a loan filled by 4 lenders in unequal slices, repaid with one late instalment: what the
  borrower paid reaches the lenders pro rata, to the unit;
- a guaranteed loan that defaults and is paid from the guarantee, the rest returned to
  the guarantor.

At the end every node shows the same state root and the same balance for every party.
The cluster is stopped by the fixture, whatever happens.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from lendnet.ledger import keys, tx as txm
from lendnet.node.daemon.client import NodeClient
from lendnet.node.daemon.home import DEV_FAUCET, FAST_CLOCK
from lendnet.node.harness.cluster import Cluster

DAY = 86_400
H32 = hashlib.sha256(b"products-e2e").digest()
OFFER = dict(products=["business"], methods=["annuity"], periods=["weekly"], min_term=1,
             max_term=12, max_grace=0, tiers=[[300, 1800, 500_000]], late_fee_bps=500,
             tolerance_days=0, default_days=3, collateral_bps=0, origination_fee_bps=0,
             penalty_bps=0)
LIMITS = dict(max_rate_bps=1800, max_late_fee_bps=500, min_default_days=3,
              max_penalty_bps=0, max_origination_fee_bps=0)
APPLY = dict(purpose="stock", term=4, period="weekly", method="annuity",
             product="business", grace=0, docs_hash=H32, **LIMITS)
GROUP = [f"g{i}" for i in range(1, 6)]
SLICES = {"lead": 50_000, "l2": 30_000, "l3": 25_000, "l4": 15_000}    # 1,200.00 in all
SAVINGS = 10_000            # each member's compulsory savings: 10 % of a 1,000.00 loan


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("products") / "cluster")
    try:
        members = c.up(4, wait_s=60, params={"time_scale": FAST_CLOCK,
                                            "empty_block_ms": 250})
        yield [NodeClient(m.api, timeout=10) for m in members]
    finally:
        c.down()


class Wallets:
    """Named keys that sign with their own nonces; several transactions are submitted
    together and then waited for, so a step costs one commit, not one per party."""

    def __init__(self, api: NodeClient, names):
        self.api = api
        self.chain = api.status()["chain_id"]
        self.kp = {n: keys.Keypair.from_name(f"e2e18-{n}") for n in names}
        self.kp["faucet"] = keys.Keypair.from_name(DEV_FAUCET)
        self.nonce: dict[str, int] = {}

    def addr(self, name: str) -> str:
        return self.kp[name].address

    def sign(self, name: str, kind: str, /, **fields) -> bytes:
        kp = self.kp[name]
        if name not in self.nonce:
            self.nonce[name] = self.api.account(kp.address)["nonce"]
        raw = txm.sign(txm.build(kp, self.chain, kind, self.nonce[name], **fields), [kp]).raw
        self.nonce[name] += 1
        return raw

    def send(self, *steps) -> list[str]:
        """steps: (name, kind, fields). All committed, or the test fails naming why."""
        hashes = [self.api.submit(self.sign(n, k, **f)) for n, k, f in steps]
        for (n, k, _), h in zip(steps, hashes):
            st = self.api.wait_committed(h, 30)
            assert st["status"] == "committed", (n, k, st)
        return hashes

    def do(self, name: str, kind: str, /, **fields) -> str:
        return self.send((name, kind, fields))[0]

    def balance(self, name: str) -> int:
        return self.api.account(self.addr(name))["balance"]

    def chain_time(self) -> int:
        h = self.api.status()["height"]
        return self.api.get(f"/v1/blocks/{h}")["header"]["time"]


def _loan_of(w: Wallets, app: str) -> str:
    loan = w.api.get(f"/v1/applications/{app}")["loan"]
    assert loan, f"application {app} was not funded"
    return loan


def _run_chain_time(w: Wallets, loans: dict, sara_loan: str, gina_loan: str):
    """Chain time runs (a second is two days): g1-g4 pay when due, g5 pays nothing
    (g1 then g2 cover one late instalment each, then it defaults), sara pays her second
    instalment a day late, gina pays nothing (her guarantee is drawn)."""
    api = w.api
    # --- chain time runs: who pays what, when ----------------------------------------
    covers: list[str] = []          # g5's instalments covered by fellow members
    sara_paid = sara_payments = 0
    late_done = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = w.chain_time()
        acted = False
        for g in GROUP[:4]:
            ln = api.get(f"/v1/loans/{loans[g]}")
            if ln["status"] == "active" and ln["amount_due"] and ln["due_time"] - now <= 2 * DAY:
                w.do(g, "repay", loan=loans[g], amount=ln["amount_due"])
                acted = True
        g5 = api.get(f"/v1/loans/{loans['g5']}")
        if g5["status"] == "active" and g5["days_past_due"] > 0 and len(covers) < 2:
            coverer = GROUP[len(covers)]             # g1, then g2
            w.do(coverer, "group_cover", loan=loans["g5"], amount=g5["arrears"])
            covers.append(coverer)
            acted = True
        ln = api.get(f"/v1/loans/{sara_loan}")
        if ln["status"] == "active" and ln["amount_due"]:
            # instalment 2 is paid a day late, with its late fee; the rest on time
            late = ln["oldest_unpaid"] == 2 and not late_done
            due_soon = ln["due_time"] - now <= 2 * DAY
            if (late and ln["days_past_due"] >= 1) or (not late and due_soon):
                w.do("sara", "repay", loan=sara_loan, amount=ln["amount_due"])
                sara_paid += ln["amount_due"]
                sara_payments += 1
                late_done = late_done or late
                acted = True
        closed = {x: api.get(f"/v1/loans/{x}")["status"]
                  for x in (*loans.values(), sara_loan, gina_loan)}
        if all(s != "active" for s in closed.values()):
            break
        if not acted:
            time.sleep(0.1)
    return covers, sara_paid, sara_payments, late_done


def test_group_shared_and_guaranteed_loans_and_savings_on_a_real_cluster(cluster):
    api = cluster[0]
    names = ["lead", "l2", "l3", "l4", *GROUP, "sara", "gina", "quinn"]
    w = Wallets(api, names)
    w.send(*[("faucet", "transfer", dict(to=w.addr(n), amount=amount)) for n, amount in
             [("lead", 2_000_000), ("l2", 100_000), ("l3", 100_000), ("l4", 100_000),
              *[(g, 60_000) for g in GROUP], ("sara", 60_000), ("gina", 10_000),
              ("quinn", 150_000)]])
    w.send(*[(n, "register_lender", dict(profile_hash=H32)) for n in SLICES],
           *[(n, "register_borrower", dict(profile_hash=H32, docs_hash=H32))
             for n in (*GROUP, "sara", "gina")])
    offer, product = w.send(
        ("lead", "publish_offer", dict(amount=1_000_000, **OFFER)),
        ("lead", "savings_product", dict(name="group savings", rate_bps=300,
                                         reserve=50_000)))
    product = keys.derive_address(b"savings", bytes.fromhex(product))

    # --- the group forms, saves, applies; the lead lender funds each member -------------
    created = w.do("g1", "group_create", name="market women", members=[w.addr(g) for g in GROUP],
                   savings_bps=1_000)
    group = keys.derive_address(b"group", bytes.fromhex(created))
    w.send(*[(g, "group_join", dict(group=group)) for g in GROUP[1:]])
    w.send(*[(g, "savings_deposit", dict(product=product, amount=SAVINGS)) for g in GROUP])
    apps = dict(zip(GROUP, w.send(*[(g, "group_apply", dict(group=group, amount=100_000,
                                                            **APPLY)) for g in GROUP])))
    w.send(*[(g, "savings_pledge", dict(product=product, to=apps[g], amount=SAVINGS))
             for g in GROUP])
    # --- the shared loan: four lenders fill sara's application in unequal slices --------
    sara_app = w.do("sara", "apply", amount=sum(SLICES.values()), **APPLY)
    w.do("lead", "fund_share", application=sara_app, offer=offer, amount=SLICES["lead"])
    w.send(*[(n, "fund_share", dict(application=sara_app, offer=offer, amount=a))
             for n, a in SLICES.items() if n != "lead"])
    # --- the guaranteed loan: quinn guarantees gina's application -----------------------
    gina_app = w.do("gina", "apply", amount=80_000, **APPLY)
    w.do("quinn", "guarantee", to=gina_app, amount=100_000)
    w.send(*[("lead", "fund", dict(application=a, offer=offer, accept=[]))
             for a in (*apps.values(), gina_app)])
    loans = {g: _loan_of(w, apps[g]) for g in GROUP}
    sara_loan, gina_loan = _loan_of(w, sara_app), _loan_of(w, gina_app)
    assert api.get(f"/v1/loans/{sara_loan}")["lender"] != w.addr("lead")   # the pool's
    lenders_before = {n: w.balance(n) for n in SLICES}
    quinn_before = w.balance("quinn")
    # g3 follows the chain's alerts as a member would: its group's notices of g5's loan
    watcher = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "watch", "--address",
                                w.addr("g3"), "--json", "--timeout", "120", "--node",
                                api.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "following" in watcher.stderr.readline()
        covers, sara_paid, sara_payments, late_done = _run_chain_time(w, loans, sara_loan,
                                                                      gina_loan)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=30)
    seen = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    about_g5 = {e["event"] for e in seen if e["loan"] == loans["g5"]}
    assert {"member_late", "member_covered", "member_defaulted"} <= about_g5, seen
    assert all(e["role"] == "group member" for e in seen if e["loan"] == loans["g5"])

    views = {x: api.get(f"/v1/loans/{x}") for x in (*loans.values(), sara_loan, gina_loan)}
    status = {k: v["status"] for k, v in views.items()}
    assert all(status[loans[g]] == "repaid" for g in GROUP[:4]), status
    assert status[loans["g5"]] in ("defaulted", "settled"), status
    assert covers == ["g1", "g2"] and late_done

    # the group's record: two covers, one default; the group is in arrears while g5's
    # claim is unpaid, so none of its members can borrow through it
    rec = api.get(f"/v1/groups/{group}")
    assert rec["defaults"] >= 1 and rec["covers"] == 2, rec

    # the shared loan: the lenders received all sara paid, split by slice to the unit
    # the pool splits what the loan paid it at the block after each payment
    until = time.monotonic() + 20
    while (pool := api.get(f"/v1/pools/{sara_app}"))["undistributed"] and \
            time.monotonic() < until:
        time.sleep(0.1)
    by_lender = {sl["lender"]: sl["received"] for sl in pool["slices"]}
    received = {n: by_lender[w.addr(n)] for n in SLICES}
    # all of it: what sara paid, less the interest her early payoff did not owe
    paid_out = sum(received.values())
    assert paid_out == pool["distributed"] and pool["undistributed"] == 0
    assert sara_paid - 100 < paid_out <= sara_paid
    for n in ("l2", "l3", "l4"):            # (the lead also lends to the group and gina)
        assert w.balance(n) - lenders_before[n] == received[n]
    total = sum(SLICES.values())
    # each distribution gives every slice its exact share to within a unit: over sara's
    # payments, each lender is within that many units of its share of the whole
    for n, share in SLICES.items():
        assert abs(received[n] * total - paid_out * share) < total * sara_payments, \
            (n, received, sara_payments)

    # the guaranteed loan: settled from the guarantee; quinn gets back what it did not need
    assert status[gina_loan] == "settled", views[gina_loan]
    # (quinn's 100,000 was already in the guarantee agreement when quinn_before was read)
    drawn = 100_000 - (w.balance("quinn") - quinn_before)
    assert 80_000 <= drawn < 100_000
    g = api.get(f"/v1/guarantees?to={gina_app}")["guarantees"][0]
    assert g["status"] == "drawn" and g["drawn"] == drawn, g
    # savings: the four who repaid have their pledges released and withdraw everything
    w.send(*[(g, "savings_withdraw", dict(product=product, amount=SAVINGS)) for g in GROUP[:4]])
    g5_account = api.get(f"/v1/savings/{product}/{w.addr('g5')}")
    assert g5_account["balance"] < SAVINGS          # drawn for the claim

    # every node: the same state root, the same balances
    top = max(a.status()["height"] for a in cluster)
    for a in cluster:
        a.wait_height(top, 30)
    seen = [(a.get(f"/v1/blocks/{top}")["state_root"],
             {n: a.account(w.addr(n))["balance"] for n in names}) for a in cluster]
    assert all(s == seen[0] for s in seen), seen
