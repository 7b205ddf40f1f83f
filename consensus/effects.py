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
    key: tuple          # ("vote", kind, view, height) | ("view",) | ("checkpoint",) | ("gc",)
    value: object


@dataclass(frozen=True)
class Committed:
    height: int
    block: dict
    cert: list
    state_root: bytes
    # What the application made of the block (receipts, events): the replica leaves it
    # None, and the node fills it in from its own execution of this very height, so a
    # shell that is handed several blocks at once reads each one's own.
    result: object = None


@dataclass(frozen=True)
class Evidence:
    kind: str           # "equivocation" (two proposals) | "conflicting-vote"
    replica: int
    messages: tuple


@dataclass(frozen=True)
class Timer:
    at: int             # the replica's next deadline (ms); the shell ticks it then


@dataclass(frozen=True)
class Refused:
    """A proposal this replica will not vote for: counted and logged by the shell (a
    refused proposal is unfinished work, so it also leads to a view change)."""
    view: int
    height: int
    proposer: int
    reason: str         # a short code: time-ahead, time-behind, exec-root, txs, too-big ...
    detail: str = ""


@dataclass(frozen=True)
class ViewChange:
    """This replica gave up on view `old` and asks for view `new`, because of `reason`."""
    old: int
    new: int
    reason: str


@dataclass(frozen=True)
class ViewEntered:
    """A NEW-VIEW started view `view` here; `carried` blocks came over from earlier views."""
    view: int
    primary: int
    carried: int
