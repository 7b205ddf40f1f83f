"""The standard lending agreements that ship with lendnet, as contract source.

`loan.lasm` is the source of the standard loan agreement; genesis stores its bytecode on
the ledger by hash so anyone can read and audit what every loan runs. This module only
assembles it and names the constants the ledger passes to it.
"""
from __future__ import annotations

import functools
from importlib import resources

from ..asm import assemble
from ..vm import ContractError, Program, execute

PERIODS_PER_YEAR = {"monthly": 12, "weekly": 52}
# The agreement's period codes: monthly is the calendar month (same day of the month as
# the start, the month's last day when it is shorter), weekly is 7 days.
PERIOD_CODES = {"monthly": 0, "weekly": 1}
PERIOD_NAMES = {v: k for k, v in PERIOD_CODES.items()}
METHOD_CODES = {"annuity": 0, "equal-principal": 1, "balloon": 2}
LOAN_STATUS = {0: "new", 1: "active", 2: "repaid", 3: "defaulted", 4: "written_off",
               5: "settled"}
# The agreement's storage layout, as the source's header documents it: the one place
# Python reads it from (a test holds every key a loan writes to this list, plus the
# per-instalment rows INSTALMENT_ROWS || itob(i)).
LOAN_STORAGE = ("st", "P", "a", "n", "m", "g", "t0", "per", "fee", "tol", "dflt", "pbps",
                "pmt", "borrower", "lender", "k", "ko", "kl", "kn", "out", "sb", "pen",
                "pn", "pq", "pt", "paid", "claim", "cf", "ci", "cp", "rec", "ib", "is", "ii",
                "dk", "sf", "si", "op", "od")
LOAN_KEY = {name: name.encode() for name in LOAN_STORAGE}     # name -> storage key
INSTALMENT_ROWS = {"due": b"d", "principal": b"p", "interest": b"i", "fees": b"f"}


def instalment_key(row: str, i: int) -> bytes:
    return INSTALMENT_ROWS[row] + i.to_bytes(8, "big")


def loan_storage(get) -> dict:
    """A loan agreement's storage by name, `get` reading one key (None when unset)."""
    return {name: get(key) for name, key in LOAN_KEY.items()}


def instalments(get) -> list[dict]:
    """The posted instalments not yet paid (ko..k), oldest first: n, due, and what each
    still owes of principal, interest and fees."""
    ko, k = get(LOAN_KEY["ko"]) or 0, get(LOAN_KEY["k"]) or 0
    out = []
    for i in range(max(ko, 1), k + 1):
        row = {name: get(instalment_key(name, i)) or 0 for name in INSTALMENT_ROWS}
        out.append({"n": i, **row})
    return out


SCHEDULE_GAS = 1_000_000


def source(name: str = "loan") -> str:
    return resources.files(__package__).joinpath(f"{name}.lasm").read_text()


@functools.cache
def loan_code() -> bytes:
    return assemble(source("loan"))


@functools.cache
def savings_code() -> bytes:
    """The savings agreement (savings.lasm): one instance per savings product."""
    return assemble(source("savings"))


@functools.cache
def group_code() -> bytes:
    """The joint-liability group agreement (group.lasm), one instance per group."""
    return assemble(source("group"))


@functools.cache
def guarantee_code() -> bytes:
    """The guarantee agreement (guarantee.lasm): one instance per guarantee."""
    return assemble(source("guarantee"))


GUARANTEE_STATUS = {0: "new", 1: "held", 2: "drawn", 3: "released"}


class ReadOnlyHost:
    """Host for a read-only call: storage may be read, nothing may change; events are
    collected. Used for quotes (schedule, payoff) that the agreement computes itself."""

    height = 0
    caller = b""
    value = 0

    def __init__(self, time: int, storage_get=lambda key: None, address: bytes = b""):
        self.time = time
        self.storage_get = storage_get
        self.self_address = address
        self.events: list = []

    def emit(self, name, values):
        self.events.append((name, values))

    def _refuse(self, *_):
        raise ContractError("a read-only call cannot change the ledger")

    storage_put = storage_del = balance = pay = wake = release_liens = seize_liens = _refuse


def call_readonly(code: bytes, args: list, host: ReadOnlyHost, gas: int = SCHEDULE_GAS):
    return execute(Program.load(code), host, args, gas).value


def schedule(principal: int, rate_bps: int, term: int, period: str = "monthly",
             method: str = "annuity", grace: int = 0, start: int = 0) -> list[dict]:
    """The schedule a loan started at chain time `start` would follow if paid as due,
    computed by running the agreement itself."""
    if period not in PERIODS_PER_YEAR:
        raise ValueError(f"period must be one of {', '.join(PERIODS_PER_YEAR)}")
    if method not in METHOD_CODES:
        raise ValueError(f"method must be one of {', '.join(METHOD_CODES)}")
    host = ReadOnlyHost(start)
    call_readonly(loan_code(), [b"schedule", principal, rate_bps, term, METHOD_CODES[method],
                                grace, start, PERIOD_CODES[period]], host)
    return [{"n": v[0], "due": v[1], "principal": v[2], "interest": v[3],
             "total": v[2] + v[3]} for name, v in host.events if name == "instalment"]


@functools.cache
def pool_code() -> bytes:
    """The shared-funding agreement (`pool.lasm`): one instance per pooled application."""
    return assemble(source("pool"))


# The pool agreement's statuses (its "st"), and its storage keys, as pool.lasm documents.
POOL_STATUS = {0: "new", 1: "open", 2: "lent", 3: "expired", 4: "refunded"}
POOL_SLICE_ROWS = {"lender": b"L", "amount": b"S", "received": b"R"}
