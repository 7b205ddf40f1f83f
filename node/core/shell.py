"""The one effect loop: how any shell (the daemon, the simulator, a test's network)
carries out what a node's events produced.

A node's events (`submit`, `receive_tx`, `deliver`, `tick`) return effects and leave
their votes and executed blocks waiting in the node (`Node.flush` writes them). Like
raft's Ready/Advance, `carry_out` takes one batch — the effects of one event, or of every
event in a turn of the daemon's loop — writes what must be durable first, then hands each
effect, in order, to the shell's handler for it. The ordering rule that keeps a restarted
replica from signing two conflicting votes lives here and only here.

A shell subclasses `Shell` and overrides what it does with each kind of effect. A lying
validator (the test harness's byzantine modes) is not a kind of shell but a hook,
`Shell.lie`: it sees every outgoing message with its destinations and says what is sent
instead, the same way in the simulator and in a real node.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from lendnet.consensus.effects import (
    Broadcast,
    Committed,
    Evidence,
    Refused,
    Send,
    Timer,
    ViewChange,
    ViewEntered,
)

from .node import Node

# (message, destination validators) -> the (destination, message) pairs really sent
Lie = Callable[[dict, list[int]], list[tuple[int, dict]]]


class Shell(ABC):
    """What surrounds a node: a shell must say how messages leave (a subclass missing
    one of those fails when it is made); the other handlers default to ignoring what a
    shell does not care about."""

    lie: Lie | None = None

    @abstractmethod
    def send(self, to: int, msg: dict) -> None:
        """Send a consensus message to validator `to`."""

    @abstractmethod
    def broadcast(self, msg: dict) -> None:
        """Send a consensus message to every other validator."""

    @abstractmethod
    def audience(self) -> list[int]:
        """The validators a broadcast reaches, when a lie must pick among them."""

    def arm(self, at: int) -> None:
        """Tick the node when its clock reads `at` (ms), unless a tick comes sooner."""
        return None

    def committed(self, e: Committed) -> None:
        """A block was executed, durably, with its result (receipts, events)."""
        return None

    def evidence(self, e: Evidence) -> None:
        """A validator was caught signing two conflicting messages."""
        return None

    def refused(self, e: Refused) -> None:
        """This replica refused a proposal."""
        return None

    def view_change(self, e: ViewChange) -> None:
        """This replica gave up on a view."""
        return None

    def view_entered(self, e: ViewEntered) -> None:
        """This replica entered a new view."""
        return None


def carry_out(node: Node, effects: Iterable, shell: Shell) -> None:
    """Make this batch's votes and blocks durable (one store transaction), then carry
    out its effects in order. Nothing leaves the process before the flush: a replica
    that crashes after sending has its vote on disk, so it never votes otherwise."""
    node.flush()
    for e in effects:
        t = type(e)
        if t is Broadcast or t is Send:
            if shell.lie is None and t is Send:
                shell.send(e.to, e.msg)
            elif shell.lie is None:
                shell.broadcast(e.msg)
            else:
                for to, msg in shell.lie(e.msg, [e.to] if t is Send else shell.audience()):
                    shell.send(to, msg)
        elif t is Timer:
            shell.arm(e.at)
        elif t is Committed:
            shell.committed(e)
        elif t is Evidence:
            shell.evidence(e)
        elif t is Refused:
            shell.refused(e)
        elif t is ViewChange:
            shell.view_change(e)
        elif t is ViewEntered:
            shell.view_entered(e)
        else:
            raise TypeError(f"no shell handler for the effect {e!r}")
