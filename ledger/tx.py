"""Signed transactions: their kinds, fields, bounds and signatures.

Wire form: canonical msgpack of {"body": {...}, "sigs": [[pubkey, signature], ...]}.
Every body carries the chain id, the kind, the sending account ("from") and that
account's next nonce, so a transaction cannot be replayed on another chain or twice here.
The transaction hash is sha256 of the body's canonical encoding; each signature covers
a domain tag plus that hash. Everything checkable without the ledger state is checked
here (`parse`), with an error naming the field and what was wrong.
"""
from __future__ import annotations

from . import codec, keys

MAX_AMOUNT = 2**63 - 1
MAX_RATE_BPS = 100_000          # 1000 % a year: a bound, not a recommendation
MAX_ORIGINATION_FEE_BPS = 1_000  # an offer's fee at funding: at most 10 % of the principal
MAX_ACCEPTED = 16               # assets a lender may value in one fund transaction
ASSET_NAME_MAX = 64
# An asset's id is "<owner address>/<name>": the owner's address scopes the name.
ASSET_ID_MAX = 42 + 1 + ASSET_NAME_MAX
MAX_TX_BYTES = 32 * 1024
MAX_CODE_BYTES = 16 * 1024
MAX_SIGS = 16
MAX_CALL_GAS = 500_000       # a call or deploy init's VM budget: half of a block's contract share
MAX_GAS_PRICE = 10**9
DEFAULT_GAS_PRICE = 1           # the default chain's minimum (ledger/fees.py)
MAX_TERM = {"monthly": 360, "weekly": 520}
PERIODS = ("monthly", "weekly")
METHODS = ("annuity", "equal-principal", "balloon")
PRODUCTS = ("consumer", "business", "agriculture", "education")
REDUCE = ("term", "instalment")      # what a prepayment shortens: the term or the instalment
SIG_DOMAIN = b"lendnet/tx\x00"


class TxError(ValueError):
    """A transaction that cannot be applied: the message says which field and why, for a
    person; `code` (one of CODES) says what kind of refusal it is, for a program."""

    def __init__(self, message: str, code: str = "refused"):
        super().__init__(message)
        self.code = code


# What a refusal can be. A program switches on these, never on the message's words.
CODES = {
    "malformed": "not a well-formed transaction: encoding, fields or signatures' shape",
    "too-large": "over the size limit for one transaction",
    "wrong-chain": "signed for another chain",
    "bad-signature": "a signature does not verify",
    "unauthorised": "not signed by the keys the sending account needs",
    "nonce-used": "its nonce is used: it, or another with that nonce, is in the chain",
    "nonce-ahead": "its nonce is ahead of what the account may have waiting: send the "
                   "ones before it first, or again later",
    "nonce-taken": "another transaction with this nonce is already waiting",
    "duplicate": "already waiting in this node's mempool",
    "mempool-full": "the node's mempool is full of transactions paying as much or more: "
                    "send again later or with a higher gas price",
    "account-full": "this account has as many transactions waiting as the mempool holds "
                    "for one account: wait for some to commit",
    "fee-too-low": "its gas price is under the chain's minimum",
    "cannot-pay": "the sender's balance cannot cover the most this transaction (and those "
                  "it has waiting) may pay in fees",
    "block-full": "the block had too little gas left for its gas limit: it waits for the "
                  "next",
    "refused": "breaks a rule of the ledger or of lending (the message says which)",
}


# --- field checkers: each returns an error string or None ------------------------------

def _int_in(lo, hi):
    def check(v):
        if type(v) is not int or not lo <= v <= hi:
            return f"must be an integer from {lo} to {hi}"
    return check


def _one_of(options):
    def check(v):
        if v not in options or type(v) is not str:
            return "must be one of " + ", ".join(options)
    return check


def _text(max_len):
    def check(v):
        if type(v) is not str or not 0 < len(v) <= max_len:
            return f"must be a text of 1 to {max_len} characters"
    return check


def _bytes_len(n):
    def check(v):
        if type(v) is not bytes or len(v) != n:
            return f"must be {n} bytes"
    return check


def _list_of(item, lo, hi, unique=True):
    def check(v):
        if type(v) is not list or not lo <= len(v) <= hi:
            return f"must be a list of {lo} to {hi} items"
        for x in v:
            err = item(x)
            if err:
                return f"item {x!r} {err}"
        if unique and len(set(map(codec.encode, v))) != len(v):
            return "must not repeat an item"
    return check


def _address(v):
    if not keys.is_address(v):
        return "must be an address (ln + 40 hex digits)"


def _id(v):
    if type(v) is not str or len(v) != 64 or v.strip("0123456789abcdef"):
        return "must be an id (64 hex digits)"


def _loan_target(v):
    if _id(v) and _address(v):
        return "must be an application id or a loan address"


def _tier(v):
    if type(v) is not list or len(v) != 3:
        return "must be [min_score, rate_bps, max_principal]"
    from .score import SCORE_MIN, SCORE_MAX
    return (_int_in(SCORE_MIN, SCORE_MAX)(v[0]) or _int_in(0, MAX_RATE_BPS)(v[1])
            or _int_in(1, MAX_AMOUNT)(v[2]))


def _asset_name(v):
    if type(v) is not str or not 0 < len(v) <= ASSET_NAME_MAX or "/" in v:
        return f"must be a name of 1 to {ASSET_NAME_MAX} characters without '/'"


def _asset_id(v):
    """A full asset id "<owner address>/<name>"."""
    if type(v) is str and "/" in v:
        owner, _, name = v.partition("/")
        if keys.is_address(owner) and not _asset_name(name):
            return None
    return f"must be an asset id: <owner address>/<name> (name 1 to {ASSET_NAME_MAX} " \
           f"characters without '/')"


def _asset_ref(v):
    """What pledge takes: a full asset id, or the name of one of the sender's own."""
    if _asset_name(v) and _asset_id(v):
        return "must be an asset id (<owner address>/<name>) or the name of your own asset"


def _accepted(v):
    if type(v) is not list or len(v) != 2:
        return "must be [asset_id, value]"
    return _asset_id(v[0]) or _int_in(0, MAX_AMOUNT)(v[1])


def _arg(v):
    if type(v) is int:
        return None
    if type(v) is bytes and len(v) <= 4096:
        return None
    return "must be an integer or at most 4096 bytes"


def _code(v):
    if type(v) is not bytes or not 0 < len(v) <= MAX_CODE_BYTES:
        return f"must be 1 to {MAX_CODE_BYTES} bytes of contract code"


AMOUNT = _int_in(1, MAX_AMOUNT)
HASH = _bytes_len(32)
TERM = _int_in(1, max(MAX_TERM.values()))
GRACE = _int_in(0, 12)

# kind -> {field: checker}. The schema is the single definition of what each kind carries.
KINDS: dict[str, dict] = {
    "transfer": {"to": _address, "amount": AMOUNT},
    "register_borrower": {"profile_hash": HASH, "docs_hash": HASH},
    "register_lender": {"profile_hash": HASH},
    "publish_offer": {
        "amount": AMOUNT,
        "products": _list_of(_one_of(PRODUCTS), 1, len(PRODUCTS)),
        "methods": _list_of(_one_of(METHODS), 1, len(METHODS)),
        "periods": _list_of(_one_of(PERIODS), 1, len(PERIODS)),
        "min_term": TERM, "max_term": TERM, "max_grace": GRACE,
        "tiers": _list_of(_tier, 1, 8),
        "late_fee_bps": _int_in(0, 10_000),
        "tolerance_days": _int_in(0, 30),
        "default_days": _int_in(1, 365),
        "collateral_bps": _int_in(0, 100_000),
        "origination_fee_bps": _int_in(0, MAX_ORIGINATION_FEE_BPS),
        "penalty_bps": _int_in(0, 10_000),      # penalty interest a year on overdue principal
    },
    "withdraw_offer": {"offer": _id},
    "apply": {
        "amount": AMOUNT, "purpose": _text(140), "term": TERM,
        "period": _one_of(PERIODS), "method": _one_of(METHODS),
        "product": _one_of(PRODUCTS), "grace": GRACE, "docs_hash": HASH,
        # The borrower's limits: no loan starts on terms outside them (ledger/lending.py).
        "max_rate_bps": _int_in(0, MAX_RATE_BPS),
        "max_late_fee_bps": _int_in(0, 10_000),
        "min_default_days": _int_in(1, 365),
        "max_penalty_bps": _int_in(0, MAX_RATE_BPS),
        "max_origination_fee_bps": _int_in(0, MAX_ORIGINATION_FEE_BPS),
    },
    "withdraw_application": {"application": _id},
    # accept: [[asset_id, value], ...] the lender values pledged assets at, for this loan.
    "fund": {"application": _id, "offer": _id,
             "accept": _list_of(_accepted, 0, MAX_ACCEPTED)},
    "accept_offer": {"application": _id, "offer": _id},
    # a slice of an application's shared funding (ledger/pools.py)
    "fund_share": {"application": _id, "offer": _id, "amount": AMOUNT},
    "repay": {"loan": _address, "amount": AMOUNT},
    "prepay": {"loan": _address, "amount": AMOUNT, "reduce": _one_of(REDUCE)},
    "write_off": {"loan": _address, "reason": _text(140)},
    "propose_restructure": {"loan": _address, "term": TERM},
    "accept_restructure": {"loan": _address, "proposal": _id},
    # value: what the owner declares; it counts toward no loan's cover by itself.
    "register_collateral": {"asset": _asset_name, "description_hash": HASH, "value": AMOUNT},
    "pledge": {"asset": _asset_ref, "to": _loan_target},
    "appraise": {"asset": _asset_id, "value": _int_in(0, MAX_AMOUNT)},
    "bid": {"sale": _id, "amount": AMOUNT},
    "settle_sale": {"sale": _id},
    "take_collateral": {"sale": _id},
    "attest_identity": {"borrower": _address, "identity": HASH},
    # Savings (ledger/savings.py): a product with its interest reserve, deposits,
    # withdrawals, pledges as cash collateral, the provider's top-ups of the reserve.
    "savings_product": {"name": _text(64), "rate_bps": _int_in(0, 2_000), "reserve": AMOUNT},
    "savings_fund": {"product": _address, "amount": AMOUNT},
    "savings_deposit": {"product": _address, "amount": AMOUNT},
    "savings_withdraw": {"product": _address, "amount": AMOUNT},
    "savings_pledge": {"product": _address, "to": _loan_target, "amount": AMOUNT},
    # Group (joint-liability) loans (ledger/groups.py): 3 to 10 members, the sender one.
    "group_create": {"name": _text(64), "members": _list_of(_address, 3, 10),
                     "savings_bps": _int_in(0, 5_000)},
    "group_join": {"group": _address},
    "group_cover": {"loan": _address, "amount": AMOUNT},
    # A third party escrows `amount` behind an open application or an active loan
    # (ledger/guarantees.py); release_guarantee takes it back while the application is open.
    "guarantee": {"to": _loan_target, "amount": AMOUNT},
    "release_guarantee": {"guarantee": _address},
    "create_multisig": {"threshold": _int_in(1, MAX_SIGS),
                        "members": _list_of(_bytes_len(32), 1, MAX_SIGS)},
    "deploy": {"code": _code, "args": _list_of(_arg, 0, 15, unique=False),
               "gas": _int_in(1, MAX_CALL_GAS)},
    "call": {"contract": _address, "args": _list_of(_arg, 0, 15, unique=False),
             "amount": _int_in(0, MAX_AMOUNT), "gas": _int_in(1, MAX_CALL_GAS)},
}

# A member's application through its group: exactly an apply, plus the group.
KINDS["group_apply"] = {"group": _address, **KINDS["apply"]}

# gas_price: what the sender pays a unit of gas, in 1/1000 minor units (ledger/fees.py);
# the ledger and the mempool refuse one under the chain's minimum.
_COMMON = {"chain": _text(64), "kind": None, "from": _address,
           "nonce": _int_in(0, MAX_AMOUNT), "gas_price": _int_in(0, MAX_GAS_PRICE)}


def _check_cross_fields(kind, b):
    # Rules that relate two fields of one body.
    if kind == "publish_offer":
        if b["min_term"] > b["max_term"]:
            return "min_term must not exceed max_term"
        scores = [t[0] for t in b["tiers"]]
        if scores != sorted(set(scores)):
            return "tiers must be in rising min_score order with no repeats"
    elif kind in ("apply", "group_apply"):
        if b["term"] > MAX_TERM[b["period"]]:
            return f"term must be at most {MAX_TERM[b['period']]} {b['period']} periods"
    elif kind == "fund":
        if len({a for a, _ in b["accept"]}) != len(b["accept"]):
            return "accept must not name an asset twice"
    elif kind == "create_multisig":
        if b["threshold"] > len(b["members"]):
            return "threshold must not exceed the number of members"


def check_body(body) -> None:
    """Raise TxError unless `body` is a well-formed transaction body."""
    if type(body) is not dict:
        raise TxError("body must be a map", "malformed")
    kind = body.get("kind")
    schema = KINDS.get(kind) if type(kind) is str else None
    if schema is None:
        raise TxError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}", "malformed")
    expected = len(schema) + len(_COMMON)
    for name, check in _COMMON.items():
        if name not in body:
            raise TxError(f"{kind}: missing field '{name}'", "malformed")
        err = check and check(body[name])
        if err:
            raise TxError(f"{kind}: field '{name}' {err}", "malformed")
    for name, check in schema.items():
        if name not in body:
            raise TxError(f"{kind}: missing field '{name}'", "malformed")
        err = check(body[name])
        if err:
            raise TxError(f"{kind}: field '{name}' {err}", "malformed")
    if len(body) != expected:
        extra = sorted(set(body) - set(schema) - set(_COMMON))
        raise TxError(f"{kind}: unknown field(s) {', '.join(extra)}", "malformed")
    err = _check_cross_fields(kind, body)
    if err:
        raise TxError(f"{kind}: {err}", "malformed")


class SignedTx:
    """A parsed, shape-checked transaction. `verified` caches the signature check."""

    __slots__ = ("body", "sigs", "hash", "raw", "kind", "sender", "nonce", "verified")

    def __init__(self, body: dict, sigs: list, raw: bytes | None = None,
                 canonical_body: bool = False):
        self.body = body
        self.sigs = sigs
        # A body decoded from canonical bytes is already in canonical order.
        self.hash = (codec.digest(codec.pack_canonical(body)) if canonical_body
                     else codec.hash_obj(body))
        self.raw = raw if raw is not None else codec.encode({"body": body, "sigs": sigs})
        self.kind = body["kind"]
        self.sender = body["from"]
        self.nonce = body["nonce"]
        self.verified: bool | None = None

    @property
    def id(self) -> str:
        return self.hash.hex()

    def signers(self) -> list[bytes]:
        return [pk for pk, _ in self.sigs]

    def verify_signatures(self) -> bool:
        """Every signature valid and signers distinct; the result is cached on the object."""
        if self.verified is None:
            msg = SIG_DOMAIN + self.hash
            self.verified = (len({pk for pk, _ in self.sigs}) == len(self.sigs)
                             and all(keys.verify(pk, msg, sig) for pk, sig in self.sigs))
        return self.verified

    def __repr__(self):
        return f"<{self.kind} {self.id[:12]} from {self.sender} #{self.nonce}>"


def parse(raw: bytes) -> SignedTx:
    """Decode and shape-check a transaction from the wire; signatures are checked later."""
    if len(raw) > MAX_TX_BYTES:
        raise TxError(f"transaction is {len(raw)} bytes, over the {MAX_TX_BYTES}-byte limit",
                      "too-large")
    try:
        obj = codec.decode(raw, MAX_TX_BYTES)
    except codec.EncodingError as e:
        raise TxError(f"undecodable transaction: {e}", "malformed") from None
    if type(obj) is not dict or set(obj) != {"body", "sigs"}:
        raise TxError("a transaction is a map of exactly 'body' and 'sigs'", "malformed")
    check_body(obj["body"])
    sigs = obj["sigs"]
    if type(sigs) is not list or not 1 <= len(sigs) <= MAX_SIGS:
        raise TxError(f"'sigs' must be a list of 1 to {MAX_SIGS} [pubkey, signature] pairs",
                      "malformed")
    for pair in sigs:
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not bytes
                or len(pair[0]) != keys.PUBKEY_LEN or type(pair[1]) is not bytes
                or len(pair[1]) != keys.SIG_LEN):
            raise TxError("each signature must be [32-byte pubkey, 64-byte signature]",
                          "malformed")
    return SignedTx(obj["body"], [tuple(p) for p in sigs], raw, canonical_body=True)


def sign(body: dict, signers) -> SignedTx:
    """Check a body and sign it with one or more keypairs (several for a multisig spend)."""
    check_body(body)
    h = codec.hash_obj(body)
    sigs = [(kp.pubkey, kp.sign(SIG_DOMAIN + h)) for kp in signers]
    return SignedTx(body, sigs)


def add_signature(tx: SignedTx, kp) -> SignedTx:
    """Co-sign an existing transaction (multisig): same body, one more signature."""
    if kp.pubkey in tx.signers():
        raise TxError("this key has already signed the transaction", "malformed")
    return SignedTx(tx.body, tx.sigs + [(kp.pubkey, kp.sign(SIG_DOMAIN + tx.hash))])


def build(kp, chain: str, kind: str, nonce: int, sender: str | None = None,
          gas_price: int = DEFAULT_GAS_PRICE, **fields) -> dict:
    """A transaction body; `sender` defaults to the keypair's own address, `gas_price` to
    the default chain's minimum."""
    return {"chain": chain, "kind": kind, "from": sender or kp.address, "nonce": nonce,
            "gas_price": gas_price, **fields}


def verify_batch(txs: list[SignedTx], pool=None, workers: int = 2) -> None:
    """Check (and cache) every transaction's signatures, split across a thread pool if
    given: libsodium releases the GIL, so two cores verify nearly twice as fast."""
    todo = [t for t in txs if t.verified is None]
    if pool is None or len(todo) < 64:
        for t in todo:
            t.verify_signatures()
        return
    chunks = [todo[i::workers] for i in range(workers)]
    list(pool.map(lambda chunk: [t.verify_signatures() for t in chunk], chunks))
