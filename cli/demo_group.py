"""`lendnet demo --group`: the demo's second act, microfinance's own products.

A microfinance institution (mfi) runs a savings product and lends to a group of three
traders who know each other: each saves 10 % of her loan and pledges it, each has her own
loan, and when cal misses an instalment the group is told and amy covers it. A fourth
borrower's loan is filled by three lenders in unequal slices, and what she repays
reaches them pro rata, to the unit. At the end the savings come back with interest and
every node shows the same state.
"""
from __future__ import annotations

import hashlib
import time

import click

from lendnet.ledger import keys

from .common import money

DAY = 86_400
LOAN = 100_000              # each group member's loan: 1,000.00 LND
SAVE = 10_000               # her compulsory savings: 10 % of it
SLICES = {"mfi": 75_000, "dan": 50_000, "eve": 25_000}        # fay's 1,500.00, 3:2:1
OFFER = dict(products=["business"], methods=["annuity"], periods=["weekly"], min_term=1,
             max_term=12, max_grace=0, tiers=[[300, 1800, 200_000]], late_fee_bps=500,
             tolerance_days=0, default_days=6, collateral_bps=0, origination_fee_bps=0,
             penalty_bps=0)
APPLY = dict(purpose="stock for the stall", term=4, period="weekly", method="annuity",
             product="business", grace=0, docs_hash=hashlib.sha256(b"demo-group").digest(),
             max_rate_bps=1800, max_late_fee_bps=500,
             min_default_days=6, max_penalty_bps=0, max_origination_fee_bps=0)
GROUP = ("amy", "bea", "cal")


def run_group(d, apis, say, wallets) -> dict:
    """The second act on the cluster `d` drives; returns the final state."""
    w = wallets(["mfi", *GROUP, "dan", "eve", "fay"])
    say("wallets created: mfi (a lender and savings provider), amy, bea and cal (a group), "
        "dan and eve (lenders), fay (a borrower)")
    faucet = keys.Keypair.from_name("faucet")
    for name, amount in (("mfi", 500_000), ("dan", 60_000), ("eve", 30_000), ("amy", 60_000),
                         ("bea", 20_000), ("cal", 20_000), ("fay", 10_000)):
        d.send(faucet, "transfer", f"{money(amount)} from the dev faucet to {name}",
               to=w[name].address, amount=amount)
    h32 = APPLY["docs_hash"]
    for name in ("mfi", "dan", "eve"):
        d.send(w[name], "register_lender", f"{name} registers as a lender", profile_hash=h32)
    offer = d.send(w["mfi"], "publish_offer", "mfi offers weekly annuities over 4 weeks at "
                   "18% a year", amount=400_000, **OFFER)["hash"]
    product = keys.derive_address(b"savings", bytes.fromhex(d.send(
        w["mfi"], "savings_product", "mfi opens a savings product paying 4% a year, with "
        f"{money(5_000)} set aside for the interest", name="compulsory savings",
        rate_bps=400, reserve=5_000)["hash"]))
    for name in (*GROUP, "fay"):
        d.send(w[name], "register_borrower", f"{name} registers as a borrower",
               profile_hash=h32, docs_hash=h32)
    group = keys.derive_address(b"group", bytes.fromhex(d.send(
        w["amy"], "group_create", "amy forms the group 'riverside traders' with bea and "
        "cal; each loan needs 10% of it saved and pledged", name="riverside traders",
        members=[w[n].address for n in GROUP], savings_bps=1_000)["hash"]))
    for name in GROUP[1:]:
        d.send(w[name], "group_join", f"{name} joins the group", group=group)
    loans = {}
    for name in GROUP:
        d.send(w[name], "savings_deposit", f"{name} saves {money(SAVE)}", product=product,
               amount=SAVE)
        app = d.send(w[name], "group_apply", f"{name} applies through the group for "
                     f"{money(LOAN)}", group=group, amount=LOAN, **APPLY)["hash"]
        d.send(w[name], "savings_pledge", f"{name} pledges her savings to it",
               product=product, to=app, amount=SAVE)
        d.send(w["mfi"], "fund", f"mfi funds {name}'s loan", application=app, offer=offer,
               accept=[])
        loans[name] = d.api.get(f"/v1/applications/{app}")["loan"]
    fay_app = d.send(w["fay"], "apply", f"fay applies for {money(sum(SLICES.values()))}",
                     amount=sum(SLICES.values()), **APPLY)["hash"]
    for name, share in SLICES.items():
        d.send(w[name], "fund_share", f"{name} funds a slice of {money(share)} of it",
               application=fay_app, offer=offer, amount=share)
    loans["fay"] = d.api.get(f"/v1/applications/{fay_app}")["loan"]
    say(f"fay's loan is funded by a pool of three lenders: {loans['fay']}")

    # Chain time runs (a second is two days): everyone pays when due, except that cal
    # misses her second instalment; the group is told, and amy covers it.
    covered = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        now = d.chain_time()
        acted = False
        for name, loan in loans.items():
            ln = d.api.get(f"/v1/loans/{loan}")
            if ln["status"] != "active" or not ln["amount_due"]:
                continue
            if name == "cal" and ln["oldest_unpaid"] == 2 and covered is None:
                if ln["days_past_due"] > 0:
                    g = d.api.get(f"/v1/groups/{group}")
                    say(f"cal's instalment 2 is {ln['days_past_due']} day(s) past due: the "
                        f"group is alerted and is in arrears "
                        f"({'yes' if g['in_arrears'] else 'no'}): no member may borrow "
                        f"until it is paid")
                    d.send(w["amy"], "group_cover", f"amy covers it for the group: "
                           f"{money(ln['arrears'])}, recorded as owed to her by cal",
                           loan=loan, amount=ln["arrears"])
                    covered = ln["arrears"]
                    acted = True
                continue
            if ln["due_time"] - now <= 2 * DAY:
                d.send(w[name], "repay", f"{name} pays instalment {ln['instalment']} of 4: "
                       f"{money(ln['amount_due'])}", loan=loan, amount=ln["amount_due"])
                acted = True
        if all(d.api.get(f"/v1/loans/{x}")["status"] == "repaid" for x in loans.values()):
            break
        if not acted:
            time.sleep(0.1)
    status = {n: d.api.get(f"/v1/loans/{x}")["status"] for n, x in loans.items()}
    if any(s != "repaid" for s in status.values()):
        raise click.ClickException(f"the loans did not all close in time: {status}")
    # the pool splits what fay's loan paid it at the block after each payment
    until = time.monotonic() + 10
    while (pool := d.api.get(f"/v1/pools/{fay_app}"))["undistributed"] and \
            time.monotonic() < until:
        time.sleep(0.1)
    got = {sl["lender"]: sl["received"] for sl in pool["slices"]}
    received = {n: got[w[n].address] for n in SLICES}
    say("fay's repayments reached her three lenders by slice (3:2:1), to the unit: "
        + ", ".join(f"{n} {money(r)}" for n, r in received.items())
        + f", {money(sum(received.values()))} in all")
    savings = {}
    for name in GROUP:
        acct = d.api.get(f"/v1/savings/{product}/{w[name].address}")
        d.send(w[name], "savings_withdraw", f"{name}'s loan is repaid, her pledge released: "
               f"she withdraws {money(acct['balance'])}", product=product,
               amount=acct["balance"])
        savings[name] = acct["balance"]
    group_rec = d.api.get(f"/v1/groups/{group}")
    top = max(a.status()["height"] for a in apis)
    for a in apis:
        a.wait_height(top, 30)
    views = [{"state_root": a.get(f"/v1/blocks/{top}")["state_root"],
              "balances": {n: a.get(f"/v1/accounts/{k.address}")["balance"]
                           for n, k in w.items()},
              "loans": {n: a.get(f"/v1/loans/{x}")["status"] for n, x in loans.items()}}
             for a in apis]
    same = all(v == views[0] for v in views)
    say(f"checked height {top} on all {len(apis)} nodes: "
        + ("identical" if same else "DIFFERENT"))
    return {"height": top, "identical_on_all_nodes": same, **views[0], "group": group,
            "covered_by_amy": covered,
            "received": received, "slices": SLICES,
            "group_record": {k: group_rec[k] for k in ("covers", "covered_amount", "lates",
                                                       "defaults")},
            "savings_withdrawn": savings}


def print_group(r: dict) -> None:
    click.echo("")
    g = r["group_record"]
    click.echo(f"the group's record: {g['lates']} late instalment(s), {g['covers']} cover(s) "
               f"of {money(g['covered_amount'])}, {g['defaults']} default(s); fay's lenders "
               f"received " + ", ".join(f"{n} {money(v)} (slice {money(r['slices'][n])})"
                                        for n, v in r["received"].items()))
    click.echo(f"final state at height {r['height']} (identical on every node: "
               f"{'yes' if r['identical_on_all_nodes'] else 'NO'}), {r['seconds']} s:")
    for n, b in r["balances"].items():
        saved = r["savings_withdrawn"].get(n)
        extra = f"  (withdrew savings {money(saved)})" if saved is not None else ""
        loan = f"  loan {r['loans'][n]}" if n in r["loans"] else ""
        click.echo(f"  {n:<5} balance {money(b):>12}{loan}{extra}")
