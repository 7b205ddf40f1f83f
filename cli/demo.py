"""`lendnet demo`: the whole lending lifecycle on a real local cluster, in one command.

Starts a 4-node cluster whose chain clock runs fast (dev genesis: one real second is two
chain days), creates a lender and two borrowers, and runs one loan to full repayment and
one to default, its collateral sold for the debt and the rest returned to the borrower —
every step a signed transaction committed by consensus. It then reads the final
balances, scores and collateral from every node, checks they are identical, and stops
the cluster it started.

Interrupted at any moment — Ctrl-C or SIGTERM, even while the cluster is starting — it
stops the cluster, prints one line and exits 130 (SIGINT) or 143 (SIGTERM); `--keep`
does not apply then. The nodes are also tied to the demo's process: if it dies without
cleaning up (SIGKILL), the kernel sends them SIGTERM (Linux).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import click

from lendnet.ledger import keys
from lendnet.ledger.settlement import SALE_DAYS
from lendnet.ledger import tx as txm
from lendnet.node.daemon.client import ApiError, NodeClient
from lendnet.node.harness.cluster import Cluster, ClusterError
from lendnet.node.daemon.home import DEV_FAUCET, FAST_CLOCK

from .common import money, pct
from .demo_group import print_group, run_group

DAY = 86_400
DEMO_PARAMS = {"time_scale": FAST_CLOCK, "empty_block_ms": 250}   # 1 s = 2 chain days
PRINCIPAL = 100_000                                              # 1,000.00 LND
ASSETS = {"ana": 60_000, "ben": 150_000}            # what each borrower's collateral is worth
BID = 130_000                                       # carol's bid for ben's goats


class Demo:
    def __init__(self, api: NodeClient, chain: str, say):
        self.api = api
        self.chain = chain
        self.say = say
        self.nonces: dict[str, int] = {}

    def send(self, kp, kind: str, what: str, /, **fields) -> dict:
        nonce = self.nonces.get(kp.address)
        if nonce is None:
            nonce = self.api.account(kp.address)["nonce"]
        raw = txm.sign(txm.build(kp, self.chain, kind, nonce, **fields), [kp]).raw
        self.nonces[kp.address] = nonce + 1
        h = self.api.submit(raw)
        st = self.api.wait_committed(h, 30)
        if st["status"] != "committed":
            raise click.ClickException(f"{kind} failed: {st.get('error')}")
        self.say(f"{what}  [{kind}, height {st['height']}]")
        return {**st, "hash": h}

    def chain_time(self) -> int:
        h = self.api.status()["height"]
        return self.api.get(f"/v1/blocks/{h}")["header"]["time"]


def _wallets(names: list[str]) -> dict[str, keys.Keypair]:
    from .keystore import create
    return {n: create(n, None) for n in names}      # dev mode: unencrypted, throwaway


@click.command("demo")
@click.option("--nodes", type=click.IntRange(4, 7), default=4, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the cluster running afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON.")
@click.option("--group", "group_act", is_flag=True,
              help="Run the second act instead: a group loan with compulsory savings, "
                   "a missed instalment the group covers, and a loan shared by three "
                   "lenders (docs/PRODUCTS.md).")
def demo(nodes, keep, as_json, group_act):
    """Run a lender and two borrowers through a loan repaid in full and a loan that
    defaults, on a fresh local cluster; check every node ends in the same state.
    With --group, microfinance's own products instead: group loans, savings, and a
    loan funded by several lenders."""
    caught: list[int] = []

    def interrupt(signum, frame):
        if caught:
            return                # already unwinding: let the cleanup finish
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _demo(nodes, keep, as_json, group_act)
    except KeyboardInterrupt:
        caught.append(signal.SIGINT)                   # (in case it was raised otherwise)
        click.echo("interrupted: cluster stopped", err=True)
        raise SystemExit(128 + caught[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _demo(nodes, keep, as_json, group_act=False):
    t0 = time.monotonic()
    step = [0]

    def say(text: str) -> None:
        step[0] += 1
        if not as_json:
            click.echo(f"{time.monotonic() - t0:5.1f}s  {step[0]:>2}. {text}")

    work = Path(tempfile.mkdtemp(prefix="lendnet-demo-"))
    os.environ["LENDNET_WALLETS"] = str(work / "wallets")
    cluster = Cluster(work / "cluster", tied=not keep)
    members = None
    finished = False
    try:                  # from the first spawn on: whatever happens, `finally` stops it
        try:
            members = cluster.up(nodes, wait_s=60, params=DEMO_PARAMS)
        except ClusterError as e:
            raise click.ClickException(f"cannot start the demo cluster: {e}")
        apis = [NodeClient(m.api, timeout=10) for m in members]
        say(f"{nodes} validators committing on " + ", ".join(m.api for m in members))
        d = Demo(apis[0], apis[0].status()["chain_id"], say)
        result = (run_group(d, apis, say, _wallets) if group_act else _run(d, apis, say))
        finished = True
    except (ApiError, OSError, TimeoutError, txm.TxError) as e:
        raise click.ClickException(f"the demo failed: {e}")
    except KeyboardInterrupt:
        members = keep = None                          # stop it, and say so only once
        raise
    finally:
        if keep and members:
            click.echo(f"cluster left running: lendnet cluster down --home {work / 'cluster'}",
                       err=True)
        else:
            cluster.down()
            if members:
                say("cluster stopped")
            _clean_up(work, finished)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        (print_group if group_act else _print)(result)
    if not result["identical_on_all_nodes"]:
        raise SystemExit(1)


def _clean_up(work: Path, finished: bool) -> None:
    """The demo's directory holds dev keys and four nodes' stores: gone after a run that
    finished; kept, and named, after one that did not (its node logs say why)."""
    if not finished:
        click.echo(f"the demo's nodes, stores and logs are in {work}", err=True)
        return
    try:
        shutil.rmtree(work)
    except OSError as e:
        click.echo(f"warning: could not remove {work}: {e}", err=True)


def _run(d: Demo, apis: list[NodeClient], say) -> dict:
    w = _wallets(["lender", "ana", "ben"])
    lender, ana, ben = w["lender"], w["ana"], w["ben"]
    say("wallets created: lender, ana and ben (dev keystore, unencrypted)")
    faucet = keys.Keypair.from_name(DEV_FAUCET)             # funded by the dev genesis
    for kp, amount in ((lender, 500_000), (ana, 150_000), (ben, 10_000)):
        d.send(faucet, "transfer", f"{money(amount)} from the dev faucet to "
               f"{[n for n, k in w.items() if k is kp][0]}", to=kp.address, amount=amount)
    h32 = hashlib.sha256(b"demo").digest()
    d.send(lender, "register_lender", "lender registers", profile_hash=h32)
    offer = d.send(lender, "publish_offer", "lender offers 3,000.00 LND: weekly annuities "
                   "up to 12 weeks, 18% a year from score 300, collateral worth half",
                   amount=300_000, products=["business"], methods=["annuity"],
                   periods=["weekly"], min_term=1, max_term=12, max_grace=0,
                   tiers=[[300, 1800, 200_000]], late_fee_bps=500, tolerance_days=0,
                   default_days=2, collateral_bps=5_000, origination_fee_bps=100,
                   penalty_bps=0)["hash"]
    loans = {}
    registrar = keys.Keypair.from_name("registrar")         # the dev genesis's registrar
    for name, kp, asset in (("ana", ana, "ana-sewing-machine"), ("ben", ben, "ben-goats")):
        d.send(kp, "register_borrower", f"{name} registers as a borrower",
               profile_hash=h32, docs_hash=h32)
        d.send(registrar, "attest_identity", f"the registrar attests {name}'s identity: "
               f"{name}'s loans now build a credit history (unattested: a thin file)",
               borrower=kp.address, identity=hashlib.sha256(f"demo:{name}".encode()).digest())
        app = d.send(kp, "apply", f"{name} applies for {money(PRINCIPAL)} over 4 weeks",
                     amount=PRINCIPAL, purpose="stock for the shop", term=4, period="weekly",
                     method="annuity", product="business", grace=0, docs_hash=h32,
                     # the terms the borrower consents to (this demo's clock runs 2 days
                     # a second, so default 2 days after a missed due date is allowed)
                     max_rate_bps=1800, max_late_fee_bps=500, min_default_days=2,
                     max_penalty_bps=0, max_origination_fee_bps=100)["hash"]
        worth = ASSETS[name]
        d.send(kp, "register_collateral", f"{name} registers {asset}, declared worth "
               f"{money(worth)}", asset=asset, description_hash=h32, value=worth)
        asset_id = f"{kp.address}/{asset}"
        accept = [[asset_id, worth]]
        if name == "ben":       # appraised: its value counts for any lender, and at a sale
            d.send(registrar, "appraise", f"the registrar, also the dev chain's appraiser, "
                   f"appraises {asset} at {money(worth)}", asset=asset_id, value=worth)
            accept = []
        d.send(kp, "pledge", f"{name} pledges {asset} to the application", asset=asset,
               to=app)
        q = d.api.get(f"/v1/quote?application={app}&offer={offer}")
        say(f"{name}'s quote: repays {money(q['repaid'])} for {money(q['received'])} "
            f"received, APR {pct(q['apr_bps'])} with the fee; within {name}'s limits: "
            f"{'yes' if q['within_limits'] else 'no'}")
        how = f"accepting {asset} at {money(worth)}" if accept else f"{asset} appraised"
        d.send(lender, "fund", f"lender funds {name}'s application, {how}: the loan contract "
               f"disburses {money(PRINCIPAL)}, {money(PRINCIPAL // 100)} of it the "
               f"origination fee", application=app, offer=offer, accept=accept)
        loans[name] = d.api.get(f"/v1/applications/{app}")["loan"]
    # Ana pays each instalment as it comes due; Ben pays nothing, defaults, and his goats
    # go up for sale: carol bids while the sale is open.
    ana_loan, ben_loan = loans["ana"], loans["ben"]
    deadline = time.monotonic() + 45
    book = sale = None
    while time.monotonic() < deadline:
        ln = d.api.get(f"/v1/loans/{ana_loan}")
        if ln["status"] == "active" and ln["amount_due"] and \
                ln["due_time"] - d.chain_time() <= 2 * DAY:
            d.send(ana, "repay", f"ana pays instalment {ln['instalment']} of 4: "
                   f"{money(ln['amount_due'])}", loan=ana_loan, amount=ln["amount_due"])
            continue
        if sale is None and d.api.get(f"/v1/loans/{ben_loan}")["status"] == "defaulted":
            book = d.api.get(f"/v1/portfolio?lender={lender.address}")
            say(f"ben's loan defaulted: the lender's book has {money(book['outstanding'])} "
                f"outstanding, PAR1 {pct(book['par1_bps'] or 0)}, PAR30 "
                f"{pct(book['par30_bps'] or 0)}")
            sale = _bid(d, ben_loan)
            continue
        if ln["status"] != "active" and sale is not None:
            break
        time.sleep(0.1)
    if sale is None:
        raise click.ClickException("ben's loan did not default in time")
    surplus = _settle(d, sale, ben_loan, ben, deadline)
    for name, loan in loans.items():
        ln = d.api.get(f"/v1/loans/{loan}")
        say(f"{name}'s loan is {ln['status']}")
    # Every node must show the same end state.
    top = max(a.status()["height"] for a in apis)
    for a in apis:
        a.wait_height(top, 30)
    views = []
    for a in apis:
        views.append({
            "state_root": a.get(f"/v1/blocks/{top}")["state_root"],
            "balances": {n: a.get(f"/v1/accounts/{k.address}")["balance"] for n, k in w.items()},
            "scores": {n: a.get(f"/v1/scores/{w[n].address}")["score"] for n in ("ana", "ben")},
            "loans": {n: a.get(f"/v1/loans/{loan}")["status"] for n, loan in loans.items()},
            "collateral": {asset: a.get(f"/v1/assets/{w[who].address}/{asset}")["owner"]
                           for who, asset in (("ana", "ana-sewing-machine"),
                                              ("ben", "ben-goats"))},
        })
    same = all(v == views[0] for v in views)
    say(f"checked height {top} on all {len(apis)} nodes: "
        + ("identical" if same else "DIFFERENT"))
    final = views[0]
    owners = {k.address: n for n, k in w.items()}
    owners[keys.Keypair.from_name("carol").address] = "carol"
    return {"height": top, "identical_on_all_nodes": same, **final,
            "collateral": {a: owners.get(o, o) for a, o in final["collateral"].items()},
            "rate": pct(1800), "surplus_to_ben": surplus,
            "book_at_default": {k: book[k] for k in ("outstanding", "par1_bps", "par30_bps",
                                                     "par90_bps")}}


def _bid(d: Demo, loan: str) -> dict:
    """The defaulted loan's collateral is up for sale: carol (a dev account) bids."""
    carol = keys.Keypair.from_name("carol")
    sale = d.api.get(f"/v1/sales?loan={loan}")["sales"][0]
    d.send(carol, "bid", f"{sale['asset'].split('/')[1]} go up for sale for "
           f"{SALE_DAYS} chain days (reserve {money(sale['reserve'])}); carol bids "
           f"{money(BID)}", sale=sale["sale"], amount=BID)
    return sale


def _settle(d: Demo, sale: dict, loan: str, borrower, deadline: float) -> int:
    """Once the sale has closed carol settles it: the price pays the debt and the rest
    goes back to the borrower. Returns what the borrower got back."""
    while time.monotonic() < deadline and d.chain_time() < sale["closes"]:
        time.sleep(0.1)
    claim = d.api.get(f"/v1/loans/{loan}")["payoff"]
    before = d.api.account(borrower.address)["balance"]
    d.send(keys.Keypair.from_name("carol"), "settle_sale", f"the sale closes; carol settles "
           f"it: {money(claim)} pays ben's debt, {money(BID - claim)} goes back to ben",
           sale=sale["sale"])
    return d.api.account(borrower.address)["balance"] - before


def _print(r: dict) -> None:
    click.echo("")
    b = r["book_at_default"]
    click.echo(f"at ben's default the lender's book had PAR1 {pct(b['par1_bps'] or 0)}, "
               f"PAR30 {pct(b['par30_bps'] or 0)}; the sale of ben's goats returned "
               f"{money(r['surplus_to_ben'])} to ben beyond his debt")
    click.echo(f"final state at height {r['height']} (identical on every node: "
               f"{'yes' if r['identical_on_all_nodes'] else 'NO'}), {r['seconds']} s:")
    for n, b in r["balances"].items():
        click.echo(f"  {n:<7} balance {money(b):>16}")
    for n, s in r["scores"].items():
        click.echo(f"  {n:<7} loan {r['loans'][n]:<10} credit score {s}")
    for a, o in r["collateral"].items():
        click.echo(f"  {a:<19} now owned by {o}")
