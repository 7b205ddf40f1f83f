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
from lendnet.ledger import codec, keys, lending, portfolio
from lendnet.ledger.settlement import SALE_STATUSES
from lendnet.ledger import tx as txm

from . import explorer
from .blobs import BLOB_MAX, BlobError
from .ratelimit import RateLimiter

MAX_BODY = (1 << 20) + 1024                   # a blob of 1 MiB
MAX_TX_BODY = 2 * txm.MAX_TX_BYTES + 1024     # hex doubles the transaction's bytes
TXS_MAX = 2_000                               # transactions in one POST /v1/txs
HEX64 = re.compile(r"^[0-9a-f]{64}$")
STREAM_QUEUE = 1_000
MAX_READERS = 256                             # event streams open at once, in all
MAX_READERS_PER_CLIENT = 8                    # and from one client address (not exempt)


# The code of an error the API answers itself (a transaction's refusal carries its own,
# txm.CODES), and the HTTP status of each transaction refusal code.
HTTP_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
              413: "too-large", 429: "rate-limited", 503: "busy", 507: "no-space"}
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


def _rate_limit(cfg, limiter: RateLimiter, refused):
    """Each client address gets cfg.api_rate requests a second (bursts of cfg.api_burst);
    past that, a 429 that says when to come back. The peer link (/p2p) has limits of its
    own (the transport's)."""
    exempt = frozenset(cfg.api_exempt)

    @web.middleware
    async def middleware(request: web.Request, handler):
        who = request.remote or ""
        if request.path != "/p2p" and who not in exempt:
            wait = limiter.wait(who)
            if wait:
                refused.inc()
                answer = _error(429, f"more than {cfg.api_rate} requests a second from "
                                     f"{who}; retry in {wait} s")
                answer.headers["Retry-After"] = str(wait)
                return answer
        return await handler(request)
    return middleware


def build_app(daemon) -> web.Application:
    node = daemon.node
    limit = _rate_limit(daemon.cfg, RateLimiter(daemon.cfg.api_rate, daemon.cfg.api_burst),
                        daemon.metrics.rate_limited)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[limit, _json_errors])
    r = app.router

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
        try:
            raw = bytes.fromhex(tx_hex)
        except ValueError:
            return 400, {"error": "tx must be hex", "code": "malformed"}
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
        results = []
        for tx_hex in txs:
            status, answer = submit_hex(tx_hex)
            results.append({"http": status, **answer})    # as POST /v1/tx would answer
        return web.json_response({"accepted": sum(r["http"] == 202 for r in results),
                                  "results": results})

    async def get_tx(request: web.Request):
        h = request.match_info["hash"]
        if not HEX64.match(h):
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
        if h in daemon.rejected:
            why, code = daemon.rejected[h]
            return web.json_response({"hash": h, "status": "rejected", "error": why,
                                      "code": code})
        return _error(404, f"transaction {h} is not known to this node")

    async def get_block(request: web.Request):
        try:
            h = int(request.match_info["height"])
        except ValueError:
            return _error(400, "height must be an integer")
        got = node.store.get_block(h) if 1 <= h <= node.height else None
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
            if not (HEX64.match(key) or keys.is_address(key)):
                return _error(400, f"a {what} id is 64 hex digits or an address")
            if what == "loan":
                got = lending.loan_view(node.ledger, key)
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
            start = int(request.match_info["from_h"])
            count = int(request.query.get("count", "64"))
        except ValueError:
            return _error(400, "from height and count must be integers")
        if start < 1 or not 1 <= count <= 256:
            return _error(400, "from height must be >= 1 and count 1 to 256")
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
                limit = int(q.get("limit", "100"))
            except ValueError:
                return _error(400, "limit must be an integer")
            if not 1 <= limit <= LIST_MAX:
                return _error(400, f"limit must be 1 to {LIST_MAX}")
            after = q.get("after")
            if after is not None and not (HEX64.match(after) or keys.is_address(after)):
                return _error(400, f"after: a {what} id is 64 hex digits or an address")
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
                    "offer": lambda key, rec: lending.offer_view(rec, node.ledger.time)}.get(
                        what, lambda key, rec: rec)
            out = [{what: key, **jsonable(view(key, rec))} for key, rec in rows]
            return web.json_response({"height": node.height, what + "s": out,
                                      "next": cursor})
        return handler

    async def get_asset(request: web.Request):
        name = request.match_info["id"]
        got = node.ledger.state.assets.get(name) if len(name) <= txm.ASSET_ID_MAX else None
        if got is None:
            return _error(404, f"no asset {name!r}")
        return web.json_response({"asset": name, **jsonable(got)})

    async def get_quote(request: web.Request):
        """What an application would get from an offer if funded now (lending.quote)."""
        q = request.query
        if set(q) != {"application", "offer"} or not all(HEX64.match(q[k]) for k in q):
            return _error(400, "give ?application=ID&offer=ID (64 hex digits each)")
        try:
            got = lending.quote(node.ledger, q["application"], q["offer"])
        except KeyError as e:
            return _error(404, str(e.args[0]))
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
        if not HEX64.match(h):
            return _error(400, "a blob hash is 64 lowercase hex digits")
        data = daemon.blobs.get(h)
        if data is None:
            return _error(404, f"no blob {h} on this node")
        return web.Response(body=data, content_type="application/octet-stream")

    async def get_status(request: web.Request):
        return web.json_response(daemon.status())

    books: dict = {}            # lender (or None: the network) -> (height, summary)

    async def get_portfolio(request: web.Request):
        """The loan book of one lender (?lender=ADDR) or of the whole network: PAR30,
        PAR90, buckets, net yield (ledger/portfolio.py). A walk over every loan, so each
        book is computed at most once a block."""
        unknown = set(request.query) - {"lender"}
        if unknown:
            return _error(400, f"unknown parameters {sorted(unknown)}; use lender")
        who = request.query.get("lender")
        if who is not None and not keys.is_address(who):
            return _error(400, "lender: an address is 'ln' and 40 lowercase hex digits")
        led = node.ledger
        cached = books.get(who)
        if cached is None or cached[0] != node.height:
            if len(books) >= 1024:
                books.clear()
            views = [lending.loan_view(led, loan) for loan, rec in led.state.loans.rows.items()
                     if who is None or rec["lender"] == who]
            cached = books[who] = (node.height, portfolio.summary(views))
        return web.json_response({"height": cached[0], "lender": who, **cached[1]})

    async def get_supply(request: web.Request):
        led = node.ledger
        return web.json_response({"height": node.height, "total": led.total_money(),
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
        await ws.prepare(request)
        q: asyncio.Queue = asyncio.Queue(STREAM_QUEUE)
        q.types = types
        q.who = who
        daemon.subscribers.add(q)
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
    r.add_get("/v1/status", get_status)
    r.add_get("/v1/supply", get_supply)
    r.add_get("/v1/portfolio", get_portfolio)
    r.add_get("/v1/sales", _listing("sales", "sale", {"loan": _addr, "status": _sale_status}))
    r.add_get("/v1/sales/{id}", _record("sales", "sale"))
    r.add_get("/v1/events", events)
    r.add_get("/metrics", get_metrics)
    r.add_get("/openapi.json", openapi)
    explorer.routes(app, daemon)               # the web explorer at / (explorer.py)
    return app


def _op(summary: str, params=(), body=None, responses=None) -> dict:
    op = {"summary": summary,
          "parameters": [{"name": n, "in": "path", "required": True,
                          "schema": {"type": "string"}, "description": d} for n, d in params],
          "responses": responses or {"200": {"description": "OK (JSON)"},
                                     "400": {"description": "bad input: {error}"},
                                     "404": {"description": "not found: {error}"}}}
    if body:
        op["requestBody"] = body
    return op


_ID = ("id", "64 hex digits")
_ADDR = ("address", "ln + 40 hex digits")
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "lendnet node API", "version": "1",
             "description": "Submit signed transactions and read the committed ledger."},
    "paths": {
        "/v1/tx": {"post": _op(
            "Submit a signed transaction (canonical msgpack, hex).",
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["tx"],
                "properties": {"tx": {"type": "string", "description": "hex"}}}}}},
            responses={"202": {"description": "accepted: {hash, status: pending}"},
                       "400": {"description": "malformed or invalid: {error}"},
                       "413": {"description": "body too large"},
                       "422": {"description": "nonce used or duplicate: {error}"}})},
        "/v1/txs": {"post": _op(
            f"Submit up to {TXS_MAX} signed transactions at once (body at most 1 MiB); "
            "each is admitted or refused on its own, in order.",
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["txs"],
                "properties": {"txs": {"type": "array", "maxItems": TXS_MAX,
                                       "items": {"type": "string", "description": "hex"}}}}}}},
            responses={"200": {"description": "{accepted, results: [{code, hash, status} "
                                              "| {code, error}]}, one per transaction"},
                       "400": {"description": "malformed body: {error}"},
                       "413": {"description": "body too large"}})},
        "/v1/tx/{hash}": {"get": _op("Status: pending, committed (height, index), failed "
                                     "(included, error) or rejected (why).",
                                     [("hash", "64 hex digits")])},
        "/v1/blocks/{height}": {"get": _op("A committed block: header, tx hashes, their "
                                           "bytes, state root, certificate signers.",
                                           [("height", "integer")])},
        "/v1/accounts/{address}": {"get": _op("Balance and next nonce.", [_ADDR])},
        "/v1/scores/{address}": {"get": _op("Credit score with identity status, components, "
                                            "reasons and the history behind it.",
                                            [_ADDR])},
        "/v1/loans/{id}": {"get": _op("A loan: parties, terms, status, what is due.", [_ID])},
        "/v1/offers/{id}": {"get": _op("A lender's offer, with `apr`: the APR (fees "
                                       "included) of a representative loan per tier, "
                                       "and `apr_basis` saying what loan that is.", [_ID])},
        "/v1/quote": {"get": _op("?application=ID&offer=ID: the tier, exact schedule, "
                                 "total cost and APR of that application on that offer "
                                 "if funded now; whether it is within the application's "
                                 "limits (`problems`) and would pass accept_offer "
                                 "(`fits`: '' or why not).")},
        "/v1/lending": {"get": _op("The chain's lending parameters: max_rate_bps, "
                                   "appraisers, registrars.")},
        "/v1/applications/{id}": {"get": _op("A borrower's application.", [_ID])},
        "/v1/sync/{from_h}": {"get": _op("Up to `count` (<= 256) committed blocks with "
                                         "their commit certificates, msgpack.",
                                         [("from_h", "integer")])},
        "/v1/loans": {"get": _op("Loans, filtered by ?borrower= or ?lender=; paged: "
                                 "?after=<next>&limit=N (<= 1000).")},
        "/v1/offers": {"get": _op("Offers (each with its representative APR per tier), "
                                  "filtered by ?lender= and ?active=true|false; "
                                  "paged: ?after=<next>&limit=N.")},
        "/v1/applications": {"get": _op("Applications, by ?borrower= and "
                                        "?status=open|funded|withdrawn; paged: "
                                        "?after=<next>&limit=N.")},
        "/v1/borrowers/{id}": {"get": _op("A registered borrower: profile and documents "
                                          "hashes, since when.", [_ADDR])},
        "/v1/lenders/{id}": {"get": _op("A registered lender.", [_ADDR])},
        "/v1/assets/{id}": {"get": _op("A collateral asset: owner, declared and appraised "
                                       "value (and by whom), lien.",
                                       [("id", "<owner address>/<name>")])},
        "/v1/blobs": {"post": _op("Store an off-chain blob (e.g. sealed documents), "
                                  "up to 1 MiB, for an account of the chain: headers "
                                  "X-Lendnet-Signer (public key, hex) and "
                                  "X-Lendnet-Signature (hex, over 'lendnet-blob-v1|"
                                  "<chain>|' + sha256 of the bytes); each account may "
                                  "store 32 blobs, 8 MiB together. Returns its sha256.",
                                  responses={"201": {"description": "{hash}"},
                                             "400": {"description": "empty"},
                                             "401": {"description": "unsigned or a bad "
                                                                    "signature"},
                                             "403": {"description": "unknown account, or "
                                                                    "over its quota"},
                                             "413": {"description": "too large"},
                                             "507": {"description": "the node is full"}})},
        "/v1/blobs/{hash}": {"get": _op("A stored blob's bytes.", [("hash", "64 hex")])},
        "/v1/status": {"get": _op("Height, view, primary, peers, mempool size.")},
        "/v1/supply": {"get": _op("All balances and escrows summed, and the genesis "
                                  "supply: equal unless money was made or lost; fees: "
                                  "the fees collected (burned, counted in the total).")},
        "/v1/portfolio": {"get": _op("The loan book of ?lender=ADDR, or of the whole "
                                     "network: outstanding, loans by arrears bucket "
                                     "(current, 1-30, 31-60, 61-90, 90+ days past due), "
                                     "PAR1/PAR30/PAR90 and net yield in basis points.")},
        "/v1/sales": {"get": _op("Collateral sales of defaulted loans, by ?loan= and "
                                 "?status=open|sold|unsold|taken|cancelled; paged: "
                                 "?after=<next>&limit=N.")},
        "/v1/sales/{id}": {"get": _op("A collateral sale: asset, reserve, best bid, when "
                                      "it closes.", [_ID])},
        "/v1/events": {"get": _op("WebSocket: committed blocks and loan events "
                                  "(instalment_due, late, defaulted, ...), one JSON each; "
                                  "?types=block or ?types=loan for one kind.")},
        "/metrics": {"get": _op("Prometheus text format.")},
    },
}
