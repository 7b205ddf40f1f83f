"""Where a test harness may bend a daemon. A production node runs with none; the test
modes of `lendnet node start` (node/harness/faults.py) install them, so no production
class carries a test flag or imports test code."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from lendnet.consensus.replica import Config
from lendnet.node.core.node import Genesis
from lendnet.node.core.shell import Lie

from .transport import LinkHook


@dataclass(frozen=True)
class Hooks:
    config: Callable[[Genesis], Config] | None = None   # the consensus config (a broken quorum)
    lie: Lie | None = None                               # what a lying validator sends instead
    links: LinkHook | None = None                        # faults on the node's own links
    routes: Callable[[web.Application], None] | None = None   # extra endpoints (admin)
    warning: str = ""                                    # logged at start: what is bent
