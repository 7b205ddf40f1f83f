"""Pruning: a node that keeps only its last K blocks (`keep_blocks`), against an archive
node, which keeps every block from genesis (keep_blocks absent or 0, the default).

What a pruned node keeps, and why that is enough:
- the last K blocks (with their certificates, roots and transactions' index entries);
- always the block of its latest snapshot and every block after it, whatever K is: a
  restart (even after kill -9) restores that snapshot against that block's stored root
  and replays the rest (`Node.__init__`), and verify-chain replays from it;
- the snapshots themselves (the store keeps the last 2; they are made and served as on
  any node).
Below its first kept block it answers "pruned" (HTTP 410) for blocks, sync requests and
transactions' locations; a node that must replay from genesis needs an archive peer.

The rule for K (`min_keep_blocks`): at least 4 consensus windows. The replica reaches
back that far in normal work: a header certifies a state root up to 2 windows back
(exec_root), a view change carries the prepared blocks of the window above the stable
checkpoint, a replica lagging by up to a window or two fetches the blocks it misses
from its peers (FETCH), and the node keeps the headers of the last 4 windows in memory
(`Node._recent`) — rebuilt from the store after a restart. Fewer kept blocks would let a
peer catching up within those bounds find nobody to serve it. The policy here is pure:
the daemon (or a test's shell) calls `Pruner.after_commit` once a block is durable.
"""
from __future__ import annotations

from lendnet.consensus.replica import Config

PRUNE_EVERY = 64          # blocks between prunes: one DELETE of 64 blocks costs about what
                          # one of a single block does, so a prune is amortised over them
WINDOWS_KEPT = 4          # see the module comment


class KeepBlocksError(ValueError):
    """A keep_blocks setting that is not safe or not possible; `code` says which."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def min_keep_blocks(config: Config) -> int:
    """The fewest blocks a pruned node may keep (the module comment says why)."""
    return WINDOWS_KEPT * config.window


def check_keep_blocks(keep_blocks, config: Config) -> int | None:
    """keep_blocks as set (None or 0: archive) -> K, or None for an archive node;
    KeepBlocksError if it is not a count, too small to be safe, or the chain makes no
    snapshots (a pruned node restarts from one, so without them it could not)."""
    if keep_blocks is None:
        return None
    if type(keep_blocks) is not int or keep_blocks < 0:
        raise KeepBlocksError(f"keep_blocks must be a whole number of blocks (0 for an "
                              f"archive node), not {keep_blocks!r}", "keep-blocks-invalid")
    if keep_blocks == 0:
        return None
    least = min_keep_blocks(config)
    if keep_blocks < least:
        raise KeepBlocksError(
            f"keep_blocks {keep_blocks} is too small: a pruned node must keep at least "
            f"{least} blocks ({WINDOWS_KEPT} consensus windows of {config.window}), which "
            f"peers catching up and view changes may ask for", "keep-blocks-too-small")
    if not config.snapshot_every:
        raise KeepBlocksError(
            "keep_blocks needs state snapshots, and this chain's genesis turns them off "
            "(snapshot_every = 0): a pruned node restarts from its latest snapshot",
            "keep-blocks-no-snapshots")
    return keep_blocks


def keep_from(height: int, keep_blocks: int, snapshot_heights) -> int | None:
    """The first block to keep at `height`: the last `keep_blocks`, but never above the
    latest snapshot's block, which a restart restores from. None: keep everything (no
    snapshot yet, whose block would be kept)."""
    latest = max(snapshot_heights, default=None)
    if latest is None:
        return None
    return max(1, min(height - keep_blocks + 1, latest))


def pruned_error(height: int, first_block: int) -> dict:
    """What a node answers (HTTP 410) when asked for a block it pruned, or never had (a
    state-synced node's): the code a client or syncing peer switches on, and where the
    node's blocks start."""
    return {"error": f"block {height} is pruned: this node keeps blocks from {first_block}",
            "code": "pruned", "first_block": first_block}


class Pruner:
    """Prunes a store to its last `keep_blocks` blocks every PRUNE_EVERY blocks."""

    def __init__(self, store, keep_blocks: int, every: int = PRUNE_EVERY):
        self.store = store
        self.keep_blocks = keep_blocks
        self.every = every
        self._last = store.height             # the height of the last look

    def after_commit(self, height: int) -> int | None:
        """Called once block `height` is durable. Prunes when due; returns how many blocks
        went (0 if nothing was below the first block to keep), or None if not due."""
        if height < self._last + self.every:
            return None
        self._last = height
        first = keep_from(self.store.height, self.keep_blocks, self.store.snapshot_heights())
        if first is None or first <= self.store.base + 1:
            return 0
        return self.store.prune(first)
