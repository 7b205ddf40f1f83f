"""The client API: JSON over HTTP (aiohttp), an event stream over WebSocket, OpenAPI.

Every input is checked before it is used — path parameters by pattern, bodies by size
and shape — and every refusal is a JSON `{"error": "...", "code": "..."}` (a person reads
the error, a program switches on the code) with a 4xx or 5xx status that says
what was wrong. Reads come from the node's committed state; nothing here can change
the ledger except submitting a signed transaction.
"""
from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web
from lendnet.consensus import messages as M
from lendnet.ledger import codec, groups, guarantees, keys, lending, pools, portfolio, savings
from lendnet.ledger.settlement import SALE_STATUSES
from lendnet.ledger.state import StateDamaged
from lendnet.ledger import tx as txm
from lendnet.node.core import pruning

from . import explorer, snapproof
from .blobs import BLOB_MAX, BlobError
from .ratelimit import RateLimiter

MAX_BODY = (1 << 20) + 1024                   # a blob of 1 MiB
MAX_TX_BODY = 2 * txm.MAX_TX_BYTES + 1024     # hex doubles the transaction's bytes
TXS_MAX = 2_000                               # transactions in one POST /v1/txs
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")        # \Z, not $: no trailing newline either
TX_HEX = re.compile(r"(?:[0-9a-f]{2})+")
STREAM_QUEUE = 1_000
MAX_READERS = 256                             # event streams open at once, in all
MAX_READERS_PER_CLIENT = 8                    # and from one client address (not exempt)
# A snapshot chunk's answer (up to 16 MiB) stays in this node's memory until the client
# reads it: at most so many at once, in all and per client (not exempt), each dropped
# if not taken within CHUNK_SEND_S (a state-syncing node asks for 4 at once).
CHUNKS_SENDING = 64
CHUNKS_SENDING_PER_CLIENT = 8
CHUNK_SEND_S = 60.0


# The code of an error the API answers itself (a transaction's refusal carries its own,
# txm.CODES), and the HTTP status of each transaction refusal code.
HTTP_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
              410: "pruned", 413: "too-large", 429: "rate-limited", 503: "busy", 507: "no-space"}
BLOB_STATUS = {"unsigned": 401, "quota": 403, "too-large": 413, "no-space": 507}
TX_STATUS = {"malformed": 400, "too-large": 413, "wrong-chain": 400, "bad-signature": 400,
             "unauthorised": 400, "refused": 400, "nonce-used": 422, "nonce-ahead": 422,
             "nonce-taken": 422, "duplicate": 422, "mempool-full": 503,
             "account-full": 422, "fee-too-low": 422, "cannot-pay": 422,
             "block-full": 503}                                          # every CODES key


async def _until_closed(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        break                                      # a message from a reader: stop it


def _error(status: int, why: str, code: str | None = None) -> web.Response:
    """An error answer: `error` for a person, `code` for a program."""
    return web.json_response({"error": why, "code": code or HTTP_CODES[status]},
                             status=status)


def jsonable(v):
    """Ledger records as JSON: bytes as hex, tuples as lists, maps with string keys."""
    t = type(v)
    if t is bytes:
        return v.hex()
    if t in (list, tuple):
        return [jsonable(x) for x in v]
    if t is dict:
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


LIST_MAX = 1_000                              # records in one page of a listing
LIST_SCAN = 10_000                            # records one listing request looks at


DIGITS = re.compile(r"[0-9]{1,19}")          # a decimal integer, as the description says


def _int(text: str, lo: int, hi: int) -> int:
    """A decimal integer lo..hi, digits only (int() would also take '+5', ' 5', '5_0'
    and other scripts' digits, which the description does not)."""
    if not DIGITS.fullmatch(text) or not lo <= int(text) <= hi:
        raise ValueError(f"must be an integer {lo} to {hi}")
    return int(text)


INT_MAX = (1 << 63) - 1
# The key of each table a listing or a record reads: a loan, a borrower and a lender are
# addresses; an offer, an application and a sale are ids (64 hex digits).
KEY_IS_ADDRESS = {"loan": True, "borrower": True, "lender": True, "offer": False,
                  "application": False, "sale": False, "group": True,
                  "guarantee": True}


def _key_ok(what: str, key: str) -> bool:
    return keys.is_address(key) if KEY_IS_ADDRESS[what] else bool(HEX64.fullmatch(key))


def _key_shape(what: str) -> str:
    return (f"a {what} is an address: 'ln' and 40 lowercase hex digits"
            if KEY_IS_ADDRESS[what] else f"a {what} id is 64 lowercase hex digits")


def _addr(v: str) -> str:
    if not keys.is_address(v):
        raise ValueError("an address is 'ln' and 40 lowercase hex digits")
    return v


def _bool(v: str) -> bool:
    if v not in ("true", "false"):
        raise ValueError("must be true or false")
    return v == "true"


def _status(v: str) -> str:
    if v not in ("open", "funded", "withdrawn"):
        raise ValueError("must be open, funded or withdrawn")
    return v


def _loan_target(v: str) -> str:
    if txm._loan_target(v):
        raise ValueError("an application id (64 lowercase hex digits) or a loan address "
                         "('ln' and 40 lowercase hex digits)")
    return v


def _guarantee_status(v: str) -> str:
    if v not in guarantees.STATUSES:
        raise ValueError("must be " + ", ".join(guarantees.STATUSES))
    return v


def _sale_status(v: str) -> str:
    if v not in SALE_STATUSES:
        raise ValueError("must be " + ", ".join(SALE_STATUSES))
    return v


@web.middleware
async def _json_errors(request: web.Request, handler):
    """aiohttp's own refusals (no such route, wrong method, body too large) in the API's
    shape, so that a client reads every error the same way."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return _error(e.status, e.reason, HTTP_CODES.get(e.status, "http-error"))


# Requests whose answer is far bigger than a status call's cost more than one token: a
# snapshot chunk is up to snapshot.DEFAULT_CHUNK_BYTES (1 MiB), a token per 256 KiB, so a
# stranger cannot take 1 MiB for the price of a status call.
ROUTE_COST = {"/v1/snapshots/{height}/chunks/{index}": 4}


def _rate_limit(cfg, limiter: RateLimiter, refused):
    """Each client address gets cfg.api_rate requests a second (bursts of cfg.api_burst);
    past that, a 429 that says when to come back. The peer link (/p2p) has limits of its
    own (the transport's)."""
    exempt = frozenset(cfg.api_exempt)

    @web.middleware
    async def middleware(request: web.Request, handler):
        who = request.remote or ""
        if request.path != "/p2p" and who not in exempt:
            resource = request.match_info.route.resource
            wait = limiter.wait(who, ROUTE_COST.get(resource and resource.canonical, 1))
            if wait:
                refused.inc()
                answer = _error(429, f"more than {cfg.api_rate} requests a second from "
                                     f"{who}; retry in {wait} s")
                answer.headers["Retry-After"] = str(wait)
                return answer
        return await handler(request)
    return middleware


def _halt_on_damage(daemon):
    """A read that finds the stored state damaged (StateDamaged, recorded in the store)
    stops the node as execution finding it does (exit code 3; the next start rebuilds
    the state); the client gets a 503 in the API's shape, not a bare 500."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            return await handler(request)
        except StateDamaged as e:
            daemon._halt(e)
            return _error(503, f"this node's stored state is damaged and it is stopping "
                               f"to rebuild it: {e}", "state-damaged")
    return middleware


def build_app(daemon) -> web.Application:
    node = daemon.node
    limit = _rate_limit(daemon.cfg, RateLimiter(daemon.cfg.api_rate, daemon.cfg.api_burst),
                        daemon.metrics.rate_limited)
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[limit, _json_errors, _halt_on_damage(daemon)])
    r = app.router

    def pruned(height: int) -> web.Response:
        """410 Gone: a block below this node's first kept one (pruned, or before the
        snapshot it state-synced from)."""
        return web.json_response(pruning.pruned_error(height, node.store.base + 1),
                                 status=410)

    async def read_field(request: web.Request, limit: int, field: str, kind: type,
                         shape: str):
        """The one field of a JSON body `{field: <kind>}`, or an error Response saying
        what was wrong with the body."""
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"body over {limit} bytes")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            # (json nests by recursion: a body of 100,000 '[' is malformed, not a crash)
            return _error(400, f"body must be JSON: {shape}")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {MAX_BODY} bytes")
        if type(body) is not dict or set(body) != {field} or type(body[field]) is not kind:
            return _error(400, f"body must be {shape}")
        return body[field]

    def submit_hex(tx_hex) -> tuple[int, dict]:
        """Submit one hex transaction: (HTTP status, answer) — 202 {hash, status} or a
        4xx {error}."""
        if type(tx_hex) is not str:
            return 400, {"error": "a transaction is a hex string", "code": "malformed"}
        if not TX_HEX.fullmatch(tx_hex):
            return 400, {"error": "tx must be hex: pairs of lowercase hex digits",
                         "code": "malformed"}
        raw = bytes.fromhex(tx_hex)
        try:
            tx_id = daemon.submit(raw)
        except txm.TxError as e:
            daemon.metrics.rejected_txs.inc()
            return TX_STATUS[e.code], {"error": f"transaction refused: {e}", "code": e.code}
        return 202, {"hash": tx_id, "status": "pending"}

    async def post_tx(request: web.Request):
        tx_hex = await read_field(request, MAX_TX_BODY, "tx", str,
                                  '{"tx": "<signed transaction, hex>"}')
        if isinstance(tx_hex, web.Response):
            return tx_hex
        status, answer = submit_hex(tx_hex)
        return web.json_response(answer, status=status)

    async def post_txs(request: web.Request):
        """Many transactions in one request, each admitted or refused on its own (in
        order, so one account's nonces may follow each other in one batch)."""
        txs = await read_field(request, MAX_BODY, "txs", list,
                               '{"txs": ["<signed transaction, hex>", ...]}')
        if isinstance(txs, web.Response):
            return txs
        if not 1 <= len(txs) <= TXS_MAX:
            return _error(400, f"a batch holds 1 to {TXS_MAX} transactions")
        if not all(type(t) is str for t in txs):
            return _error(400, "body must be {\"txs\": [\"<signed transaction, hex>\", ...]}: "
                               "every transaction a string")
        results = []
        for tx_hex in txs:
            status, answer = submit_hex(tx_hex)
            results.append({"http": status, **answer})    # as POST /v1/tx would answer
        return web.json_response({"accepted": sum(r["http"] == 202 for r in results),
                                  "results": results})

    async def get_tx(request: web.Request):
        h = request.match_info["hash"]
        if not HEX64.fullmatch(h):
            return _error(400, "a transaction hash is 64 lowercase hex digits")
        where = node.store.tx_location(h)
        if where is not None and not where["nonce_used"] and bytes.fromhex(h) in node.mempool:
            where = None        # a block could not include it (no gas left): still pending
        if where is not None:
            status = ("committed" if where["ok"] else "failed" if where["nonce_used"]
                      else "rejected")           # rejected: in a block, but not includable
            return web.json_response({"hash": h, "status": status, **where})
        if bytes.fromhex(h) in node.mempool:
            return web.json_response({"hash": h, "status": "pending"})
        # refused on arrival, or dropped from the mempool since (another took its nonce)
        gone = daemon.rejected.get(h) or node.mempool.dropped.get(h)
        if gone is not None:
            why, code = gone
            return web.json_response({"hash": h, "status": "rejected", "error": why,
                                      "code": code})
        return _error(404, f"transaction {h} is not known to this node" + (
            f" (it keeps blocks from {node.store.base + 1} only: an older transaction is "
            f"not indexed here)" if node.store.base else ""))

    async def get_block(request: web.Request):
        try:
            h = _int(request.match_info["height"], 1, INT_MAX)
        except ValueError as e:
            return _error(400, f"height {e}")
        if h <= node.store.base:
            return pruned(h)
        got = node.store.get_block(h) if h <= node.height else None
        if got is None:
            return _error(404, f"no block at height {h} (height is {node.height})")
        block, cert, root = got
        return web.json_response({
            "height": h, "hash": M.block_hash(block["header"]).hex(),
            "header": jsonable(block["header"]), "state_root": root.hex(),
            "txs": [node.parse(raw).id for raw in block["txs"]],
            "txs_bytes": M.txs_bytes(block["txs"]),
            "certificate": {"view": cert[0]["body"]["v"] if cert else None,
                            "signers": sorted(m["body"]["r"] for m in cert)}})

    def _address(request):
        a = request.match_info["address"]
        if not keys.is_address(a):
            raise web.HTTPBadRequest(text=json.dumps(
                {"error": "an address is 'ln' and 40 lowercase hex digits",
                 "code": HTTP_CODES[400]}), content_type="application/json")
        return a

    async def get_account(request: web.Request):
        a = _address(request)
        balance, nonce = node.ledger.account(a)
        return web.json_response({"address": a, "balance": balance, "nonce": nonce,
                                  "height": node.height})

    async def get_score(request: web.Request):
        a = _address(request)
        return web.json_response({"address": a, **jsonable(lending.credit_score(node.ledger, a))})

    def _record(table: str, what: str):
        async def handler(request: web.Request):
            key = request.match_info["id"]
            if not _key_ok(what, key):
                return _error(400, _key_shape(what))
            if what == "loan":
                got = lending.loan_view(node.ledger, key)
            elif what == "group":
                got = groups.group_view(node.ledger, key)
            elif what == "guarantee":
                got = guarantees.view(node.ledger, key)
            else:
                got = getattr(node.ledger.state, table).get(key)
                if what == "offer" and got is not None:
                    got = lending.offer_view(got, node.ledger.time)
            if got is None:
                return _error(404, f"no {what} {key}")
            return web.json_response({what: key, **jsonable(got)})
        return handler

    async def get_sync(request: web.Request):
        """Committed blocks with their certificates, canonical msgpack [[block, cert], ...]:
        what a new full node replays (it checks every certificate itself)."""
        try:
            start = _int(request.match_info["from_h"], 1, INT_MAX)
            count = _int(request.query.get("count", "64"), 1, 256)
        except ValueError:
            return _error(400, f"from height must be an integer 1 to {INT_MAX} and count "
                               f"1 to 256")
        if start <= node.store.base:
            return pruned(start)                  # a follower then asks another peer
        # Bounded by the bytes a follower accepts in one answer (it decodes with
        # M.MAX_MSG_BYTES), measured, not guessed: 5 bytes for the array's header.
        out, size = [], 5
        for h in range(start, min(start + count, node.height + 1)):
            got = node.store.get_block(h)
            if got is None:
                break               # executed, not yet written: served once it is durable
            block, cert, _ = got
            size += len(codec.encode([block, cert]))
            if out and size > M.MAX_MSG_BYTES:
                break                              # the rest on the next request
            out.append([block, cert])
        return web.Response(body=codec.encode(out), content_type="application/msgpack")

    # Snapshots for a state-syncing node (snapproof.py says what each answer proves).
    # A proof costs up to 2*window+1 block reads: it is kept per snapshot height, and
    # only for the snapshots the store still keeps.
    proofs: dict[int, bytes] = {}

    # The listing decodes each kept manifest (~230 KiB at most, a few ms): kept until the
    # store's snapshots change, not decoded again on every request. [heights, offers]
    offered: list = [None, []]

    async def get_snapshots(request: web.Request):
        kept = node.store.snapshot_heights()
        if offered[0] != kept:
            offered[:] = [kept, snapproof.offers(node.store)]
        return web.json_response({"height": node.height, "snapshots": offered[1]})

    async def get_snapshot(request: web.Request):
        try:
            s = _int(request.match_info["height"], 1, INT_MAX)
        except ValueError as e:
            return _error(400, f"height {e}")
        kept = node.store.snapshot_heights()
        for gone in [h for h in proofs if h not in kept]:
            del proofs[gone]
        if s not in proofs:
            got = snapproof.proof(node.store, s, node.config.window) if s in kept else None
            if got is None:
                return _error(404, f"no snapshot at height {s} that this node can prove "
                                   f"(kept: {kept}; a proof needs a later block certifying "
                                   f"its root)")
            proofs[s] = codec.encode(got)
        return web.Response(body=proofs[s], content_type="application/msgpack")

    sending: dict[str, int] = {}       # client -> chunk answers it has not yet taken

    async def get_chunk(request: web.Request):
        try:
            s = _int(request.match_info["height"], 1, INT_MAX)
            i = _int(request.match_info["index"], 0, snapproof.MAX_CHUNKS - 1)
        except ValueError as e:
            return _error(400, f"height and index: {e}")
        who = request.remote or ""
        mine = sending.get(who, 0)
        if sum(sending.values()) >= CHUNKS_SENDING or (
                who not in daemon.cfg.api_exempt and mine >= CHUNKS_SENDING_PER_CLIENT):
            answer = _error(429, f"this node is already sending {sum(sending.values())} "
                                 f"snapshot chunks ({mine} to {who}); at most "
                                 f"{CHUNKS_SENDING}, {CHUNKS_SENDING_PER_CLIENT} per client")
            answer.headers["Retry-After"] = "1"
            return answer
        data = node.store.get_chunk(s, i)
        if data is None:
            return _error(404, f"no chunk {i} of a snapshot at height {s}")
        sending[who] = mine + 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = len(data)
            await resp.prepare(request)
            try:
                await asyncio.wait_for(resp.write(data), CHUNK_SEND_S)
            except TimeoutError:
                if request.transport is not None:
                    request.transport.abort()       # frees what it had not taken
                return resp
            await resp.write_eof()
            return resp
        finally:
            sending[who] -= 1
            if not sending[who]:
                del sending[who]

    def _listing(table: str, what: str, filters: dict):
        """GET /v1/{table}?field=value&after=ID&limit=N: matching records in id order,
        a page at a time. Each request looks at no more than LIST_SCAN records (an
        index walk from the cursor, never a sort), so its cost does not grow with the
        table; `next` is the cursor for the following page (null: no more), and a page
        may hold fewer than `limit` records, even none, while `next` is not null."""
        async def handler(request: web.Request):
            q = request.query
            unknown = set(q) - set(filters) - {"limit", "after"}
            if unknown:
                return _error(400, f"unknown filters {sorted(unknown)}; use "
                                   f"{sorted(filters)}, after and limit")
            try:
                limit = _int(q.get("limit", "100"), 1, LIST_MAX)
            except ValueError as e:
                return _error(400, f"limit {e}")
            after = q.get("after")
            if after is not None and not _key_ok(what, after):
                return _error(400, f"after: {_key_shape(what)}")
            want = {}
            for name, parse in filters.items():
                if name in q:
                    try:
                        want[name] = parse(q[name])
                    except ValueError as e:
                        return _error(400, f"{name}: {e}")
            rows, cursor = node.ledger.state.tables[table].page(
                after, limit, lambda rec: all(rec.get(f) == v for f, v in want.items()),
                LIST_SCAN)
            view = {"loan": lambda key, rec: lending.loan_view(node.ledger, key),
                    "group": lambda key, rec: groups.group_view(node.ledger, key),
                    "guarantee": lambda key, rec: guarantees.view(node.ledger, key),
                    "offer": lambda key, rec: lending.offer_view(rec, node.ledger.time)}.get(
                        what, lambda key, rec: rec)
            out = [{what: key, **jsonable(view(key, rec))} for key, rec in rows]
            return web.json_response({"height": node.height, what + "s": out,
                                      "next": cursor})
        return handler

    list_groups = _listing("groups", "group", {"leader": _addr})

    async def get_groups(request: web.Request):
        """GET /v1/groups: groups in address order (by leader), or ?member=ADDR: the
        group that address joined (one at most), as a page of one."""
        member = request.query.get("member")
        if member is None:
            return await list_groups(request)
        if not keys.is_address(member):
            return _error(400, "member: an address is 'ln' and 40 lowercase hex digits")
        q = {k: v for k, v in request.query.items() if k != "member"}
        unknown = set(q) - {"leader", "after", "limit"}
        if unknown:
            return _error(400, f"unknown filters {sorted(unknown)}; use leader, member, "
                               f"after and limit")
        try:
            _int(q.get("limit", "100"), 1, LIST_MAX)
            leader = _addr(q["leader"]) if "leader" in q else None
            after = _addr(q["after"]) if "after" in q else None
        except ValueError as e:
            return _error(400, str(e))
        g = node.ledger.state.group_members.get(member)
        view = g and groups.group_view(node.ledger, g)
        keep = (view is not None and (leader is None or view["leader"] == leader)
                and (after is None or g > after))
        return web.json_response({"height": node.height, "next": None,
                                  "groups": [jsonable(view)] if keep else []})

    async def get_asset(request: web.Request):
        name = request.match_info["id"]
        if len(name) > txm.ASSET_ID_MAX or txm._asset_id(name):
            return _error(400, f"an asset id is <owner address>/<name>: a name of 1 to "
                               f"{txm.ASSET_NAME_MAX} characters without '/'")
        got = node.ledger.state.assets.get(name)
        if got is None:
            return _error(404, f"no asset {name!r}")
        return web.json_response({"asset": name, **jsonable(got)})

    async def get_savings_product(request: web.Request):
        """A savings product: provider, rate, the interest reserve left, accounts."""
        product = request.match_info["product"]
        if not keys.is_address(product):
            return _error(400, "a savings product is an address: 'ln' and 40 lowercase "
                               "hex digits")
        got = savings.product_view(node.ledger, product)
        if got is None:
            return _error(404, f"no savings product {product}")
        return web.json_response({"height": node.height, **jsonable(got)})

    async def get_savings_account(request: web.Request):
        """One owner's account in a product, interest accrued to the chain time now."""
        product, owner = request.match_info["product"], request.match_info["owner"]
        if not (keys.is_address(product) and keys.is_address(owner)):
            return _error(400, "a savings product and its owner are addresses: 'ln' and "
                               "40 lowercase hex digits")
        if node.ledger.state.savings.get(product) is None:
            return _error(404, f"no savings product {product}")
        got = savings.account_view(node.ledger, product, owner)
        if got is None:
            return _error(404, f"{owner} has no account in savings product {product}")
        return web.json_response({"height": node.height, **jsonable(got)})

    async def get_quote(request: web.Request):
        """What an application would get from an offer if funded now (lending.quote)."""
        q = request.query
        if set(q) != {"application", "offer"} or not all(HEX64.fullmatch(q[k]) for k in q):
            return _error(400, "give ?application=ID&offer=ID (64 hex digits each)")
        try:
            got = lending.quote(node.ledger, q["application"], q["offer"])
        except KeyError as e:
            return _error(404, str(e.args[0]))
        return web.json_response({"height": node.height, **jsonable(got)})

    async def get_pool(request: web.Request):
        """An application's shared funding (ledger/pools.py): slices, filled/target,
        status, expiry, the loan, and what each slice's lender has received."""
        key = request.match_info["application"]
        if not _key_ok("application", key):
            return _error(400, _key_shape("application"))
        got = pools.pool_view(node.ledger, key)
        if got is None:
            return _error(404, f"no pool for application {key}")
        return web.json_response({"height": node.height, **jsonable(got)})

    async def get_lending(request: web.Request):
        return web.json_response(jsonable(lending.params(node.ledger)))

    async def post_blob(request: web.Request):
        """Store a blob for an account the ledger knows, signed by its key
        (blobs.sign_upload), within its quota."""
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"a blob is at most {BLOB_MAX} bytes")
        if not 0 < len(data) <= BLOB_MAX:
            return _error(400 if not data else 413, f"a blob is 1 to {BLOB_MAX} bytes")
        signer = request.headers.get("X-Lendnet-Signer", "")
        sig = request.headers.get("X-Lendnet-Signature", "")
        if not signer or not sig:
            return _error(401, "an upload is signed: X-Lendnet-Signer (a public key, hex) "
                               "and X-Lendnet-Signature (hex)", "unsigned")
        try:
            owner = daemon.blobs.signer(node.ledger.chain_id, data, signer, sig)
            state = node.ledger.state
            if (node.ledger.account(owner)[0] <= 0 and owner not in state.borrowers
                    and owner not in state.lenders):
                return _error(403, f"{owner} holds no money and is not a registered "
                                   f"borrower or lender: this node stores blobs for "
                                   f"accounts of its chain only", "unknown-account")
            return web.json_response({"hash": daemon.blobs.put(data, owner)}, status=201)
        except BlobError as e:
            return _error(BLOB_STATUS[e.code], str(e), e.code)

    async def get_blob(request: web.Request):
        h = request.match_info["hash"]
        if not HEX64.fullmatch(h):
            return _error(400, "a blob hash is 64 lowercase hex digits")
        data = daemon.blobs.get(h)
        if data is None:
            return _error(404, f"no blob {h} on this node")
        return web.Response(body=data, content_type="application/octet-stream")

    async def get_status(request: web.Request):
        return web.json_response(daemon.status())

    books = portfolio.Books()          # shared with the explorer

    async def get_portfolio(request: web.Request):
        """The loan book of one lender (?lender=ADDR) or of the whole network: PAR30,
        PAR90, buckets, net yield (ledger/portfolio.py), computed at most once a block."""
        unknown = set(request.query) - {"lender"}
        if unknown:
            return _error(400, f"unknown parameters {sorted(unknown)}; use lender")
        who = request.query.get("lender")
        if who is not None and not keys.is_address(who):
            return _error(400, "lender: an address is 'ln' and 40 lowercase hex digits")
        try:
            height, book, _ = books.get(node.ledger, who)
        except portfolio.Busy as e:
            answer = _error(503, str(e))
            answer.headers["Retry-After"] = "1"
            return answer
        return web.json_response({"height": height, "lender": who, **book})

    # total_money walks every account (O(state), from disk on a stored state): done
    # at most once a height, however often it is asked. [height, total]
    money_at: list = [-1, 0]

    async def get_supply(request: web.Request):
        led = node.ledger
        if money_at[0] != node.height:
            money_at[:] = [node.height, led.total_money()]
        return web.json_response({"height": node.height, "total": money_at[1],
                                  "supply": led.supply, "fees": led.fees_collected()})

    async def get_metrics(request: web.Request):
        return web.Response(body=daemon.metrics.exposition(),
                            content_type="text/plain", charset="utf-8")

    async def events(request: web.Request):
        """WebSocket: one JSON object per committed block and per loan event
        (`?types=block` or `?types=loan` for one kind). A reader that falls more than
        STREAM_QUEUE events behind is cut off rather than buffered without bound."""
        types = set(request.query.get("types", "block,loan").split(","))
        if not types or not types <= {"block", "loan"}:
            return _error(400, "types is a comma-separated list of block, loan")
        who = request.remote or ""
        mine = sum(1 for q in daemon.subscribers if q.who == who)
        if len(daemon.subscribers) >= MAX_READERS or (
                who not in daemon.cfg.api_exempt and mine >= MAX_READERS_PER_CLIENT):
            return _error(503, f"this node already streams to {len(daemon.subscribers)} "
                               f"readers ({mine} from {who}); at most {MAX_READERS}, "
                               f"{MAX_READERS_PER_CLIENT} per client", "busy")
        ws = web.WebSocketResponse(heartbeat=20)
        q: asyncio.Queue = asyncio.Queue(STREAM_QUEUE)
        q.types = types
        q.who = who
        # Subscribed before the handshake: a reader that has its answer sees every event
        # committed after it (what it sends next, say), none lost in between.
        daemon.subscribers.add(q)
        try:
            await ws.prepare(request)
        except BaseException:
            daemon.subscribers.discard(q)
            raise
        # Read what the client sends, so its close (or a ping) is answered at once; a
        # reader has nothing to say, so anything else ends the stream.
        listening = asyncio.create_task(_until_closed(ws))
        try:
            while not ws.closed and not listening.done():
                try:
                    event = await asyncio.wait_for(q.get(), 1.0)
                except TimeoutError:
                    if q not in daemon.subscribers:
                        break                          # cut off (too slow) or stopping
                    continue
                try:
                    await ws.send_json(event)
                except ConnectionError:            # the reader went away: stop quietly
                    break
        finally:
            daemon.subscribers.discard(q)
            listening.cancel()
            await ws.close()
        return ws

    async def openapi(request: web.Request):
        return web.json_response(OPENAPI)

    r.add_post("/v1/tx", post_tx)
    r.add_post("/v1/txs", post_txs)
    r.add_get("/v1/tx/{hash}", get_tx)
    r.add_get("/v1/blocks/{height}", get_block)
    r.add_get("/v1/accounts/{address}", get_account)
    r.add_get("/v1/scores/{address}", get_score)
    r.add_get("/v1/loans", _listing("loans", "loan", {"borrower": _addr, "lender": _addr}))
    r.add_get("/v1/offers", _listing("offers", "offer", {"lender": _addr, "active": _bool}))
    r.add_get("/v1/applications", _listing("applications", "application",
                                           {"borrower": _addr, "status": _status}))
    r.add_get("/v1/assets/{id:.+}", get_asset)
    r.add_get("/v1/quote", get_quote)
    r.add_get("/v1/lending", get_lending)
    r.add_get("/v1/borrowers/{id}", _record("borrowers", "borrower"))
    r.add_get("/v1/lenders/{id}", _record("lenders", "lender"))
    r.add_post("/v1/blobs", post_blob)
    r.add_get("/v1/blobs/{hash}", get_blob)
    r.add_get("/v1/loans/{id}", _record("loans", "loan"))
    r.add_get("/v1/offers/{id}", _record("offers", "offer"))
    r.add_get("/v1/applications/{id}", _record("applications", "application"))
    r.add_get("/v1/sync/{from_h}", get_sync)
    r.add_get("/v1/snapshots", get_snapshots)
    r.add_get("/v1/snapshots/{height}", get_snapshot)
    r.add_get("/v1/snapshots/{height}/chunks/{index}", get_chunk)
    r.add_get("/v1/status", get_status)
    r.add_get("/v1/supply", get_supply)
    r.add_get("/v1/portfolio", get_portfolio)
    r.add_get("/v1/sales", _listing("sales", "sale", {"loan": _addr, "status": _sale_status}))
    r.add_get("/v1/sales/{id}", _record("sales", "sale"))
    r.add_get("/v1/savings/{product}", get_savings_product)
    r.add_get("/v1/savings/{product}/{owner}", get_savings_account)
    r.add_get("/v1/pools/{application}", get_pool)
    r.add_get("/v1/groups", get_groups)
    r.add_get("/v1/groups/{id}", _record("groups", "group"))
    r.add_get("/v1/guarantees", _listing("guarantees", "guarantee", {
        "to": _loan_target, "loan": _addr, "guarantor": _addr, "status": _guarantee_status}))
    r.add_get("/v1/guarantees/{id}", _record("guarantees", "guarantee"))
    r.add_get("/v1/events", events)
    r.add_get("/metrics", get_metrics)
    r.add_get("/openapi.json", openapi)
    explorer.routes(app, daemon, books)        # the web explorer at / (explorer.py)
    return app


# ---- The API's description (OpenAPI 3.0), served at /openapi.json ----------------------
# It says exactly what the handlers above accept: a request it calls valid is answered
# 2xx (or 404 for a well-formed key that names nothing), one it calls invalid is refused
# 4xx; and every answer, errors included, has the shape it gives. tests/test_openapi.py
# checks it with openapi-spec-validator and fuzzes a real node against it (schemathesis).

ADDRESS = {"type": "string", "pattern": "^ln[0-9a-f]{40}$", "minLength": 42,
           "maxLength": 42, "example": "ln" + "0" * 40,
           "description": "an address: 'ln' and 40 lowercase hex digits"}
HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$", "minLength": 64, "maxLength": 64,
        "example": "0" * 64, "description": "64 lowercase hex digits"}
ASSET_ID = {"type": "string", "pattern": f"^ln[0-9a-f]{{40}}/[^/]{{1,{txm.ASSET_NAME_MAX}}}$",
            "minLength": 44, "maxLength": txm.ASSET_ID_MAX, "example": "ln" + "0" * 40 + "/car",
            "description": f"<owner address>/<name>, a name of 1 to {txm.ASSET_NAME_MAX} "
                           f"characters without '/'"}
HEIGHT = {"type": "integer", "minimum": 1, "maximum": INT_MAX, "example": 1}
NULLABLE = {"nullable": True}
ERROR_CODES = sorted({*HTTP_CODES.values(), *TX_STATUS, *BLOB_STATUS, "unsigned",
                      "unknown-account", "http-error"})
_KEY = {True: ADDRESS, False: HASH}


def _error_schema(codes) -> dict:
    return {"type": "object", "required": ["error", "code"], "additionalProperties": False,
            "properties": {"error": {"type": "string", "description": "for a person"},
                           "code": {"type": "string", "enum": sorted(codes),
                                    "description": "for a program"}}}


def _err(why: str, *codes: str) -> dict:
    return {"description": why, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"} if not codes else
        _error_schema(codes)}}}


def _json(why: str, schema: dict) -> dict:
    return {"description": why, "content": {"application/json": {"schema": schema}}}


def _bytes(why: str, media: str) -> dict:
    return {"description": why, "content": {media: {"schema": {"type": "string",
                                                             "format": "binary"}}}}


def _obj(required=(), **props) -> dict:
    return {"type": "object", "required": list(required), "properties": props}


def _path(name: str, schema: dict, why: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": why}


def _query(name: str, schema: dict, why: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": why}


RATE_LIMITED = {"description": "more requests a second than the node allows this client "
                               "(api_rate, api_burst; its own machine is exempt)",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                            "description": "seconds to wait"}},
                "content": {"application/json": {"schema": _error_schema(["rate-limited"])}}}
BAD = _err("a parameter or the body is not what this description says (the error says "
           "which)", "bad-request")
NOT_FOUND = _err("well formed, but this node knows no such thing", "not-found")
PRUNED = {"description": "a block below the first this node keeps (it is pruned, or the "
                         "node state-synced past it): ask an archive node",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["error", "code", "first_block"],
              "additionalProperties": False, "properties": {
                  "error": {"type": "string", "description": "for a person"},
                  "code": {"type": "string", "enum": ["pruned"]},
                  "first_block": {**HEIGHT, "description": "the first block it keeps"}}}}}}


def _op(op_id: str, summary: str, params=(), ok=None, errors=None, body=None) -> dict:
    """One operation: its parameters and every answer it gives (429 on each: the rate
    limit comes before everything else)."""
    responses = dict(ok or {"200": _json("OK", {"type": "object"})})
    responses.update(errors if errors is not None else {"400": BAD})
    responses["429"] = RATE_LIMITED
    op = {"operationId": op_id, "summary": summary, "parameters": list(params),
          "responses": responses}
    if body:
        op["requestBody"] = body
    return op


def _link(op_id: str, **params: str) -> dict:
    return {"operationId": op_id, "parameters": params}


# Where a record's fields name other records (OpenAPI links: a client, or the fuzzer's
# stateful phase, follows them).
RECORD_LINKS = {
    "loan": {"borrower": ("get_borrower", "id"), "lender": ("get_lender", "id")},
    "application": {"loan": ("get_loan", "id"), "borrower": ("get_borrower", "id")},
    "offer": {"lender": ("get_lender", "id")},
    "sale": {"loan": ("get_loan", "id"), "asset": ("get_asset", "id")},
    "group": {"leader": ("get_borrower", "id")},
    "guarantee": {"loan": ("get_loan", "id"), "borrower": ("get_borrower", "id")},
}


def _record_op(what: str, summary: str) -> dict:
    key = _KEY[KEY_IS_ADDRESS[what]]
    ok = _json(f"the {what}", _obj([what], **{what: key}))
    ok["links"] = {f"{op_id}_by_{field}": _link(op_id, **{param: f"$response.body#/{field}"})
                   for field, (op_id, param) in RECORD_LINKS.get(what, {}).items()}
    return {"get": _op(f"get_{what}", summary, [_path("id", key, _key_shape(what))],
                       {"200": ok}, {"400": BAD, "404": NOT_FOUND})}


def _listing_op(what: str, summary: str, filters: list) -> dict:
    key = _KEY[KEY_IS_ADDRESS[what]]
    page = [_query("after", key, "the `next` of the page before: records after this key"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": LIST_MAX,
                             "default": 100}, "records in this page, at most")]
    ok = _json("a page", _obj(["height", what + "s", "next"], height={"type": "integer"},
                              next={**key, **NULLABLE, "description":
                                    "the cursor of the next page; null: no more"},
                              **{what + "s": {"type": "array", "items": _obj(
                                  [what], **{what: key})}}))
    ok["links"] = {f"get_{what}": _link(f"get_{what}", id=f"$response.body#/{what}s/0/{what}"),
                   "next_page": _link(f"list_{what}s", after="$response.body#/next")}
    return {"get": _op(
        f"list_{what}s", summary + f" In {what} key order, a page at a time: each request "
        f"looks at no more than {LIST_SCAN} records, so a page may hold fewer than `limit`, "
        "even none, while `next` is not null. Any other query parameter is refused.",
        filters + page, {"200": ok})}


TX_BODY = {"type": "string", "pattern": "^([0-9a-f]{2})+$", "minLength": 2,
           "maxLength": 2 * txm.MAX_TX_BYTES,
           "description": f"a signed transaction, canonical msgpack, as lowercase hex (at "
                          f"most {txm.MAX_TX_BYTES} bytes)"}
TX_REFUSED = {str(s): _err(f"refused ({s}): " + "; ".join(
    f"{c}: {txm.CODES[c]}" for c in sorted(TX_STATUS) if TX_STATUS[c] == s),
    *sorted({c for c in TX_STATUS if TX_STATUS[c] == s} | ({HTTP_CODES[s]} if s in
                                                           (400, 413) else set())))
    for s in sorted(set(TX_STATUS.values()))}
TX_REFUSED["400"]["description"] += ("; bad-request: the body is not {\"tx\": <hex>}; "
                                     "malformed also: not hex")
TX_REFUSED["413"]["description"] += "; too-large also: the body is over its limit"
TX_RESULT = {"type": "object", "required": ["http"], "properties": {
    "http": {"type": "integer", "enum": sorted({202, *TX_STATUS.values()}),
             "description": "what POST /v1/tx would have answered"},
    "hash": HASH, "status": {"type": "string", "enum": ["pending"]},
    "error": {"type": "string"}, "code": {"type": "string", "enum": sorted(TX_STATUS)}}}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "lendnet node API", "version": "1",
             "description": "Submit signed transactions and read the committed ledger. "
                            "Every refusal is JSON {error, code}: `error` for a person, "
                            "`code` for a program. Requests past a client's rate get 429 "
                            "with Retry-After."},
    "components": {"schemas": {"Error": _error_schema(ERROR_CODES)}},
    "paths": {
        "/v1/tx": {"post": _op(
            "submit_tx", "Submit a signed transaction (canonical msgpack, hex). The "
            "description cannot say which bytes are a valid signed transaction: hex that is "
            "not one is refused 400 `malformed` (or another code below).",
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["tx"], "additionalProperties": False,
                "properties": {"tx": TX_BODY}}}}},
            ok={"202": {**_json("admitted to the mempool", _obj(
                ["hash", "status"], hash=HASH, status={"type": "string", "enum": ["pending"]})),
                "links": {"get_tx": _link("get_tx", hash="$response.body#/hash")}}},
            errors=TX_REFUSED)},
        "/v1/txs": {"post": _op(
            "submit_txs", f"Submit 1 to {TXS_MAX} signed transactions at once (body at most "
            f"{MAX_BODY} bytes); each is admitted or refused on its own, in order, and its "
            "result says what POST /v1/tx would have answered (a string that is not hex "
            "is refused in its result, `malformed`; one too long, `too-large`).",
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["txs"], "additionalProperties": False,
                "properties": {"txs": {"type": "array", "minItems": 1, "maxItems": TXS_MAX,
                                       "items": {"type": "string", "description":
                                                 "a signed transaction, hex"}}}}}}},
            ok={"200": _json("one result per transaction", _obj(
                ["accepted", "results"], accepted={"type": "integer", "minimum": 0},
                results={"type": "array", "items": TX_RESULT}))},
            errors={"400": BAD, "413": _err("the body is over its limit", "too-large")})},
        "/v1/tx/{hash}": {"get": _op(
            "get_tx", "A transaction's status: pending; committed (height, index); failed "
            "(included, its error); or rejected (why).",
            [_path("hash", HASH, "the transaction's hash")],
            {"200": _json("its status", _obj(["hash", "status"], hash=HASH, status={
                "type": "string", "enum": ["pending", "committed", "failed", "rejected"]}))},
            {"400": BAD, "404": _err("this node has not seen it", "not-found")})},
        "/v1/blocks/{height}": {"get": _op(
            "get_block", "A committed block: header, tx hashes, their bytes, state root, "
            "certificate signers.", [_path("height", HEIGHT, "a block height")],
            {"200": _json("the block", _obj(
                ["height", "hash", "header", "state_root", "txs", "txs_bytes", "certificate"],
                height=HEIGHT, hash=HASH, header={"type": "object"}, state_root=HASH,
                txs={"type": "array", "items": HASH}, txs_bytes={"type": "integer"},
                certificate={"type": "object"}))},
            {"400": BAD, "404": _err("no block there yet", "not-found"), "410": PRUNED})},
        "/v1/accounts/{address}": {"get": _op(
            "get_account", "Balance and next nonce (an unknown address: 0 and 0).",
            [_path("address", ADDRESS, "the account")],
            {"200": _json("the account", _obj(["address", "balance", "nonce", "height"],
                                              address=ADDRESS, balance={"type": "integer"},
                                              nonce={"type": "integer"},
                                              height={"type": "integer"}))})},
        "/v1/scores/{address}": {"get": _op(
            "get_score", "Credit score with identity status, components, reasons and the "
            "history behind it.", [_path("address", ADDRESS, "the account")],
            {"200": _json("its score", _obj(["address", "score", "reasons"], address=ADDRESS,
                                            score={"type": "integer"},
                                            reasons={"type": "array",
                                                     "items": {"type": "string"}}))})},
        "/v1/loans/{id}": _record_op("loan", "A loan: parties, terms, status, what is due."),
        "/v1/offers/{id}": _record_op(
            "offer", "A lender's offer, with `apr`: the APR (fees included) of a "
            "representative loan per tier, and `apr_basis` saying what loan that is."),
        "/v1/applications/{id}": _record_op("application", "A borrower's application."),
        "/v1/borrowers/{id}": _record_op("borrower", "A registered borrower: profile and "
                                                     "documents hashes, since when."),
        "/v1/lenders/{id}": _record_op("lender", "A registered lender."),
        "/v1/sales/{id}": _record_op("sale", "A collateral sale: asset, reserve, best bid, "
                                             "when it closes."),
        "/v1/pools/{application}": {"get": _op(
            "get_pool", "The shared funding of an application (its latest pool): the "
            "slices in order, each with its lender, amount, share (bps) and what the pool "
            "has paid it; filled, target and what is left; status (open, funded, expired, "
            "withdrawn); expiry; the loan once funded; distributed and undistributed.",
            [_path("application", HASH, "the application's id")],
            {"200": {**_json("the pool", _obj(
                ["height", "application", "pool", "status", "target", "filled", "slices"],
                height={"type": "integer"}, application=HASH, pool=ADDRESS,
                status={"type": "string", "enum": list(pools.POOL_STATUSES)},
                target={"type": "integer"}, filled={"type": "integer"},
                expires={"type": "integer"}, loan={**ADDRESS, **NULLABLE},
                slices={"type": "array", "items": _obj(
                    ["lender", "amount", "received"], lender=ADDRESS,
                    amount={"type": "integer"}, received={"type": "integer"},
                    share_bps={"type": "integer"})})),
                "links": {"get_application": _link("get_application",
                                                   id="$response.body#/application")}}},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/guarantees/{id}": _record_op(
            "guarantee", "A guarantee: guarantor, what it backs (`to`, the application and "
            "the loan), amount, status (held, drawn, released), what was drawn into the "
            "loan and refunded, and `held`, what its agreement holds now."),
        "/v1/quote": {"get": _op(
            "get_quote", "The tier, exact schedule, total cost and APR of an application "
            "on an offer if funded now; whether it is within the application's limits "
            "(`problems`) and would pass accept_offer (`fits`: '' or why not). Both "
            "parameters, and no other.",
            [_query("application", HASH, "an application id", True),
             _query("offer", HASH, "an offer id", True)],
            {"200": _json("the quote", _obj(["height"], height={"type": "integer"}))},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/lending": {"get": _op(
            "get_lending", "The chain's lending parameters.", errors={},
            ok={"200": _json("its parameters", _obj(
                ["max_rate_bps", "appraisers", "registrars"],
                max_rate_bps={"type": "integer"},
                appraisers={"type": "array", "items": ADDRESS},
                registrars={"type": "array", "items": ADDRESS}))})},
        "/v1/sync/{from_h}": {"get": _op(
            "sync", "Up to `count` committed blocks from `from_h` with their commit "
            "certificates, canonical msgpack [[block, cert], ...] (fewer when they would "
            "pass the bytes a follower decodes at once; none past the head).",
            [_path("from_h", HEIGHT, "the first height"),
             _query("count", {"type": "integer", "minimum": 1, "maximum": 256,
                              "default": 64}, "blocks at most")],
            {"200": _bytes("msgpack", "application/msgpack")},
            {"400": BAD, "410": PRUNED})},
        "/v1/snapshots": {"get": _op(
            "list_snapshots", "The state snapshots this node keeps, latest first: height, "
            "chunks, bytes and the state root its manifest names (a claim: "
            "/v1/snapshots/{height} proves it). What `lendnet node start --state-sync` "
            "asks every peer first.", errors={},
            ok={"200": _json("the snapshots", _obj(
                ["height", "snapshots"], height={"type": "integer"},
                snapshots={"type": "array", "items": _obj(
                    ["height", "chunks", "bytes", "root"], height=HEIGHT,
                    chunks={"type": "integer", "minimum": 1},
                    bytes={"type": "integer", "minimum": 0}, root=HASH)}))})},
        "/v1/snapshots/{height}": {"get": _op(
            "get_snapshot", "The proof of the snapshot at `height`, canonical msgpack "
            "{height, manifest, chunks, headers, cert}: its manifest, and the block "
            "headers from `height` to the first block certifying a state root at or after "
            "it, with that block's commit certificate (node/daemon/snapproof.py).",
            [_path("height", HEIGHT, "the snapshot's height")],
            {"200": _bytes("msgpack", "application/msgpack")},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/snapshots/{height}/chunks/{index}": {"get": _op(
            "get_snapshot_chunk", "One chunk of the snapshot at `height` (ledger/"
            "snapshot.py: canonical msgpack, checked by the reader against the manifest).",
            [_path("height", HEIGHT, "the snapshot's height"),
             _path("index", {"type": "integer", "minimum": 0,
                             "maximum": snapproof.MAX_CHUNKS - 1}, "the chunk's index")],
            {"200": _bytes("its bytes", "application/octet-stream")},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/loans": _listing_op("loan", "Loans, filtered by borrower and lender.", [
            _query("borrower", ADDRESS, "only this borrower's"),
            _query("lender", ADDRESS, "only this lender's")]),
        "/v1/offers": _listing_op("offer", "Offers (each with its representative APR per "
                                           "tier), filtered by lender and active.", [
            _query("lender", ADDRESS, "only this lender's"),
            _query("active", {"type": "string", "enum": ["true", "false"]},
                   "only the offers that are (true) or are not (false) active")]),
        "/v1/applications": _listing_op("application", "Applications, by borrower and "
                                                       "status.", [
            _query("borrower", ADDRESS, "only this borrower's"),
            _query("status", {"type": "string", "enum": ["open", "funded", "withdrawn"]},
                   "only those in this status")]),
        "/v1/sales": _listing_op("sale", "Collateral sales of defaulted loans, by loan and "
                                         "status.", [
            _query("loan", ADDRESS, "only this loan's"),
            _query("status", {"type": "string", "enum": list(SALE_STATUSES)},
                   "only those in this status")]),
        "/v1/savings/{product}": {"get": _op(
            "get_savings_product", "A savings product (ledger/savings.py): provider, "
            "name, rate_bps (a year, simple, actual/365), the interest reserve left, the "
            "accounts opened and the agreement's ledger balance (reserve plus deposits).",
            [_path("product", ADDRESS, "the product's agreement address")],
            {"200": {**_json("the product", _obj(
                ["height", "product", "provider", "rate_bps", "reserve", "accounts"],
                height={"type": "integer"}, product=ADDRESS, provider=ADDRESS,
                name={"type": "string"}, rate_bps={"type": "integer"},
                reserve={"type": "integer"}, accounts={"type": "integer"},
                balance={"type": "integer"})),
                "links": {"get_savings_account_of_provider": _link(
                    "get_savings_account", product="$response.body#/product",
                    owner="$response.body#/provider")}}},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/savings/{product}/{owner}": {"get": _op(
            "get_savings_account", "An account in a savings product, interest accrued to "
            "now (read only): balance, interest earned, unpaid (the reserve ran dry) and "
            "accrued through, what is pledged (withdrawals are blocked while anything is), "
            "available to pledge, and its active pledges.",
            [_path("product", ADDRESS, "the product's agreement address"),
             _path("owner", ADDRESS, "the account's owner")],
            {"200": _json("the account", _obj(
                ["height", "product", "owner", "balance", "interest_earned",
                 "interest_accrued_through", "pledged", "pledges"],
                height={"type": "integer"}, product=ADDRESS, owner=ADDRESS,
                balance={"type": "integer"}, interest_earned={"type": "integer"},
                interest_unpaid={"type": "integer"},
                interest_accrued_through={"type": "integer"},
                pledged={"type": "integer"}, to_unlock={"type": "integer"},
                available={"type": "integer"},
                pledges={"type": "array", "items": {"type": "object"}}))},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/groups/{id}": _record_op(
            "group", "A borrowers' group (joint liability): its status (forming, active, "
            "lapsed), savings_bps, its record kept by the group agreement (members, loans, "
            "covers given and received, what each member owes the fellows who covered it, "
            "lates, defaults), each member's current group loan with its days past due, "
            "and whether the group is in arrears (and why)."),
        "/v1/groups": _listing_op("group", "Borrowers' groups, by leader; or, with "
                                           "member, the one group that address joined.", [
            _query("leader", ADDRESS, "only the groups this address leads"),
            _query("member", ADDRESS, "only the group this address joined (at most one; "
                                      "the page's next is then null)")]),
        "/v1/guarantees": _listing_op("guarantee", "Guarantees, by what they were pledged "
                                                   "to, loan, guarantor and status.", [
            _query("to", {"type": "string", "pattern": "^([0-9a-f]{64}|ln[0-9a-f]{40})$",
                          "minLength": 42, "maxLength": 64},
                   "only those pledged to this application id or loan address"),
            _query("loan", ADDRESS, "only those backing this loan (pledged to it, or to "
                                    "the application it funded)"),
            _query("guarantor", ADDRESS, "only this guarantor's"),
            _query("status", {"type": "string", "enum": list(guarantees.STATUSES)},
                   "only those in this status")]),
        "/v1/assets/{id}": {"get": _op(
            "get_asset", "A collateral asset: owner, declared and appraised value (and by "
            "whom), lien. The '/' in its id may be sent as is or as %2F.",
            [_path("id", ASSET_ID, "the asset's id")],
            {"200": _json("the asset", _obj(["asset"], asset=ASSET_ID))},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/blobs": {"post": _op(
            "put_blob", f"Store an off-chain blob (e.g. sealed documents), 1 to {BLOB_MAX} "
            "bytes, for an account of the chain (one with money, or a registered borrower "
            "or lender), signed by its key: X-Lendnet-Signature over 'lendnet-blob-v1|"
            "<chain>|' + sha256 of the bytes; each account may store 32 blobs, 8 MiB "
            "together. Returns its sha256.",
            [{"name": "X-Lendnet-Signer", "in": "header", "required": True,
              "schema": HASH, "description": "the signer's public key, hex"},
             {"name": "X-Lendnet-Signature", "in": "header", "required": True,
              "schema": {"type": "string", "pattern": "^[0-9a-f]{128}$", "minLength": 128,
                         "maxLength": 128}, "description": "ed25519 signature, hex"}],
            {"201": {**_json("stored", _obj(["hash"], hash=HASH)),
                     "links": {"get_blob": _link("get_blob", hash="$response.body#/hash")}}},
            {"400": _err("empty", "bad-request"),
             "401": _err("unsigned, or not a signature of these bytes by that key",
                         "unsigned"),
             "403": _err("not an account of the chain, or over its quota", "unknown-account",
                         "quota"),
             "413": _err("over the size limit", "too-large"),
             "507": _err("the node holds all the blobs it will", "no-space")},
            body={"required": True, "content": {"application/octet-stream": {"schema": {
                "type": "string", "format": "binary", "minLength": 1,
                "maxLength": BLOB_MAX}}}})},
        "/v1/blobs/{hash}": {"get": _op(
            "get_blob", "A stored blob's bytes.", [_path("hash", HASH, "its sha256")],
            {"200": _bytes("its bytes", "application/octet-stream")},
            {"400": BAD, "404": NOT_FOUND})},
        "/v1/status": {"get": _op(
            "get_status", "Height, view, primary, peers, mempool size; the chain clock's "
            "time_scale (chain seconds a real second) and dev_faucet (the dev faucet's "
            "address, or null on a chain whose genesis does not fund it); archive, "
            "keep_blocks and first_block: which blocks the node keeps and serves; "
            "synced_from.", errors={},
            ok={"200": _json("the node's status", _obj(
                ["chain_id", "height", "view", "mempool"], chain_id={"type": "string"},
                height={"type": "integer"}, view={"type": "integer"},
                mempool={"type": "integer"}, time_scale={"type": "integer"},
                dev_faucet={"type": "string", "nullable": True,
                            "pattern": "^ln[0-9a-f]{40}$"},
                archive={"type": "boolean", "description": "keeps every block from genesis"},
                keep_blocks={"type": "integer", "nullable": True, "minimum": 1,
                             "description": "a pruned node: the blocks it keeps; null: all"},
                first_block={**HEIGHT, "description": "the first block it keeps: 1 on an "
                             "archive node"},
                synced_from={"type": "integer", "nullable": True,
                             "description": "the snapshot height this run state-synced "
                                            "to (node start --state-sync), else null"}))})},
        "/v1/supply": {"get": _op(
            "get_supply", "All balances and escrows summed, and the genesis supply: equal "
            "unless money was made or lost; fees: the fees collected (burned, counted in "
            "the total).", errors={},
            ok={"200": _json("the sums", _obj(["height", "total", "supply", "fees"],
                                              height={"type": "integer"},
                                              total={"type": "integer"},
                                              supply={"type": "integer"},
                                              fees={"type": "integer"}))})},
        "/v1/portfolio": {"get": _op(
            "get_portfolio", "The loan book of one lender, or of the whole network: "
            "outstanding, loans by arrears bucket (current, 1-30, 31-60, 61-90, 90+ days "
            "past due), PAR1/PAR30/PAR90 and net yield in basis points (null: no loans).",
            [_query("lender", ADDRESS, "only this lender's loans")],
            {"200": _json("the book", _obj(
                ["height", "lender", "loans", "outstanding", "buckets"],
                height={"type": "integer"}, lender={**ADDRESS, **NULLABLE},
                loans={"type": "integer"}, outstanding={"type": "integer"},
                buckets={"type": "object"},
                par30_bps={"type": "integer", **NULLABLE})),
             "400": BAD,
             "503": _err("more lenders' books asked for in this height than a node "
                         "computes in one (each is a walk over every loan): ask again "
                         "after the next block")})},
        "/v1/events": {"get": _op(
            "events", "WebSocket (send the upgrade headers): committed blocks and loan "
            "events (instalment_due, late, defaulted, ...), one JSON object each.",
            [_query("types", {"type": "string", "pattern": "^(block|loan)(,(block|loan))*$",
                              "default": "block,loan"}, "the kinds of event")],
            {"101": {"description": "switching to the WebSocket stream"}},
            {"400": _err("bad types, or not a WebSocket upgrade", "bad-request"),
             "503": _err(f"the node already streams to {MAX_READERS} readers, or to "
                         f"{MAX_READERS_PER_CLIENT} from this client", "busy")})},
        "/metrics": {"get": _op(
            "metrics", "Prometheus text format.", errors={},
            ok={"200": {"description": "metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}})},
        "/openapi.json": {"get": _op(
            "openapi", "This description.", errors={},
            ok={"200": _json("OpenAPI 3.0", _obj(["openapi"], openapi={"type": "string"}))})},
    },
}
