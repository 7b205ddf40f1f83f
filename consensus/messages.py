"""Consensus messages and blocks: their fields, signatures and certificates.

Every message is canonical msgpack {"body": {...}, "sig": signature} where the body names
its type ("t"), the sending replica's index ("r") and what it votes for; the signature is
the replica's ed25519 signature over a domain tag, the chain id and the body's encoding,
so a vote can never be replayed on another chain or mistaken for a transaction.

A block is view-independent: re-proposing it in a later view gives the same hash. Its
header commits to the previous block, the transactions, the proposer's chain time and the
state root after the last height the proposer had executed (`exec_height`), so pipelined
proposals need no speculative execution while any divergence is still caught within a
few blocks.

A PROPOSE signs the block's header only: the header commits to the transactions through
`txs_root`, so the transactions travel beside the signed body ({"body", "sig", "txs"})
and the same signed proposal can also travel without them ({"body", "sig"}): relayed to
the other replicas, carried as the proof in a VIEW-CHANGE, kept as evidence. That is
what keeps every consensus message but a PROPOSE (and a BLOCKS answer) small whatever
the transactions; a replica that holds a proposal's header but not its transactions
asks a peer for them (GETBLOCK).

Sizes: a block's transactions are bounded by count and bytes (`Config.max_block_txs`,
`Config.max_block_bytes`, within the hard limits here); every other message is bounded
by the validator count and the window, and `newview_bytes_bound` shows the largest of
them, a NEW-VIEW, fits in one message (checked for every genesis).
"""
from __future__ import annotations

from dataclasses import dataclass

from lendnet.ledger import codec, keys

MAX_MSG_BYTES = 4 * 1024 * 1024
MAX_BLOCK_TXS = 2_000
MAX_BLOCK_BYTES = 3 * 1024 * 1024    # transactions' bytes in a block: a PROPOSE, or a block
                                     # with its certificate, stays under MAX_MSG_BYTES
MAX_VALIDATORS = 64
MAX_WINDOW = 128
SIG_DOMAIN = b"lendnet/consensus\x00"

PROPOSE, PREPARE, COMMIT, CHECKPOINT = "propose", "prepare", "commit", "checkpoint"
VIEWCHANGE, NEWVIEW, FETCH, BLOCKS = "viewchange", "newview", "fetch", "blocks"
GETBLOCK = "getblock"
TYPES = (PROPOSE, PREPARE, COMMIT, CHECKPOINT, VIEWCHANGE, NEWVIEW, FETCH, BLOCKS, GETBLOCK)


class MessageError(ValueError):
    """A message that is malformed, badly signed, or not from a validator."""


def faults_tolerated(n: int) -> int:
    """f: how many of n validators may be faulty."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """The least number of validators any two of whose sets share more than f: a
    majority of n + f, floor((n + f) / 2) + 1. It is 2f + 1 when n = 3f + 1, and more
    for the sizes between (5 validators: 4, not 3), where 2f + 1 would let two quorums
    share only f validators, all of them faulty, and fork the chain. It is never more
    than n - f, so the honest validators alone still make one."""
    return (n + faults_tolerated(n)) // 2 + 1


@dataclass(frozen=True)
class Validators:
    """The validator set from genesis: index -> public key, and the quorum sizes."""

    chain_id: str
    pubkeys: tuple[bytes, ...]
    quorum_override: int | None = None     # test-only: a deliberately broken quorum
    leaders: tuple[int, ...] = ()          # test-only: who leads the first views (Twins)

    @property
    def n(self) -> int:
        return len(self.pubkeys)

    @property
    def f(self) -> int:
        return faults_tolerated(self.n)

    @property
    def quorum(self) -> int:
        return self.quorum_override or quorum_size(self.n)

    def primary(self, view: int) -> int:
        return self.leaders[view] if view < len(self.leaders) else view % self.n


# --- signing ------------------------------------------------------------------------------

# A message is canonical from birth: `sign` puts its body in canonical form, and `decode`
# accepts only canonical bytes. So its bytes are a plain msgpack pack, never a second walk
# over every nested certificate; a hand-made message with maps out of order would only get
# bytes that every receiver refuses.

def _signed_bytes(chain_id: str, body: dict) -> bytes:
    return SIG_DOMAIN + chain_id.encode() + b"\x00" + codec.pack_canonical(body)


def sign(chain_id: str, kp: keys.Keypair, body: dict) -> dict:
    body = codec.canonical(body)
    return {"body": body, "sig": kp.sign(_signed_bytes(chain_id, body))}


def verify(validators: Validators, msg: dict) -> bool:
    body = msg["body"]
    r = body["r"]
    return keys.verify(validators.pubkeys[r], _signed_bytes(validators.chain_id, body),
                       msg["sig"])


def encode(msg: dict) -> bytes:
    """A message from `sign` or `decode` (or a map of them) -> wire bytes."""
    return codec.pack_canonical(msg)


def with_txs(msg: dict, txs: list) -> dict:
    """A signed PROPOSE with its block's transactions beside the signed header."""
    return {"body": msg["body"], "sig": msg["sig"], "txs": txs}


def signed_part(msg: dict) -> dict:
    """The signed message alone (a PROPOSE without its transactions)."""
    return {"body": msg["body"], "sig": msg["sig"]} if len(msg) > 2 else msg


def block_of(msg: dict) -> dict:
    """The block a PROPOSE that carries its transactions proposes."""
    return {"header": msg["body"]["header"], "txs": msg["txs"]}


# --- shape checks: everything from a peer is checked before it is looked at ----------------

def _is_int(v, lo=0, hi=2**62):
    return type(v) is int and lo <= v <= hi


def _is_hash(v):
    return type(v) is bytes and len(v) == 32


def check_header(header) -> None:
    if type(header) is not dict:
        raise MessageError("block header must be a map")
    want = {"height", "prev", "time", "proposer", "txs_root", "exec_height", "exec_root"}
    if set(header) != want:
        raise MessageError(f"block header fields must be {sorted(want)}")
    if not (_is_int(header["height"], 1) and _is_hash(header["prev"])
            and _is_int(header["time"]) and _is_int(header["proposer"], 0, 1023)
            and _is_hash(header["txs_root"]) and _is_int(header["exec_height"])
            and _is_hash(header["exec_root"])):
        raise MessageError("block header has a field of the wrong type or range")
    if header["exec_height"] >= header["height"]:
        raise MessageError("exec_height must be below the block's height")


def check_block(block) -> None:
    if type(block) is not dict or set(block) != {"header", "txs"}:
        raise MessageError("a block is a map of 'header' and 'txs'")
    check_header(block["header"])
    check_txs(block["txs"], block["header"])


def check_txs(txs, header: dict) -> None:
    """A block's transactions: bounded in count and bytes, and the header's."""
    if type(txs) is not list or len(txs) > MAX_BLOCK_TXS or any(type(t) is not bytes
                                                               for t in txs):
        raise MessageError(f"block txs must be a list of at most {MAX_BLOCK_TXS} byte strings")
    if txs_bytes(txs) > MAX_BLOCK_BYTES:
        raise MessageError(f"block txs are over the {MAX_BLOCK_BYTES}-byte limit")
    if txs_root(txs) != header["txs_root"]:
        raise MessageError("block txs do not match the header's txs_root")


def txs_bytes(raw_txs: list[bytes]) -> int:
    """What a block's transactions weigh against max_block_bytes."""
    return sum(map(len, raw_txs))


def txs_root(raw_txs: list[bytes]) -> bytes:
    return codec.digest(b"".join(codec.digest(t) for t in raw_txs))


def block_hash(header: dict) -> bytes:
    return codec.hash_obj(header)


GENESIS_HASH = b"\x00" * 32


def _check_vote_list(v, validators, t, *, allow_empty=False):
    if type(v) is not list or (not v and not allow_empty) or len(v) > 4 * validators.n:
        raise MessageError(f"{t}: certificate must be a list of signed messages")
    for m in v:
        check_message(m, validators, nested=True)


def check_message(msg, validators: Validators, *, nested: bool = False) -> dict:
    """Check shape and signature; return the body. Raises MessageError. A PROPOSE may
    carry its block's transactions, unless it is `nested` in another message (as a
    VIEW-CHANGE's proof), where only the signed header belongs."""
    if type(msg) is not dict or set(msg) - {"txs"} != {"body", "sig"}:
        raise MessageError("a message is a map of 'body' and 'sig'")
    body, sig = msg["body"], msg["sig"]
    if type(body) is not dict or type(sig) is not bytes or len(sig) != keys.SIG_LEN:
        raise MessageError("message body must be a map and sig 64 bytes")
    t, r = body.get("t"), body.get("r")
    if t not in TYPES:
        raise MessageError(f"unknown message type {t!r}")
    if not _is_int(r, 0, validators.n - 1):
        raise MessageError(f"{t}: sender {r!r} is not a validator index")
    fields = _FIELDS[t]
    if set(body) != fields | {"t", "r"}:
        raise MessageError(f"{t}: fields must be {sorted(fields | {'t', 'r'})}")
    if "v" in fields and not _is_int(body["v"]):
        raise MessageError(f"{t}: bad view")
    if "h" in fields and not _is_int(body["h"], 0):
        raise MessageError(f"{t}: bad height")
    if "d" in fields and not _is_hash(body["d"]):
        raise MessageError(f"{t}: bad block hash")
    if "txs" in msg and (t != PROPOSE or nested):
        raise MessageError(f"{t}: only a PROPOSE on its own carries transactions")
    if t == PROPOSE:
        check_header(body["header"])
        if body["header"]["height"] != body["h"]:
            raise MessageError("propose: height differs from the block's")
        if "txs" in msg:
            check_txs(msg["txs"], body["header"])
    elif t == CHECKPOINT and not _is_hash(body["root"]):
        raise MessageError("checkpoint: bad state root")
    elif t == VIEWCHANGE:
        if not _is_int(body["e"], 0):
            raise MessageError("viewchange: bad executed height")
        _check_vote_list(body["checkpoint"], validators, t, allow_empty=True)
        if type(body["prepared"]) is not list or len(body["prepared"]) > MAX_WINDOW:
            raise MessageError("viewchange: prepared must be a list")
        for cert in body["prepared"]:
            if type(cert) is not list or len(cert) != 2:
                raise MessageError("viewchange: a prepared certificate is [propose, prepares]")
            check_message(cert[0], validators, nested=True)
            _check_vote_list(cert[1], validators, t)
    elif t == NEWVIEW:
        _check_vote_list(body["vcs"], validators, t)
    elif t == FETCH and not (_is_int(body["from_h"], 1) and _is_int(body["count"], 1, 256)):
        raise MessageError("fetch: bad range")
    elif t == GETBLOCK and not _is_hash(body["d"]):
        raise MessageError("getblock: bad block hash")
    elif t == BLOCKS:
        if type(body["blocks"]) is not list or len(body["blocks"]) > 256:
            raise MessageError("blocks: must be a list of at most 256 entries")
        for entry in body["blocks"]:
            if type(entry) is not list or len(entry) != 2:
                raise MessageError("blocks: an entry is [block, commit certificate]")
            check_block(entry[0])
            _check_vote_list(entry[1], validators, t)
    if not verify(validators, msg):
        raise MessageError(f"{t}: bad signature from replica {r}")
    return body


_FIELDS = {
    PROPOSE: {"v", "h", "header"},
    PREPARE: {"v", "h", "d"},
    COMMIT: {"v", "h", "d"},
    CHECKPOINT: {"h", "d", "root"},
    # h: the sender's stable checkpoint height; e: the height it has executed
    VIEWCHANGE: {"v", "h", "e", "checkpoint", "prepared"},
    NEWVIEW: {"v", "vcs"},
    FETCH: {"from_h", "count"},
    BLOCKS: {"blocks"},
    GETBLOCK: {"h", "d"},          # the transactions of the block with hash d at height h
}


def decode(raw: bytes, validators: Validators) -> dict:
    """Wire bytes -> a checked, signature-verified message."""
    try:
        msg = codec.decode(raw, MAX_MSG_BYTES)
    except codec.EncodingError as e:
        raise MessageError(f"undecodable message: {e}") from None
    check_message(msg, validators)
    return msg


def newview_bytes_bound(n: int, window: int) -> int:
    """The largest NEW-VIEW that honest replicas build for n validators and this window:
    a quorum of VIEW-CHANGEs, each with a stable checkpoint's proof (a quorum of
    CHECKPOINTs) and a prepared certificate (signed header, a quorum of PREPAREs) for
    every height of the window.
    Built with every field at its widest, so it is an upper bound; a VIEW-CHANGE that
    carries more than this shape allows is refused (replica._valid_viewchange)."""
    q = quorum_size(n)
    big, h32, sig = 2**62, b"\xff" * 32, b"\xff" * 64

    def msg(body: dict) -> dict:
        return {"body": dict(body, r=1023), "sig": sig}

    header = {"height": big, "prev": h32, "time": big, "proposer": 1023, "txs_root": h32,
              "exec_height": big, "exec_root": h32}
    cert = [msg({"t": PROPOSE, "v": big, "h": big, "header": header}),
            [msg({"t": PREPARE, "v": big, "h": big, "d": h32})] * q]
    proof = [msg({"t": CHECKPOINT, "h": big, "d": h32, "root": h32})] * q
    vc = msg({"t": VIEWCHANGE, "v": big, "h": big, "e": big, "checkpoint": proof,
              "prepared": [cert] * window})
    return len(codec.encode(msg({"t": NEWVIEW, "v": big, "vcs": [vc] * q})))


def commit_certified(cert: list, h: int, d: bytes, quorum: int) -> bool:
    """Whether `cert` holds `quorum` COMMITs of one view for block `d` at height `h`: the
    commit certificate that makes a block committed (the caller checked each signature)."""
    views = {m["body"]["v"] for m in cert if m["body"]["t"] == COMMIT}
    return any(len(cert_signers(cert, COMMIT, v, h, d)) >= quorum for v in views)


def check_commit_cert(cert, h: int, d: bytes, validators: Validators) -> None:
    """That `cert` makes block `d` at height `h` committed: a bounded list of signed
    COMMITs, each checked, a quorum of them of one view for this block. Raises
    MessageError saying what is wrong or how many COMMITs are short. The one check for a
    block someone hands over: a full node following a peer, `lendnet node verify-chain`."""
    if type(cert) is not list or len(cert) > 4 * validators.n:
        raise MessageError("a commit certificate is a list of signed COMMITs")
    for m in cert:
        check_message(m, validators)
    if not commit_certified(cert, h, d, validators.quorum):
        views = {m["body"]["v"] for m in cert if m["body"]["t"] == COMMIT}
        best = max((len(cert_signers(cert, COMMIT, v, h, d)) for v in views), default=0)
        raise MessageError(f"block {h}'s certificate has {best} of the {validators.quorum} "
                           f"COMMITs (of one view, for this block) a quorum needs")


def cert_signers(cert: list, t: str, v: int | None, h: int, d: bytes) -> set[int]:
    """Distinct replicas whose messages in `cert` vote (t, v, h, d); v None = any view."""
    out = set()
    for m in cert:
        b = m["body"]
        if b["t"] == t and b["h"] == h and b["d"] == d and (v is None or b["v"] == v):
            out.add(b["r"])
    return out
