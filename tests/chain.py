"""A test chain: a ledger, named keys with their nonces, and blocks at chosen chain times."""
from __future__ import annotations

import hashlib

from lendnet.ledger import lending, tx as txm
from lendnet.ledger.keys import Keypair

CHAIN = "lendnet-test"
T0 = 1_767_225_600          # 2026-01-01T00:00:00Z
DAY = 86_400
H = hashlib.sha256


def h32(text: str) -> bytes:
    return H(text.encode()).digest()


OFFER_TERMS = dict(products=["consumer", "business"], methods=["annuity", "equal-principal",
                   "balloon"], periods=["monthly", "weekly"], min_term=1, max_term=36,
                   max_grace=3, tiers=[[300, 2400, 200_000], [650, 1200, 1_000_000]],
                   late_fee_bps=500, tolerance_days=3, default_days=30, collateral_bps=0,
                   origination_fee_bps=0, penalty_bps=0)
# An application's limits that OFFER_TERMS fits: apply(**APPLY_LIMITS, ...).
APPLY_LIMITS = dict(max_rate_bps=2400, max_late_fee_bps=500, min_default_days=30,
                    max_penalty_bps=0, max_origination_fee_bps=0)


def limits_for(offer: dict) -> dict:
    """The tightest limits an application can sign and still fit `offer`'s terms."""
    return dict(max_rate_bps=max(t[1] for t in offer["tiers"]),
                max_late_fee_bps=offer["late_fee_bps"], min_default_days=offer["default_days"],
                max_penalty_bps=offer.get("penalty_bps", 0),
                max_origination_fee_bps=offer.get("origination_fee_bps", 0))


REGISTRAR = "registrar"       # the test chain's appraiser and identity registrar


class Chain:
    def __init__(self, balances: dict[str, int] | None = None, names=("lender", "alice", "bob"),
                 fee_params: dict | None = None, lending_params: dict | None = None):
        names = (*names, REGISTRAR) if REGISTRAR not in names else names
        self.keys = {n: Keypair.from_name(n) for n in names}
        funds = balances or {n: 10_000_000 for n in names}
        # the registrar pays for its attestations (Chain.attest) whatever else is funded
        funds = {REGISTRAR: 10_000_000, **funds}
        registrar = [self.keys[REGISTRAR].address]
        self.ledger = lending.genesis(CHAIN, {self.keys[n].address: v for n, v in funds.items()},
                                      time=T0, fee_params=fee_params,
                                      lending_params=lending_params or {
                                          "appraisers": registrar, "registrars": registrar})
        self.nonces = {n: 0 for n in names}
        self.paid = {n: 0 for n in names}        # fees each name has paid, from receipts
        self._names = {kp.address: n for n, kp in self.keys.items()}
        self.time = T0

    def addr(self, name: str) -> str:
        return self.keys[name].address

    def tx(self, name: str, kind: str, /, **fields) -> txm.SignedTx:
        """A signed transaction from `name` with its next nonce (counted when built)."""
        kp = self.keys[name]
        body = txm.build(kp, CHAIN, kind, self.nonces[name], **fields)
        self.nonces[name] += 1
        return txm.sign(body, [kp])

    def block(self, *txs, at: int | None = None, strict: bool = True):
        self.time = self.time + 60 if at is None else at
        result = self.ledger.apply_block(self.ledger.height + 1, self.time, list(txs),
                                         strict=strict)
        for tx, r in zip(txs, result.receipts):
            if tx.sender in self._names:
                self.paid[self._names[tx.sender]] += r.fee
        return result

    def do(self, name: str, kind: str, /, **fields):
        """Apply one transaction in its own block; return it (its id names what it made)."""
        t = self.tx(name, kind, **fields)
        self.block(t)
        return t

    def try_do(self, name: str, kind: str, /, **fields):
        """Apply one transaction that may fail; return its receipt."""
        t = self.tx(name, kind, **fields)
        r = self.block(t, strict=False).receipts[0]
        if not r.nonce_used:
            self.nonces[name] -= 1
        return r

    def attest(self, name: str, identity: str | None = None):
        """The registrar attests `name`'s address as the person `identity` (default: the
        name itself), so its loans build an attested history rather than a thin file."""
        return self.do(REGISTRAR, "attest_identity", borrower=self.addr(name),
                       identity=h32("person:" + (identity or name)))

    def advance(self, seconds: int):
        """An empty block `seconds` later: chain time alone moves the loans."""
        return self.block(at=self.time + seconds)

    def balance(self, name: str) -> int:
        return self.ledger.balance(self.addr(name))

    def pledge_asset(self, name: str, asset: str, value: int, to: str,
                     appraise: bool = True) -> str:
        """`name` registers `asset` at `value`, the registrar appraises it at that value
        (unless `appraise` is false) and `name` pledges it `to` an application or loan;
        returns the asset's id."""
        aid = f"{self.addr(name)}/{asset}"
        self.do(name, "register_collateral", asset=asset, description_hash=h32(asset),
                value=value)
        if appraise:
            self.do(REGISTRAR, "appraise", asset=aid, value=value)
        self.do(name, "pledge", asset=aid, to=to)
        return aid

    def events(self, result, name=None):
        return [e for e in result.events if name is None or e["name"] == name]
