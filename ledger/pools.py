"""Shared funding: an application filled by several lenders in slices (issue 18).

The first slice makes the application's pool: an instance of the pool agreement
(`contracts/agreements/pool.lasm`), which holds the slices' money. Its sender must be the
lender of the offer it names (the lead lender), and the offer's terms must fit the
application as they would for `fund`, except that the offer's escrow is not used: the
slices fund the loan. Later slices name the same offer and may come from any registered
lender. When the slices reach the application's amount the loan is originated as `fund`
originates it (`lending._originate`), with the principal from the pool and the pool's
address as the loan's lender; the loan agreement then pays the pool, and the pool splits
what it receives among the slices pro rata (the rounding rule is the agreement's, stated
in its header). A pool not full SHARE_DAYS chain days after its first slice expires and
refunds every slice; withdrawing the application refunds them too.

The agreement makes the decisions (who put in what, what is left to fill, who gets what
of a distribution); this module checks the transaction, moves the money in, runs the
agreement and keeps the record the API and the loan books read.
"""
from __future__ import annotations

from lendnet.contracts.agreements import POOL_SLICE_ROWS

from . import keys
from .ledger import Ledger
from .tx import SignedTx, TxError

DAY = 86_400
SHARE_DAYS = 14             # a pool not full this many chain days after its first slice expires
MAX_SLICES = 20             # slices (lenders) per pool: pool.lasm's MAX_SLICES
# Gas of one run of the pool agreement from a transaction (storage included), measured by
# tests/test_pools.py::test_gas_of_the_pool_agreement: init 1,492; a new slice of a pool
# already holding 19, 2,462 (a new slice stores its lender's 42-byte address); lend 1,120;
# refund of 19 slices (the most an unfilled pool holds: 20 always fill it) 1,458.
# POOL_GAS is over twice the most.
POOL_GAS = 5_000
# A distribution among 20 slices took 3,370 to 3,784 (the most: a residue of 19 units,
# each a slice's fraction tested); it runs as the pool's tick (the chain's
# duty, TICK_GAS), never inside a transaction: a repayment's budget (lending.REPAY_GAS) is
# sized for the loan agreement's run alone.
# A slice runs at most init, add and lend of the pool, and the loan agreement's init.
POOL_RUNS = 3
# Who may decide for a shared loan's lenders what one lender decides for its own loan:
# nobody, yet. Writing off and restructuring are refused (SHARED_DECISIONS names the limit).
SHARED_DECISIONS = ("a shared loan (funded by a pool of {n} lenders) cannot be {what}: its "
                    "lenders have no single voice, and a pool does not vote (limit: "
                    "pools.SHARED_DECISIONS)")
POOL_STATUSES = ("open", "funded", "expired", "withdrawn")


def gas(loan_fund_gas: int) -> dict[str, tuple[int, int]]:
    """fund_share's fees (ledger/fees.py): fixed gas for matching and the records, and
    the most the agreements may burn (the pool's runs and, for the slice that fills it,
    the loan agreement's init under lending's FUND_GAS)."""
    return {"fund_share": (5_000, POOL_RUNS * POOL_GAS + loan_fund_gas)}


def pool_of(led: Ledger, app: dict) -> tuple[str, dict] | None:
    """The application's latest pool (address, record), or None."""
    addr = app.get("pool")
    return None if addr is None else (addr, led.state.pools.get(addr))


def open_pool(led: Ledger, app: dict) -> tuple[str, dict] | None:
    """The application's pool while it takes slices, or None."""
    found = pool_of(led, app)
    return found if found is not None and found[1]["status"] == "open" else None


def least_new_slice(pool: dict) -> int:
    """The least a new slice may be: the target / MAX_SLICES rounded up (so MAX_SLICES
    slices always fill the pool), or all that is left when less."""
    return min(-(-pool["target"] // MAX_SLICES), pool["target"] - pool["filled"])


# --- fund_share -------------------------------------------------------------------------

def _fund_share(led: Ledger, tx: SignedTx, b: dict) -> None:
    app_id = b["application"]
    app = lending._application(led, app_id)
    if app["status"] != "open":
        raise TxError(f"application is {app['status']}, not open")
    if tx.sender not in led.state.lenders:
        raise TxError("only a registered lender can fund a share of an application")
    if lending.subject(led, tx.sender) == lending.subject(led, app["borrower"]):
        raise TxError("you cannot fund a share of your own application (the same address "
                      "or the same attested identity)")
    found = open_pool(led, app)
    addr, pool = found or _start_pool(led, tx, app_id, app, b["offer"])
    _check_slice(led, tx, pool, b)
    led.require_funds(tx.sender, b["amount"])
    led.move(tx.sender, addr, b["amount"])
    filled = led.run_contract(addr, [b"add"], tx.sender, b["amount"], POOL_GAS)
    pool = {**pool, "filled": filled, "slices": _with_slice(pool["slices"], tx.sender,
                                                            b["amount"])}
    led.state.pools.put(addr, pool)
    if filled == pool["target"]:
        _lend(led, tx, addr, pool)


def _start_pool(led: Ledger, tx: SignedTx, app_id: str, app: dict,
                offer_id: str) -> tuple[str, dict]:
    """The first slice: check the offer fits the application as `fund` would (its escrow
    aside; cover is checked when the loan starts), then make the pool."""
    offer = lending._offer(led, offer_id)
    if offer["lender"] != tx.sender:
        raise TxError("the first slice of an application must come from the offer's lender "
                      "(the lead lender); others join with later slices on the same offer")
    if not offer["active"]:
        raise TxError("offer is withdrawn: a pool starts only on an active offer")
    tier = lending.match(led, app, offer, escrow=False, cover=False)
    problems = lending.consent_problems(led, app, offer, tier[1])
    if problems:
        raise TxError("the borrower did not consent to these terms: " + "; ".join(problems))
    addr = keys.derive_address(b"pool", tx.hash)
    led.create_contract(addr, led.state.meta.get("pool_code"), tx.sender)
    pool = {"application": app_id, "offer": offer_id, "lead": tx.sender,
            "target": app["amount"], "filled": 0, "slices": [], "created": led.time,
            "expires": led.time + SHARE_DAYS * DAY, "status": "open", "loan": None}
    # The record first: the agreement's wake-up is a duty only for a known pool.
    led.state.pools.put(addr, pool)
    led.run_contract(addr, [b"init", pool["target"], pool["expires"]], tx.sender, 0,
                     POOL_GAS)
    led.state.applications.put(app_id, {**app, "pool": addr})
    return addr, pool


def _check_slice(led: Ledger, tx: SignedTx, pool: dict, b: dict) -> None:
    """A later slice, refused here with the numbers (the agreement refuses it too)."""
    if b["offer"] != pool["offer"]:
        raise TxError(f"this application is being filled by a pool on offer "
                      f"{pool['offer']}: a slice must name that offer")
    if led.time >= pool["expires"]:
        raise TxError(f"the pool expired at {pool['expires']}: its slices are refunded")
    left = pool["target"] - pool["filled"]
    if b["amount"] > left:
        raise TxError(f"a slice of {b['amount']} is more than the {left} left to fill "
                      f"(of {pool['target']})")
    if any(s[0] == tx.sender for s in pool["slices"]):
        return                          # a top-up of the sender's own slice
    if len(pool["slices"]) >= MAX_SLICES:
        raise TxError(f"the pool already holds {MAX_SLICES} slices, its most: only its "
                      f"lenders can add to their own slices")
    least = least_new_slice(pool)
    if b["amount"] < least:
        raise TxError(f"a new slice must be at least {least} (the target / {MAX_SLICES} "
                      f"rounded up, or all that is left)")


def _with_slice(slices: list, lender: str, amount: int) -> list:
    """The slices with `amount` more for `lender` (a top-up, or a new slice at the end:
    the agreement's order)."""
    for i, (who, have) in enumerate(slices):
        if who == lender:
            return [*slices[:i], [who, have + amount], *slices[i + 1:]]
    return [*slices, [lender, amount]]


def _lend(led: Ledger, tx: SignedTx, addr: str, pool: dict) -> None:
    """Full: the loan starts as `fund` starts it, its principal from the pool."""
    lending._originate(led, tx, pool["application"], pool["offer"], pool=addr)
    app = led.state.applications.get(pool["application"])
    led.state.pools.put(addr, {**pool, "status": "funded", "loan": app["loan"],
                               "funded": led.time})
    offer = led.state.offers.get(pool["offer"])
    led.state.offers.put(pool["offer"], {**offer,
                                         "pooled": offer.get("pooled", 0) + pool["target"],
                                         "pooled_loans": offer.get("pooled_loans", 0) + 1})
    schedule_distribution(led, addr)        # the origination fee, paid to the pool


def lend_principal(led: Ledger, addr: str, loan: str, caller: str) -> None:
    """The pool pays the loan its principal (lending._originate, for a pooled loan)."""
    led.run_contract(addr, [b"lend", loan.encode()], caller, 0, POOL_GAS)


# --- refunds: withdrawal and expiry -------------------------------------------------------

def refund_open(led: Ledger, app: dict, caller: str) -> None:
    """The application is withdrawn: its open pool, if any, refunds every slice."""
    found = open_pool(led, app)
    if found is not None:
        addr, pool = found
        led.run_contract(addr, [b"refund"], caller, 0, POOL_GAS)
        led.state.pools.put(addr, {**pool, "status": "withdrawn", "closed": led.time})


def observe(led: Ledger, addr: str, name: str, values: list) -> None:
    """The pool agreement's events: expiry (its tick refunded every slice)."""
    if name == "expired":
        pool = led.state.pools.get(addr)
        led.state.pools.put(addr, {**pool, "status": "expired", "closed": led.time})


# --- distribution: after the loan pays the pool -------------------------------------------

def schedule_distribution(led: Ledger, addr: str) -> None:
    """Ask the pool to split its balance at the next block, as its tick: a duty, with a
    tick's gas, so no repayment's budget has to carry it."""
    if led.balance(addr) and led.state.wakes.get(addr) != led.time:
        led.set_wake(addr, led.time)


def after_loan_run(led: Ledger, loan: str, rec: dict) -> None:
    """lending.AFTER_LOAN_RUN's step: a pooled loan's run may have paid its pool."""
    addr = rec.get("pool")
    if addr is not None:
        schedule_distribution(led, addr)


# --- what the API and the loan books read -----------------------------------------------

def slice_rows(led: Ledger, addr: str, pool: dict) -> list[dict]:
    """Each slice: its lender, amount, share of the target (bps, rounded down) and what
    the agreement has paid it (its storage, "R"||itob(i))."""
    store = led.state.storage
    return [{"lender": who, "amount": amount,
             "share_bps": amount * 10_000 // pool["target"],
             "received": store.get((addr, POOL_SLICE_ROWS["received"] + i.to_bytes(8, "big")),
                                   0)}
            for i, (who, amount) in enumerate(pool["slices"])]


def pool_view(led: Ledger, app_id: str) -> dict | None:
    """An application's latest pool as the API shows it (None: the application has had
    none, or there is no such application)."""
    app = led.state.applications.get(app_id)
    found = app and pool_of(led, app)
    if not found:
        return None
    addr, pool = found
    store = led.state.storage
    return {**pool, "pool": addr, "left": pool["target"] - pool["filled"],
            "slices": slice_rows(led, addr, pool), "max_slices": MAX_SLICES,
            "least_new_slice": least_new_slice(pool) if pool["status"] == "open" else None,
            "distributed": store.get((addr, b"d"), 0), "undistributed": led.balance(addr)}


def shares_of(led: Ledger, lender: str) -> list[tuple[str, dict, dict]]:
    """The funded pools `lender` holds a slice of: (pool address, record, its slice row).
    O(pools): only through portfolio.Portfolios, which keeps the answer per height."""
    out = []
    for addr, pool in sorted(led.state.pools.items()):
        if pool["status"] != "funded" or all(s[0] != lender for s in pool["slices"]):
            continue
        for row in slice_rows(led, addr, pool):
            if row["lender"] == lender:
                out.append((addr, pool, row))
    return out


HANDLERS = {"fund_share": _fund_share}

# lending imports this module for its handlers, fees and hooks; this module calls back
# into lending (_originate, match, ...) only when a transaction runs. Imported last, so
# either module may be imported first.
from . import lending  # noqa: E402
