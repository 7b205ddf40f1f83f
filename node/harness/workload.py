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
from lendnet.ledger import keys, tx as txm
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
    """Clients and their habits. Besides plain loans (the lender funds each application
    from its offer) the workload runs every product of docs/PRODUCTS.md: the lender also
    keeps a savings product; the first three borrowers form a group and apply through
    it; some applications are filled in slices by the lender and a co-lender (shared
    loans) or guaranteed by a guarantor; borrowers save, pledge their savings, withdraw,
    and cover a fellow member's loan."""

    def __init__(self, chain: str, seed: int, rng, total_txs: int, borrowers: int = 4,
                 spenders: int = 3):
        self.chain = chain
        self.rng = rng
        self.total = total_txs
        self.lender = Client("lender", seed)
        self.colender = Client("colender", seed)
        self.guarantor = Client("guarantor", seed)
        self.borrowers = [Client(f"borrower-{i}", seed) for i in range(borrowers)]
        self.spenders = [Client(f"spender-{i}", seed) for i in range(spenders)]
        self.clients = [self.lender, self.colender, self.guarantor, *self.borrowers,
                        *self.spenders]
        self.created: dict[bytes, bytes] = {}        # tx hash -> raw: everything submitted
        self.stage = {c.name: 0 for c in self.clients}
        self.funded: set[str] = set()
        self.guaranteed: set[str] = set()
        self.filled: set[str] = set()                # pools the co-lender filled
        self.group: str | None = None                # the members' group, once created
        self.product: str | None = None              # the lender's savings product
        self.members = self.borrowers[:3]
        self.joined: set[str] = set()               # members who sent their group_join
        self.seen: dict[str, int] = {}               # application -> the step first seen
        self.steps = 0

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
        self.steps += 1
        c = self.rng.choice(self.clients)
        if len(c.pending) > 8:
            return []                               # a wallet waits for its backlog
        if c is self.lender:
            return self._lender(c, ledger.state)
        if c is self.colender:
            return self._colender(c, ledger.state)
        if c is self.guarantor:
            return self._guarantor(c, ledger.state)
        if c in self.borrowers:
            return self._borrower(c, ledger.state)
        to = self.rng.choice([x for x in self.clients if x is not c]).kp.address
        return [self._new(c, "transfer", to=to, amount=self.rng.randint(1, 100_000))]

    def _open_apps(self, st) -> list[str]:
        return sorted(a for a, rec in st.applications.items()
                      if rec["status"] == "open" and a not in self.funded)

    def _offer(self, st) -> str | None:
        offers = sorted(o for o, rec in st.offers.items()
                        if rec["lender"] == self.lender.kp.address and rec["active"])
        return offers[0] if offers else None

    def _lender(self, c: Client, st) -> list[bytes]:
        h32 = H(c.name.encode()).digest()
        stage = self.stage[c.name]
        if stage < 3:
            self.stage[c.name] = stage + 1
            if stage == 0:
                return [self._new(c, "register_lender", profile_hash=h32)]
            if stage == 1:
                return [self._new(c, "publish_offer", amount=40_000_000, **OFFER)]
            raw = self._new(c, "savings_product", name="sim savings", rate_bps=300,
                            reserve=1_000_000)
            self.product = keys.derive_address(b"savings", txm.parse(raw).hash)
            return [raw]
        offer = self._offer(st)
        # An application waits one look before it is funded, so a guarantor and the
        # borrower's savings pledge can reach it first.
        apps = [a for a in self._open_apps(st) if self.seen.setdefault(a, self.steps) < self.steps]
        if not (offer and apps):
            return []
        app = apps[0]
        self.funded.add(app)
        if self.rng.randrange(3) == 0:          # a shared loan: half now, the co-lender the rest
            half = st.applications.get(app)["amount"] // 2
            return [self._new(c, "fund_share", application=app, offer=offer, amount=half)]
        return [self._new(c, "fund", application=app, offer=offer, accept=[])]

    def _colender(self, c: Client, st) -> list[bytes]:
        if self.stage[c.name] == 0:
            self.stage[c.name] = 1
            return [self._new(c, "register_lender", profile_hash=H(c.name.encode()).digest())]
        # fill what is left of a pool the lender started
        for app, rec in sorted(st.applications.items()):
            pool = st.pools.get(rec["pool"]) if rec.get("pool") else None
            if rec["status"] == "open" and pool and pool["status"] == "open" and \
                    rec["pool"] not in self.filled:
                self.filled.add(rec["pool"])
                return [self._new(c, "fund_share", application=app, offer=pool["offer"],
                                  amount=pool["target"] - pool["filled"])]
        return []

    def _guarantor(self, c: Client, st) -> list[bytes]:
        apps = [a for a in self._open_apps(st) if a not in self.guaranteed]
        if not apps or self.rng.randrange(2):
            return []
        self.guaranteed.add(apps[-1])
        least = -(-st.applications.get(apps[-1])["amount"] // 20)     # 5 % of the principal
        return [self._new(c, "guarantee", to=apps[-1],
                          amount=least + self.rng.randint(0, 40_000))]

    def _borrower(self, c: Client, st) -> list[bytes]:
        h32 = H(c.name.encode()).digest()
        me = c.kp.address
        if self.stage[c.name] == 0:
            self.stage[c.name] = 1
            return [self._new(c, "register_borrower", profile_hash=h32, docs_hash=h32)]
        if c is self.members[0] and self.group is None:
            raw = self._new(c, "group_create", name="sim group", savings_bps=0,
                            members=[m.kp.address for m in self.members])
            self.group = keys.derive_address(b"group", txm.parse(raw).hash)
            return [raw]
        if c in self.members[1:] and self.group and c.name not in self.joined:
            self.joined.add(c.name)
            return [self._new(c, "group_join", group=self.group)]
        mine = sorted(a for a, rec in st.applications.items()
                      if rec["borrower"] == me and rec["status"] == "open")
        loans = sorted(ln for ln, rec in st.loans.items() if rec["borrower"] == me)
        active = [ln for ln in loans if st.storage.get((ln, LOAN_KEY["st"])) == ACTIVE]
        roll = self.rng.randrange(20)
        if active and roll < 10:
            return [self._new(c, "repay", loan=self.rng.choice(active),
                              amount=self.rng.randint(1_000, 40_000))]
        if self.product and roll in (10, 11):
            if mine and roll == 11:              # cash collateral for the application
                return [self._new(c, "savings_pledge", product=self.product, to=mine[0],
                                  amount=self.rng.randint(1, 5_000))]
            return [self._new(c, "savings_deposit", product=self.product,
                              amount=self.rng.randint(1_000, 20_000))]
        if self.product and roll == 12:
            return [self._new(c, "savings_withdraw", product=self.product,
                              amount=self.rng.randint(1, 5_000))]
        if c in self.members and roll == 13:
            fellows = sorted(ln for ln, rec in st.loans.items()
                             if rec["borrower"] != me and st.storage.get(
                                 (ln, LOAN_KEY["st"])) == ACTIVE and st.applications.get(
                                 rec["application"]).get("group") == self.group)
            if fellows:
                return [self._new(c, "group_cover", loan=fellows[0],
                                  amount=self.rng.randint(500, 5_000))]
        if mine or (active and roll < 17):
            return []
        fields = dict(amount=self.rng.randint(20_000, 140_000), purpose="sim",
                      term=self.rng.randint(2, 12),
                      period=self.rng.choice(["monthly", "weekly"]),
                      method=self.rng.choice(OFFER["methods"]),
                      product=self.rng.choice(OFFER["products"]),
                      grace=self.rng.randint(0, 1), docs_hash=h32, **LIMITS)
        if c in self.members and self.group and \
                all(st.group_members.get(m.kp.address) == self.group for m in self.members):
            return [self._new(c, "group_apply", group=self.group, **fields)]
        return [self._new(c, "apply", **fields)]
