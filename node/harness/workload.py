"""A lending workload driven by client wallets: the same real transactions users send.

A lender registers and publishes an offer; borrowers register and apply; the lender funds
each application once it sees it committed; borrowers repay their loans in parts; other
accounts move money around. Each client signs with its own key, keeps its own nonce, and
resubmits what has not committed yet, as a wallet would. Clients read the ledger of a
node they can reach, as a wallet reads an API; all choices come from the seeded rng.
"""
from __future__ import annotations

import hashlib

from lendnet.contracts.agreements import LOAN_KEY, LOAN_STATUS
from lendnet.ledger import tx as txm
from lendnet.ledger.keys import Keypair

ACTIVE = next(code for code, name in LOAN_STATUS.items() if name == "active")

OFFER = dict(products=["consumer", "business", "agriculture", "education"],
             methods=["annuity", "equal-principal", "balloon"], periods=["monthly", "weekly"],
             min_term=1, max_term=24, max_grace=2, tiers=[[300, 2400, 150_000],
                                                         [600, 1500, 500_000]],
             late_fee_bps=500, tolerance_days=3, default_days=60, collateral_bps=0,
             origination_fee_bps=100, penalty_bps=0)
# The limits the workload's borrowers sign in their applications: OFFER fits them.
LIMITS = dict(max_rate_bps=2400, max_late_fee_bps=500, min_default_days=60,
              max_penalty_bps=2400, max_origination_fee_bps=200)
H = hashlib.sha256


class Client:
    def __init__(self, name: str, seed: int):
        self.name = name
        self.kp = Keypair(H(f"sim-client:{seed}:{name}".encode()).digest())
        self.next_nonce = 0
        self.pending: list[tuple[int, bytes]] = []     # (nonce, raw) not yet committed

    def sign(self, chain: str, kind: str, **fields) -> bytes:
        body = txm.build(self.kp, chain, kind, self.next_nonce, **fields)
        raw = txm.sign(body, [self.kp]).raw
        self.pending.append((self.next_nonce, raw))
        self.next_nonce += 1
        return raw

    def settle(self, ledger) -> None:
        """Forget what the ledger shows as committed (its nonce has moved past it)."""
        done = ledger.account(self.kp.address)[1]
        self.pending = [(n, raw) for n, raw in self.pending if n >= done]


class LendingWorkload:
    def __init__(self, chain: str, seed: int, rng, total_txs: int, borrowers: int = 4,
                 spenders: int = 3):
        self.chain = chain
        self.rng = rng
        self.total = total_txs
        self.lender = Client("lender", seed)
        self.borrowers = [Client(f"borrower-{i}", seed) for i in range(borrowers)]
        self.spenders = [Client(f"spender-{i}", seed) for i in range(spenders)]
        self.clients = [self.lender, *self.borrowers, *self.spenders]
        self.created: dict[bytes, bytes] = {}        # tx hash -> raw: everything submitted
        self.stage = {c.name: 0 for c in self.clients}
        self.funded: set[str] = set()

    def balances(self) -> dict[str, int]:
        return {c.kp.address: 50_000_000 for c in self.clients}

    @property
    def done_creating(self) -> bool:
        return len(self.created) >= self.total

    def pending(self) -> int:
        return sum(len(c.pending) for c in self.clients)

    def _new(self, client: Client, kind: str, **fields) -> bytes:
        raw = client.sign(self.chain, kind, **fields)
        self.created[txm.parse(raw).hash] = raw
        return raw

    def step(self, ledger) -> list[bytes]:
        """One client action against what `ledger` shows: new transactions to submit."""
        for c in self.clients:
            c.settle(ledger)
        if self.done_creating:
            return []
        c = self.rng.choice(self.clients)
        if len(c.pending) > 8:
            return []                               # a wallet waits for its backlog
        st = ledger.state
        h32 = H(c.name.encode()).digest()
        if c is self.lender:
            if self.stage[c.name] == 0:
                self.stage[c.name] = 1
                return [self._new(c, "register_lender", profile_hash=h32)]
            if self.stage[c.name] == 1:
                self.stage[c.name] = 2
                return [self._new(c, "publish_offer", amount=40_000_000, **OFFER)]
            offers = sorted(o for o, rec in st.offers.rows.items()
                            if rec["lender"] == c.kp.address and rec["active"])
            apps = sorted(a for a, rec in st.applications.rows.items()
                          if rec["status"] == "open" and a not in self.funded)
            if offers and apps:
                app = apps[0]
                self.funded.add(app)
                return [self._new(c, "fund", application=app, offer=offers[0], accept=[])]
            return []
        if c in self.borrowers:
            if self.stage[c.name] == 0:
                self.stage[c.name] = 1
                return [self._new(c, "register_borrower", profile_hash=h32, docs_hash=h32)]
            loans = sorted(ln for ln, rec in st.loans.rows.items()
                           if rec["borrower"] == c.kp.address)
            active = [ln for ln in loans
                      if st.storage.get((ln, LOAN_KEY["st"])) == ACTIVE]
            if active and self.rng.randrange(10) < 7:
                return [self._new(c, "repay", loan=self.rng.choice(active),
                                  amount=self.rng.randint(1_000, 40_000))]
            if self.stage[c.name] == 1 or (not active and self.rng.randrange(2) == 0):
                self.stage[c.name] = 2
                period = self.rng.choice(["monthly", "weekly"])
                return [self._new(c, "apply", amount=self.rng.randint(20_000, 140_000),
                                  purpose="sim", term=self.rng.randint(2, 12), period=period,
                                  method=self.rng.choice(OFFER["methods"]),
                                  product=self.rng.choice(OFFER["products"]),
                                  grace=self.rng.randint(0, 1), docs_hash=h32, **LIMITS)]
            return []
        to = self.rng.choice([x for x in self.clients if x is not c]).kp.address
        return [self._new(c, "transfer", to=to, amount=self.rng.randint(1, 100_000))]
