"""The seam between consensus and the application, in the spirit of ABCI.

The replica orders opaque transactions (bytes) into blocks; everything it needs to know
about what they mean goes through this interface, which the node (node/core/node.py: mempool
and ledger) implements, and a test implements with a page of code
(tests/test_seam.py). All calls are synchronous and deterministic: the replica runs
inside the simulator as well as the daemon.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Application(Protocol):
    # --- the chain view: what is executed --------------------------------------------
    @property
    def height(self) -> int:
        """The last executed height (0: genesis)."""
        ...

    def block_hash(self, h: int) -> bytes | None:
        """The hash of executed block h's header (genesis: messages.GENESIS_HASH), or
        None if it is not kept any more."""
        ...

    def root_at(self, h: int) -> bytes | None:
        """The state root after executing block h, or None if it is not kept."""
        ...

    def header_at(self, h: int) -> dict | None:
        """Executed block h's header ({"time": genesis time} for 0), or None."""
        ...

    def get_block(self, h: int) -> tuple[dict, list] | None:
        """Executed block h and its commit certificate, for a replica catching up."""
        ...

    # --- prepare: the primary's batch ---------------------------------------------------
    def make_txs(self, height: int, max_txs: int, max_bytes: int,
                 exclude: set) -> list[bytes]:
        """Up to max_txs transactions of at most max_bytes in all for block `height`,
        none of those in `exclude` (blocks in flight below it)."""
        ...

    # --- process: may a replica vote for a proposal's transactions? ----------------------
    def check_txs(self, raws: list[bytes], in_flight: Sequence[bytes] = ...) -> str | None:
        """Why these transactions may not go on top of the executed state and the
        transactions `in_flight` between it and them; None if they may."""
        ...

    # --- finalize: a committed block ------------------------------------------------------
    def execute(self, height: int, block: dict, cert: list) -> bytes:
        """Apply committed block `height` (2f+1 COMMITs in `cert`); its state root."""
        ...

    # --- the work waiting (for liveness: a replica with work changes a stuck view) -------
    def has_pending(self) -> bool:
        """Is there a transaction that could go into the next block?"""
        ...

    def pending_count(self) -> int:
        """How many transactions wait (a primary with many waiting proposes at once)."""
        ...
