"""How amounts are shown to people. The ledger itself only knows integer minor units."""
from __future__ import annotations

UNIT = "LND"
DECIMALS = 2


def fmt(minor: int, unit: bool = True) -> str:
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**DECIMALS)
    text = f"{sign}{whole:,}.{frac:0{DECIMALS}d}"
    return f"{text} {UNIT}" if unit else text
