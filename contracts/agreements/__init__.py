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
# Whole-period lengths in chain seconds: a month is 30 days (documented simplification;
# calendar months would need a calendar in the VM).
PERIOD_SECONDS = {"monthly": 30 * 86_400, "weekly": 7 * 86_400}
METHOD_CODES = {"annuity": 0, "equal-principal": 1, "balloon": 2}
LOAN_STATUS = {0: "new", 1: "active", 2: "repaid", 3: "defaulted"}
# The agreement's storage layout, as the source's header documents it: the one place
# Python reads it from (a test holds every key a loan writes to this list).
LOAN_STORAGE = ("st", "P", "a", "b", "n", "m", "g", "t0", "plen", "fee", "tol", "dflt",
                "pmt", "borrower", "lender", "k", "out", "dp", "di", "df", "late",
                "notice", "due", "paid")
LOAN_KEY = {name: name.encode() for name in LOAN_STORAGE}     # name -> storage key


def loan_storage(get) -> dict:
    """A loan agreement's storage by name, `get` reading one key (None when unset)."""
    return {name: get(key) for name, key in LOAN_KEY.items()}
SCHEDULE_GAS = 1_000_000


def source(name: str = "loan") -> str:
    return resources.files(__package__).joinpath(f"{name}.lasm").read_text()


@functools.cache
def loan_code() -> bytes:
    return assemble(source("loan"))


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
    """The schedule a loan would follow, computed by running the agreement itself."""
    if period not in PERIODS_PER_YEAR:
        raise ValueError(f"period must be one of {', '.join(PERIODS_PER_YEAR)}")
    if method not in METHOD_CODES:
        raise ValueError(f"method must be one of {', '.join(METHOD_CODES)}")
    host = ReadOnlyHost(start)
    call_readonly(loan_code(), [b"schedule", principal, rate_bps, PERIODS_PER_YEAR[period],
                                term, METHOD_CODES[method], grace, start,
                                PERIOD_SECONDS[period]], host)
    return [{"n": v[0], "due": v[1], "principal": v[2], "interest": v[3],
             "total": v[2] + v[3]} for name, v in host.events if name == "instalment"]
