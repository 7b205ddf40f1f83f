"""The explorer's HTML: a page frame and a few helpers, every value escaped.

Nothing here reads the ledger: node/daemon/explorer.py gathers the data and builds pages
from these pieces. The one rule: text from the chain (asset names, purposes, error
messages, anything a transaction carried) only ever enters a page through `esc` or `h`,
which escape it; markup the explorer writes itself is a `Safe` string and passes as is.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from urllib.parse import quote


class Safe(str):
    """Markup the explorer wrote itself: inserted as is. Adding text to it escapes the
    text (so `Safe + str` stays safe rather than turning back into a plain str).
    (`str + Safe` is a plain str: wrap the explorer's own concatenations in Safe().)"""

    def __add__(self, other) -> Safe:
        return Safe(str.__add__(self, esc(other)))


def esc(v) -> Safe:
    """Any value as HTML text: escaped, unless it is already Safe markup."""
    if isinstance(v, Safe):
        return v
    return Safe(html.escape("-" if v is None else str(v), quote=True))


def h(template: str, *args) -> Safe:
    """`template` (the explorer's own markup, with {} slots) with each argument escaped."""
    return Safe(template.format(*(esc(a) for a in args)))


def join(parts) -> Safe:
    return Safe("".join(esc(p) for p in parts))


def seg(v: str) -> str:
    """A value as one URL path segment."""
    return quote(str(v), safe="")


def link(href: str, text) -> Safe:
    return h('<a href="{}">{}</a>', href, text)


def short(v: str | None, n: int = 12) -> str:
    if not v:
        return "-"
    return v if len(v) <= n + 2 else v[:n] + "…"


def money(minor) -> str:
    """Minor units as LND with two decimals: 123456 -> '1,234.56'."""
    if minor is None:
        return "-"
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def pct(bps) -> str:
    if bps is None:
        return "-"
    sign = "-" if bps < 0 else ""
    return f"{sign}{abs(bps) // 100}.{abs(bps) % 100:02d}%"


def when(ts) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(headers, rows, empty: str = "none") -> Safe:
    """A table of cells (each escaped unless Safe)."""
    rows = list(rows)
    if not rows:
        return h('<p class="empty">{}</p>', empty)
    head = join(h("<th>{}</th>", c) for c in headers)
    body = join(Safe("<tr>" + join(h("<td>{}</td>", c) for c in r) + "</tr>") for r in rows)
    return Safe(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def fields(pairs) -> Safe:
    """A definition list of (name, value) pairs."""
    return Safe("<dl>" + join(h("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in pairs) + "</dl>")


def section(title: str, body) -> Safe:
    return h("<section><h2>{}</h2>{}</section>", title, body)


def code(v) -> Safe:
    """A JSON-able value, pretty-printed and escaped."""
    return h("<pre>{}</pre>", json.dumps(v, indent=2, sort_keys=True, default=str))


NAV = (("/", "Blocks"), ("/offers", "Offers"), ("/applications", "Applications"),
       ("/loans", "Loans"), ("/validators", "Validators"), ("/portfolio", "Portfolio"),
       ("/live", "Live"))

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#17324d;color:#fff;padding:.6em 1.2em;display:flex;flex-wrap:wrap;
gap:1em;align-items:center}
header a{color:#fff;text-decoration:none;margin-right:.8em}
header b{margin-right:1.2em}
header form{margin-left:auto}
header input{width:26em;padding:.3em}
main{padding:1em 1.2em;max-width:1200px}
h1{font-size:1.3em;word-break:break-all}h2{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;background:#fff;font-size:.9em}
td,th{border:1px solid #d5d9e0;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;background:#fff;
padding:.6em;border:1px solid #d5d9e0}
dt{font-weight:600}dd{margin:0;word-break:break-all}
pre{background:#fff;border:1px solid #d5d9e0;padding:.6em;overflow:auto;font-size:.85em}
.empty{color:#777}.bad{color:#b00020}.ok{color:#18794e}
#feed li{font-family:monospace;font-size:.85em}
"""


def page(title: str, body, chain: str, height: int, status: int = 200) -> Safe:
    nav = join(link(href, name) for href, name in NAV)
    return h('<!doctype html><html lang="en"><head><meta charset="utf-8">'
             '<meta name="viewport" content="width=device-width,initial-scale=1">'
             '<title>{} · lendnet explorer</title><link rel="icon" href="/favicon.svg">'
             '<style>{}</style></head><body>'
             '<header><b>lendnet · {} · height {}</b><nav>{}</nav>'
             '<form action="/search" method="get" role="search">'
             '<input type="search" name="q" '
             'placeholder="address, tx hash, loan, offer or block height" '
             'aria-label="search"> <button>Search</button></form></header>'
             '<main><h1>{}</h1>{}</main></body></html>',
             title, Safe(STYLE), chain, height, nav, title, body)


# The live feed: a few lines of plain JS reading the node's event stream. It builds
# DOM nodes with textContent, never innerHTML, so an event's text cannot become markup.
LIVE_JS = """
(function () {
  var feed = document.getElementById("feed");
  var state = document.getElementById("feed-state");
  var proto = location.protocol === "https:" ? "wss://" : "ws://";
  var ws = new WebSocket(proto + location.host + "/v1/events");
  ws.onopen = function () { state.textContent = "connected"; };
  ws.onclose = function () { state.textContent = "disconnected"; };
  ws.onmessage = function (m) {
    var e = JSON.parse(m.data);
    var li = document.createElement("li");
    var a = document.createElement("a");
    if (e.type === "block") {
      li.className = "block";
      a.href = "/block/" + encodeURIComponent(e.height);
      a.textContent = "block " + e.height;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" " + e.txs + " txs, hash " +
        String(e.hash).slice(0, 16) + "…"));
    } else {
      li.className = "loan";
      a.href = "/loan/" + encodeURIComponent(e.loan);
      a.textContent = "loan " + String(e.loan).slice(0, 14) + "…";
      li.appendChild(document.createTextNode(e.event + " "));
      li.appendChild(a);
      li.appendChild(document.createTextNode(" at height " + e.height + " " +
        JSON.stringify(e.values)));
    }
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 200) { feed.removeChild(feed.lastChild); }
  };
})();
"""


FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<rect width="16" height="16" rx="3" fill="#17324d"/>'
           '<text x="8" y="12" font-size="10" text-anchor="middle" fill="#fff">L</text></svg>')
