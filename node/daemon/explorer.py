"""The web explorer every node serves at `/`: server-rendered HTML over the node's own
committed state (blocks, transactions, accounts, loans, offers, applications, validators,
the loan book) and a live feed from its event stream.

Every page is bounded work: one block, one record, or a page of a listing walked from a
cursor (the same index walk as the JSON listings, at most LIST_SCAN records looked at);
the portfolio page is the one walk over every loan, computed at most once a block as
/v1/portfolio is. Every path parameter is checked by pattern before it is used, and every
value rendered goes through explorer_html's escaping.

Loan events (instalment posted, paid, late, defaulted, ...) are not stored by the ledger:
the explorer keeps the most recent EVENTS_KEPT of them, as the node commits them, in an
in-memory log (a reader of the node's event stream, like any /v1/events client). Events
from before this node started are not shown; the pages say so.
"""
from __future__ import annotations

import collections
import json
import re

from aiohttp import web
from lendnet.consensus import messages as M
from lendnet.contracts.agreements import METHOD_CODES, PERIOD_NAMES, schedule
from lendnet.ledger import keys, lending, portfolio
from lendnet.ledger import tx as txm
from lendnet.node.core import pruning

from . import explorer_html as X
from .explorer_html import Safe, h, link, money, pct, seg, short, when

HEX64 = re.compile(r"^[0-9a-f]{64}$")
PAGE = 50                        # rows on a page of a listing
LIST_SCAN = 10_000               # records one listing page looks at (as the JSON API)
RECENT_BLOCKS = 20               # blocks on the front page
SEEN_WINDOW = 64                 # blocks the validators page reads for "last seen"
EVENTS_KEPT = 20_000             # loan events the explorer remembers
EVENTS_PER_KEY = 200             # of them, per loan and per transaction
METHOD_NAMES = {v: k for k, v in METHOD_CODES.items()}


class EventLog:
    """The recent loan events, by loan and by transaction. It reads the node's event
    stream in-process: the daemon puts each event here as it would on a /v1/events
    reader's queue (`types`, `who`, `full`, `put_nowait` are that queue's interface)."""

    types = frozenset({"loan"})
    who = "explorer"

    def __init__(self) -> None:
        self.events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)
        self.by_loan: dict[str, collections.deque] = {}
        self.by_tx: dict[str, collections.deque] = {}
        self.since: int | None = None        # the first height this log saw

    def full(self) -> bool:
        return False

    def put_nowait(self, event: dict) -> None:
        if len(self.events) == self.events.maxlen:
            self._forget(self.events[0])
        self.events.append(event)
        if self.since is None:
            self.since = event["height"]
        for index, key in ((self.by_loan, event["loan"]), (self.by_tx, event["tx"])):
            if key:
                index.setdefault(key, collections.deque(maxlen=EVENTS_PER_KEY)).append(event)

    def _forget(self, old: dict) -> None:
        for index, key in ((self.by_loan, old["loan"]), (self.by_tx, old["tx"])):
            q = index.get(key)
            if q and q[0] is old:
                q.popleft()
                if not q:
                    del index[key]


def routes(app: web.Application, daemon, books: portfolio.Books) -> None:
    """Add the explorer's pages to the node's app (node/daemon/api.py calls this)."""
    node = daemon.node
    log = EventLog()
    daemon.subscribers.add(log)
    app.on_startup.append(lambda _app: _resubscribe(daemon, log))

    def render(title: str, body, status: int = 200) -> web.Response:
        text = X.page(title, body, daemon.genesis.chain_id, node.height)
        return web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8", headers=HEADERS)

    def missing(what: str) -> web.Response:
        return render("Not found", h("<p>{}</p>", what), 404)

    def bad(what: str) -> web.Response:
        return render("Bad request", h("<p>{}</p>", what), 400)

    def events_table(events, none: str) -> Safe:
        return X.table(["height", "time", "event", "loan", "values", "transaction"],
                       [[link(f"/block/{e['height']}", e["height"]), when(e["time"]),
                         e["event"], link(f"/loan/{seg(e['loan'])}", short(e["loan"])),
                         json.dumps(e["values"]) if e["values"] else "",
                         link(f"/tx/{e['tx']}", short(e["tx"])) if e["tx"] else "the chain"]
                        for e in events], none)

    def events_note() -> str:
        return (f"Events this node has seen since height {log.since} (it keeps the last "
                f"{EVENTS_KEPT:,})." if log.since else
                "No loan event since this node started.")

    # --- blocks ------------------------------------------------------------------------

    def cert_of(cert) -> tuple:
        return (cert[0]["body"]["v"] if cert else None,
                sorted(m["body"]["r"] for m in cert))

    async def index(request: web.Request):
        st = daemon.status()
        rows = []
        for height in range(node.height, max(0, node.height - RECENT_BLOCKS), -1):
            got = node.store.get_block(height)
            if got is None:
                continue
            block, cert, _ = got
            view, signers = cert_of(cert)
            hd = block["header"]
            rows.append([link(f"/block/{height}", height), when(hd["time"]),
                         link(f"/validators#v{hd['proposer']}", f"validator {hd['proposer']}"),
                         len(block["txs"]), short(M.block_hash(hd).hex(), 16),
                         f"view {view}: {len(signers)} signers {signers}"])
        body = join_([
            X.fields([("chain", st["chain_id"]), ("height", st["height"]),
                      ("view", st["view"]), ("primary", st["primary"]),
                      ("validators", st["validators"]), ("mempool", st["mempool"]),
                      ("this node", f"validator {st['validator']}"
                       if st["validator"] is not None else "full node")]),
            X.section("Latest blocks", X.table(
                ["height", "time", "proposer", "txs", "hash", "commit certificate"], rows,
                "no block yet"))])
        return render("The network", body)

    async def block_page(request: web.Request):
        raw = request.match_info["height"]
        if not raw.isdigit() or len(raw) > 18:
            return bad("a block height is a positive integer")
        height = int(raw)
        if 1 <= height <= node.store.base:
            return render("Pruned", h("<p>{}</p>", pruning.pruned_error(
                height, node.store.base + 1)["error"]), 410)
        got = node.store.get_block(height) if 1 <= height <= node.height else None
        if got is None:
            return missing(f"no block at height {height} (height is {node.height})")
        block, cert, root = got
        hd = block["header"]
        view, signers = cert_of(cert)
        txs = []
        for raw_tx in block["txs"]:
            t = node.parse(raw_tx)
            where = node.store.tx_location(t.id) or {}
            txs.append([link(f"/tx/{t.id}", short(t.id, 16)), t.kind,
                        link(f"/account/{t.sender}", short(t.sender, 16)), t.nonce,
                        tx_status(t.id, where), where.get("fee"), where.get("error") or ""])
        nav = [link(f"/block/{height - 1}", "« previous")] if height > 1 else []
        if height < node.height:
            nav.append(link(f"/block/{height + 1}", "next »"))
        body = join_([
            Safe("<p>" + " ".join(nav) + "</p>"),
            X.fields([("hash", M.block_hash(hd).hex()), ("time", when(hd["time"])),
                      ("proposer", link(f"/validators#v{hd['proposer']}",
                                        f"validator {hd['proposer']}")),
                      ("previous", hd["prev"].hex()), ("transactions root",
                                                       hd["txs_root"].hex()),
                      ("state root after it", root.hex()),
                      ("executed up to", f"height {hd['exec_height']}, root "
                                         f"{hd['exec_root'].hex()}"),
                      ("bytes of transactions", M.txs_bytes(block["txs"])),
                      ("commit certificate", f"view {view}, signed by validators "
                                             f"{', '.join(map(str, signers))}")]),
            X.section(f"Transactions ({len(txs)})", X.table(
                ["hash", "kind", "sender", "nonce", "status", "fee", "error"], txs,
                "an empty block"))])
        return render(f"Block {height}", body)

    # --- transactions --------------------------------------------------------------------

    def tx_status(tx_id: str, where: dict) -> str:
        if not where:
            return "pending" if bytes.fromhex(tx_id) in node.mempool else "unknown"
        if not where["nonce_used"] and bytes.fromhex(tx_id) in node.mempool:
            return "pending"
        return ("committed" if where["ok"] else "failed" if where["nonce_used"]
                else "rejected")

    async def tx_page(request: web.Request):
        tx_id = request.match_info["hash"]
        if not HEX64.match(tx_id):
            return bad("a transaction hash is 64 lowercase hex digits")
        where = node.store.tx_location(tx_id)
        parsed = None
        if where is not None:
            got = node.store.get_block(where["height"])
            if got is not None and where["index"] < len(got[0]["txs"]):
                parsed = node.parse(got[0]["txs"][where["index"]])
        status = tx_status(tx_id, where or {})
        info = [("status", Safe(h('<span class="{}">{}</span>',
                                  "ok" if status == "committed" else "bad", status)))]
        if where is not None:
            info += [("block", link(f"/block/{where['height']}", where["height"])),
                     ("index in block", where["index"]), ("gas", where["gas"]),
                     ("fee", money(where["fee"]))]
            if where.get("error"):
                info.append(("why it failed" if where["nonce_used"] else "why not included",
                             where["error"]))
        elif tx_id in daemon.rejected or tx_id in node.mempool.dropped:
            why, code = daemon.rejected.get(tx_id) or node.mempool.dropped[tx_id]
            info = [("status", "rejected"), ("why", why), ("code", code)]
        elif status == "unknown":
            return missing(f"transaction {tx_id} is not known to this node")
        body = [X.fields(info)]
        if parsed is not None:
            b = parsed.body
            body.append(X.section("Transaction", X.fields(
                [("kind", b["kind"]), ("sender", link(f"/account/{b['from']}", b["from"])),
                 ("nonce", b["nonce"]), ("chain", b.get("chain")),
                 ("signers", len(parsed.sigs))])))
            body.append(X.section("Fields", X.code(jsonable_(
                {k: v for k, v in b.items() if k not in ("kind", "from", "nonce",
                                                         "chain")}))))
        body.append(X.section("Events", events_table(
            list(log.by_tx.get(tx_id, ())), "no loan event from this transaction "
            "(" + events_note() + ")")))
        return render(f"Transaction {tx_id}", join_(body))

    # --- accounts ------------------------------------------------------------------------

    def listing(table: str, want: dict, after: str | None, limit: int = PAGE):
        return node.ledger.state.tables[table].page(
            after, limit, lambda rec: all(rec.get(f) == v for f, v in want.items()),
            LIST_SCAN)

    def loans_table(rows) -> Safe:
        out = []
        for key, _rec in rows:
            v = lending.loan_view(node.ledger, key)
            out.append([link(f"/loan/{seg(key)}", short(key, 16)),
                        link(f"/account/{v['borrower']}", short(v["borrower"])),
                        link(f"/account/{v['lender']}", short(v["lender"])),
                        v["status"], money(v["principal"]),
                        money(v["principal_outstanding"]), money(v["arrears"]),
                        v["days_past_due"], v["bucket"]])
        return X.table(["loan", "borrower", "lender", "status", "principal", "outstanding",
                        "arrears", "days past due", "bucket"], out, "no loans")

    async def account_page(request: web.Request):
        addr = request.match_info["address"]
        if not keys.is_address(addr):
            return bad("an address is 'ln' and 40 lowercase hex digits")
        if addr in node.ledger.state.loans:
            raise web.HTTPFound(f"/loan/{addr}")
        st = node.ledger.state
        balance, nonce = node.ledger.account(addr)
        roles = [r for r, t in (("borrower", st.borrowers), ("lender", st.lenders))
                 if addr in t]
        body = [X.fields([("balance", money(balance) + " LND"), ("next nonce", nonce),
                          ("registered as", ", ".join(roles) or "neither borrower nor "
                                                                 "lender")])]
        sc = lending.credit_score(node.ledger, addr)
        body.append(X.section("Credit score", join_([
            X.fields([("score", f"{sc['score']} (range {sc['range'][0]}-{sc['range'][1]}, "
                                f"base {sc['base']})"),
                      ("identity", sc["identity"]["status"]),
                      ("reasons (what costs points, worst first)",
                       ", ".join(sc["reasons"]) or "none")]),
            X.table(["component", "points"], sorted(sc["components"].items())),
            X.table(["history", "value"], sorted(sc["history"].items()))])))
        for title, table, want in (("Loans as borrower", "loans", {"borrower": addr}),
                                   ("Loans as lender", "loans", {"lender": addr})):
            rows, more = listing(table, want, None)
            body.append(X.section(title, join_([
                loans_table(rows), more_link(f"/loans?{title.split()[-1]}={addr}", more)])))
        rows, more = listing("applications", {"borrower": addr}, None)
        body.append(X.section("Applications", apps_table(rows)))
        rows, more = listing("offers", {"lender": addr}, None)
        body.append(X.section("Offers", offers_table(rows)))
        return render(f"Account {addr}", join_(body))

    def more_link(base: str, cursor) -> Safe:
        if cursor is None:
            return Safe("")
        sep = "&" if "?" in base else "?"
        return h('<p><a href="{}">more »</a></p>', f"{base}{sep}after={cursor}")

    # --- loans ---------------------------------------------------------------------------

    async def loans_page(request: web.Request):
        q = request.query
        want = {}
        for f in ("borrower", "lender"):
            if f in q:
                if not keys.is_address(q[f]):
                    return bad(f"{f}: an address is 'ln' and 40 lowercase hex digits")
                want[f] = q[f]
        after = q.get("after")
        if after is not None and not keys.is_address(after):
            return bad("after: a loan id is an address")
        rows, more = listing("loans", want, after)
        base = "/loans" + ("?" + "&".join(f"{k}={v}" for k, v in want.items()) if want
                           else "")
        return render("Loans", join_([loans_table(rows), more_link(base, more)]))

    async def loan_page(request: web.Request):
        loan = request.match_info["id"]
        if not keys.is_address(loan):
            return bad("a loan id is an address: 'ln' and 40 lowercase hex digits")
        v = lending.loan_view(node.ledger, loan)
        if v is None:
            return missing(f"no loan {loan}")
        t = v["terms"]
        rows = schedule(t["P"], t["a"], t["n"], PERIOD_NAMES[t["per"]],
                        METHOD_NAMES[t["m"]], t["g"], t["t0"]) if t["P"] else []
        events = list(log.by_loan.get(loan, ()))
        paid_at = {}
        for e in events:
            if e["event"] == "instalment_paid":
                paid_at[e["values"][0]] = e
        owing = {r["n"]: r for r in v["instalments"]}
        sched = []
        for r in rows:
            n = r["n"]
            if n in owing:
                o = owing[n]
                state = "past due" if o["due"] <= node.ledger.time else "posted"
                left = money(o["owed"])
            elif v["oldest_unpaid"] and n < v["oldest_unpaid"] or v["status"] == "repaid":
                state, left = "paid", money(0)
            elif v["status"] == "active":
                state, left = "not yet posted", "-"
            elif n <= (v["instalment"] or 0):       # posted, then the loan defaulted
                state, left = f"in the claim (loan {v['status'].replace('_', ' ')})", "-"
            else:
                state, left = f"never posted (loan {v['status']})", "-"
            e = paid_at.get(n)
            paid = (h('{} at <a href="/block/{}">height {}</a>{}', when(e["time"]),
                      e["height"], e["height"], "" if e["values"][1] else " (late)")
                    if e else "")
            sched.append([n, when(r["due"]), money(r["principal"]), money(r["interest"]),
                          money(r["total"]), state, left, paid])
        sales, _ = listing("sales", {"loan": loan}, None)
        body = join_([
            X.fields([
                ("status", v["status"]),
                ("borrower", link(f"/account/{v['borrower']}", v["borrower"])),
                ("lender", link(f"/account/{v['lender']}", v["lender"])),
                ("application", link(f"/application/{v['application']}", v["application"])),
                ("offer", link(f"/offer/{v['offer']}", v["offer"])),
                ("created", when(v["created"])),
                ("principal", money(v["principal"])),
                ("rate", pct(t["a"]) + " a year"),
                ("term", f"{t['n']} {PERIOD_NAMES.get(t['per'], t['per'])} instalments, "
                         f"{METHOD_NAMES.get(t['m'], t['m'])}, grace {t['g']}"),
                ("origination fee", money(v.get("origination_fee"))),
                ("instalment now", v["instalment"]),
                ("next due", f"{when(v['next_due']['due'])}: "
                             f"{money(v['next_due']['amount'])}" if v["next_due"] else "-"),
                ("amount due now", money(v["amount_due"])),
                ("arrears", money(v["arrears"])), ("penalty", money(v["penalty"])),
                ("days past due", v["days_past_due"]), ("bucket", v["bucket"]),
                ("principal outstanding", money(v["principal_outstanding"])),
                ("paid so far", money(t["paid"])), ("payoff", money(v["payoff"]))]),
            X.section("Schedule", Safe('<div id="schedule">') + X.table(
                ["#", "due", "principal", "interest", "total", "state", "still owed",
                 "paid"], sched, "no schedule") + Safe("</div>")),
            X.section("Collateral", X.table(
                ["asset", "counted value", "source"],
                # pledged savings are cash in a savings account, not an asset with a page
                [[c["asset"] if c["source"] == "savings" else
                  link(f"/asset/{seg(c['asset'])}", c["asset"]), money(c["value"]),
                  c["source"]] for c in v.get("cover") or []], "no collateral")),
            X.section("Collateral sales", X.table(
                ["sale", "asset", "value", "reserve", "best bid", "bidder", "closes",
                 "status"],
                [[short(k, 16), link(f"/asset/{seg(s['asset'])}", s["asset"]),
                  money(s["value"]), money(s["reserve"]), money(s["best"]),
                  link(f"/account/{s['bidder']}", short(s["bidder"])) if s["bidder"]
                  else "-", when(s["closes"]), s["status"]] for k, s in sales], "none")),
            X.section("Guarantees", X.table(
                ["guarantee", "guarantor", "amount", "status", "drawn", "refunded"],
                [[short(g["guarantee"], 16), link(f"/account/{g['guarantor']}",
                                                  short(g["guarantor"])),
                  money(g["amount"]), g["status"], money(g["drawn"]), money(g["refunded"])]
                 for g in v.get("guarantees") or []], "none")),
            X.section("Events", join_([h("<p>{}</p>", events_note()),
                                       events_table(events, "none seen")]))])
        return render(f"Loan {loan}", body)

    async def asset_page(request: web.Request):
        name = request.match_info["id"]
        got = (node.ledger.state.assets.get(name) if len(name) <= txm.ASSET_ID_MAX
               else None)
        if got is None:
            return missing(f"no asset {name}")
        rows = [(k, link(f"/loan/{seg(v)}", v) if k in ("lien",) and v else
                 link(f"/account/{v}", v) if k == "owner" else
                 money(v) if k in ("value", "appraised") and isinstance(v, int) else
                 jsonable_(v)) for k, v in sorted(got.items())]
        return render(f"Asset {name}", X.fields(rows))

    # --- offers and applications ---------------------------------------------------------

    def offers_table(rows) -> Safe:
        return X.table(
            ["offer", "lender", "available", "tiers (score: rate, most)", "periods",
             "terms", "active"],
            [[link(f"/offer/{k}", short(k, 16)),
              link(f"/account/{o['lender']}", short(o["lender"])), money(o["available"]),
              "; ".join(f"{a}+: {pct(b)} up to {money(c)}" for a, b, c in o["tiers"]),
              ", ".join(o.get("periods", [])), f"{o.get('min_term')}-{o.get('max_term')}",
              o.get("active")] for k, o in rows], "no offers")

    def apps_table(rows) -> Safe:
        return X.table(
            ["application", "borrower", "amount", "term", "purpose", "status", "loan"],
            [[link(f"/application/{k}", short(k, 16)),
              link(f"/account/{a['borrower']}", short(a["borrower"])), money(a["amount"]),
              f"{a['term']} {a['period']}", a.get("purpose"), a["status"],
              link(f"/loan/{seg(a['loan'])}", short(a["loan"])) if a.get("loan") else "-"]
             for k, a in rows], "no applications")

    def paged(table: str, what: str, render_rows, filters: dict):
        async def handler(request: web.Request):
            q = request.query
            want = {}
            for f, parse in filters.items():
                if f in q:
                    try:
                        want[f] = parse(q[f])
                    except ValueError as e:
                        return bad(f"{f}: {e}")
            after = q.get("after")
            if after is not None and not HEX64.match(after):
                return bad(f"after: a {what} id is 64 hex digits")
            rows, more = listing(table, want, after)
            base = f"/{table}" + ("?" + "&".join(f"{k}={q[k]}" for k in want) if want
                                  else "")
            return render(table.capitalize(), join_([render_rows(rows),
                                                     more_link(base, more)]))
        return handler

    def addr_(v: str) -> str:
        if not keys.is_address(v):
            raise ValueError("an address is 'ln' and 40 lowercase hex digits")
        return v

    def bool_(v: str) -> bool:
        if v not in ("true", "false"):
            raise ValueError("must be true or false")
        return v == "true"

    def status_(v: str) -> str:
        if v not in ("open", "funded", "withdrawn"):
            raise ValueError("must be open, funded or withdrawn")
        return v

    async def offer_page(request: web.Request):
        k = request.match_info["id"]
        if not HEX64.match(k):
            return bad("an offer id is 64 hex digits")
        o = node.ledger.state.offers.get(k)
        if o is None:
            return missing(f"no offer {k}")
        view = lending.offer_view(o, node.ledger.time)
        body = join_([
            X.fields([("lender", link(f"/account/{o['lender']}", o["lender"])),
                      ("available", money(o["available"])), ("active", o.get("active")),
                      ("published by", link(f"/tx/{k}", k))]),
            X.section("Tiers", X.table(
                ["min score", "rate", "most", "representative APR"],
                [[a["min_score"], pct(a["rate_bps"]), money(a["principal"]),
                  pct(a["apr_bps"])] for a in view["apr"]])),
            h("<p>{}</p>", view["apr_basis"]),
            X.section("All terms", X.code(jsonable_(o)))])
        return render(f"Offer {k}", body)

    async def application_page(request: web.Request):
        k = request.match_info["id"]
        if not HEX64.match(k):
            return bad("an application id is 64 hex digits")
        a = node.ledger.state.applications.get(k)
        if a is None:
            return missing(f"no application {k}")
        body = join_([
            X.fields([("borrower", link(f"/account/{a['borrower']}", a["borrower"])),
                      ("amount", money(a["amount"])), ("purpose", a.get("purpose")),
                      ("term", f"{a['term']} {a['period']} ({a.get('method')})"),
                      ("status", a["status"]),
                      ("loan", link(f"/loan/{seg(a['loan'])}", a["loan"])
                       if a.get("loan") else "-"),
                      ("collateral", join_(link(f"/asset/{seg(c)}", c)
                                           for c in a.get("collateral", [])) or "none"),
                      ("submitted by", link(f"/tx/{k}", k))]),
            X.section("All fields", X.code(jsonable_(a)))])
        return render(f"Application {k}", body)

    # --- validators, portfolio, live -----------------------------------------------------

    seen_cache: dict = {}

    def last_seen() -> dict:
        """validator -> the last height (of the latest SEEN_WINDOW) it proposed or signed
        a commit certificate for."""
        if seen_cache.get("height") == node.height:
            return seen_cache["seen"]
        seen: dict[int, int] = {}
        for height in range(node.height, max(0, node.height - SEEN_WINDOW), -1):
            got = node.store.get_block(height)
            if got is None:
                continue
            block, cert, _ = got
            for r in [block["header"]["proposer"], *(m["body"]["r"] for m in cert)]:
                seen.setdefault(r, height)
        evidence: dict[int, list] = {}
        for key in node.store.load_records():
            if key[0] == "evidence":
                evidence.setdefault(key[2], []).append(key[1])
        seen_cache.update(height=node.height, seen=seen, evidence=evidence)
        return seen

    async def validators_page(request: web.Request):
        st = daemon.status()
        seen = last_seen()
        evidence = seen_cache["evidence"]
        linked = set(st["peers"])
        addr_of = {pk: hp for hp, pk in daemon.peers if pk is not None}
        rows = []
        for i, pk in enumerate(daemon.genesis.validators):
            where = addr_of.get(pk)
            me = i == st["validator"]
            rows.append([Safe(h('<span id="v{}">{}</span>', i, i)), pk.hex()[:16] + "…",
                         "this node" if me else (where or "-"),
                         "-" if me else ("linked" if where in linked else "not linked"),
                         "primary" if i == st["primary"] else "",
                         f"height {seen[i]}" if i in seen else
                         f"not in the last {SEEN_WINDOW} blocks",
                         ", ".join(evidence.get(i, [])) or "none"])
        body = join_([
            X.fields([("view", st["view"]), ("height", st["height"]),
                      ("primary", st["primary"]), ("view changes", st["view_changes"]),
                      ("evidence recorded", st["evidence"]),
                      ("banned peers", st["banned_peers"]),
                      ("refused proposals", X.code(st["refusals"] or {}))]),
            X.section("Validators", X.table(
                ["#", "public key", "address", "link", "role",
                 "last seen (proposed or signed a commit)", "evidence"], rows))])
        return render("Validators", body)

    async def portfolio_page(request: web.Request):
        height, s, defaulted = books.get(node.ledger)
        body = join_([
            X.fields([("loans", s["loans"]), ("lent", money(s["lent"])),
                      ("received", money(s["received"])),
                      ("outstanding", money(s["outstanding"])),
                      ("PAR1", pct(s["par1_bps"])), ("PAR30", pct(s["par30_bps"])),
                      ("PAR90", pct(s["par90_bps"])),
                      ("lost (defaulted or written off)", money(s["lost"])),
                      ("net yield", pct(s["net_yield_bps"]))]),
            X.section("By status", X.table(["status", "loans"], s["by_status"].items())),
            X.section("By days past due", X.table(
                ["bucket", "loans", "outstanding"],
                [[b, x["loans"], money(x["outstanding"])] for b, x in s["buckets"].items()])),
            X.section(f"Defaulted loans (the first {PAGE})", loans_table(
                [(k, None) for k in defaulted[:PAGE]]))])
        return render(f"Portfolio of the network at height {height}", body)

    async def live_page(request: web.Request):
        body = join_([
            Safe('<p>The node\'s event stream (<code>/v1/events</code>): blocks and loan '
                 'events as they are committed. <span id="feed-state">connecting</span></p>'
                 '<ul id="feed"></ul><script src="/explorer.js"></script>')])
        return render("Live feed", body)

    async def script(request: web.Request):
        return web.Response(text=X.LIVE_JS, content_type="application/javascript",
                            headers=HEADERS)

    async def favicon(request: web.Request):
        return web.Response(text=X.FAVICON, content_type="image/svg+xml", headers=HEADERS)

    async def search(request: web.Request):
        given = request.query.get("q", "").strip()
        q = given.lower()
        st = node.ledger.state
        if q.isdigit() and len(q) <= 18:
            raise web.HTTPFound(f"/block/{int(q)}")
        if keys.is_address(q):
            raise web.HTTPFound(f"/loan/{q}" if q in st.loans else f"/account/{q}")
        if HEX64.match(q):
            for table, path in (("offers", "offer"), ("applications", "application")):
                if q in st.tables[table]:
                    raise web.HTTPFound(f"/{path}/{q}")
            if (node.store.tx_location(q) is not None or q in daemon.rejected
                    or q in node.mempool.dropped or bytes.fromhex(q) in node.mempool):
                raise web.HTTPFound(f"/tx/{q}")
            for height in range(node.height, max(0, node.height - SEEN_WINDOW), -1):
                got = node.store.get_block(height)
                if got is not None and M.block_hash(got[0]["header"]).hex() == q:
                    raise web.HTTPFound(f"/block/{height}")
        if "/" in given and len(given) <= txm.ASSET_ID_MAX and given in st.assets:
            raise web.HTTPFound(f"/asset/{seg(given)}")
        return render("Search", h("<p>Nothing found for <code>{}</code>: search by address "
                                  "(account or loan), transaction, offer or application "
                                  "hash, block height, a recent block's hash, or an asset "
                                  "id (owner/name).</p>", given), 404)

    r = app.router
    r.add_get("/", index)
    r.add_get("/block/{height}", block_page)
    r.add_get("/tx/{hash}", tx_page)
    r.add_get("/account/{address}", account_page)
    r.add_get("/loans", loans_page)
    r.add_get("/loan/{id}", loan_page)
    r.add_get("/asset/{id:.+}", asset_page)
    r.add_get("/offers", paged("offers", "offer", offers_table,
                               {"lender": addr_, "active": bool_}))
    r.add_get("/offer/{id}", offer_page)
    r.add_get("/applications", paged("applications", "application", apps_table,
                                     {"borrower": addr_, "status": status_}))
    r.add_get("/application/{id}", application_page)
    r.add_get("/validators", validators_page)
    r.add_get("/portfolio", portfolio_page)
    r.add_get("/live", live_page)
    r.add_get("/explorer.js", script)
    r.add_get("/favicon.svg", favicon)
    r.add_get("/search", search)


# No inline script runs; the page's own script comes from this node only.
HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                      "img-src 'self'; connect-src 'self' ws: wss:",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


async def _resubscribe(daemon, log: EventLog) -> None:
    daemon.subscribers.add(log)          # (in case the set was replaced before start)


def join_(parts) -> Safe:
    return X.join(parts)


def jsonable_(v):
    from .api import jsonable
    return jsonable(v)
