"""The test modes of `lendnet node start`, as hooks into the daemon (node/daemon/hooks.py):
a lying validator (`--byzantine MODE`), a deliberately broken quorum
(`--quorum-override N`), and, when the node's config says `"admin": true`, the admin
endpoint through which `lendnet chaos` sets faults on the node's own links."""
from __future__ import annotations

import random
from pathlib import Path

from lendnet.node.daemon import home as H
from lendnet.node.daemon.hooks import Hooks

from .admin import add_admin_routes, make_token
from .byzantine import Byzantine
from .linkfaults import LinkFaults


def hooks_for(home: Path, byzantine: str | None = None,
              quorum_override: int | None = None) -> Hooks:
    home = Path(home)
    cfg, genesis, kp = H.load_config(home), H.load_genesis(home), H.load_key(home)
    bent = []
    lie = None
    if byzantine is not None:
        index = (genesis.validators.index(kp.pubkey) if kp.pubkey in genesis.validators
                 else None)
        liar = Byzantine(byzantine, genesis.chain_id, kp,
                         random.Random(int.from_bytes(kp.pubkey[:8], "big")), index=index)
        lie = liar.outgoing
        bent.append(f"BYZANTINE test mode {byzantine!r}: this node lies")
    config = None
    if quorum_override is not None:
        def config(g, q=quorum_override):
            return g.config(q)
        bent.append(f"a broken quorum of {quorum_override} votes (test only)")
    links = routes = None
    if cfg.admin:
        links = LinkFaults()

        def routes(app, links=links):
            add_admin_routes(app, links, make_token(home))
        bent.append("admin endpoint on (test only): loopback + HOME/admin.token")
    return Hooks(config, lie, links, routes, "; ".join(bent))
