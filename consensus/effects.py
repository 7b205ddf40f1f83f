"""What a replica asks its shell to do. The shell carries effects out in order, and a
`Persist` must be durable before any effect after it leaves the process: that is what
keeps a restarted replica from ever signing two conflicting votes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Send:
    to: int
    msg: dict


@dataclass(frozen=True)
class Broadcast:
    msg: dict


@dataclass(frozen=True)
class Persist:
    key: tuple          # ("vote", kind, view, height) | ("view",) | ("low",)
    value: object


@dataclass(frozen=True)
class Committed:
    height: int
    block: dict
    cert: list
    state_root: bytes


@dataclass(frozen=True)
class Evidence:
    kind: str           # "equivocation" (two proposals) | "conflicting-vote"
    replica: int
    messages: tuple


@dataclass(frozen=True)
class Timer:
    at: int             # the replica's next deadline (ms); the shell ticks it then
