"""`lendnet chaos run --attack ...`: attackers beside the honest lending clients.

Each attack is one process (multiprocessing spawn, as chaos's clients) running asyncio
until the run's end, and writes what it sent and what came back (counts by HTTP status
and refusal code) to a JSON file the report reads — every two seconds, so a process that
has to be killed still leaves its figures. What got into blocks is read afterwards from
the ledger: an attacker account's nonce counts its transactions included (succeeded or
failed), its balance what they cost it.

Every attacker speaks from a loopback address of its own that the nodes do not exempt
from the API's rate limit (an attacker is not on the node's machine): the flood from
127.0.0.2, the others from 127.0.0.1X. Every loop is bounded by the run's end and by a
count; the storage attack also by the bytes it tries to write (this is a shared machine).

The attacks (docs/SECURITY.md has the defence each meets):
  spam      300 zero-balance keys, each keeping 64 nonces of transfers in the mempools
  gas       a funded key calls a `loop: jmp loop` contract with the most gas a call gets
  wakes     a funded key deploys contracts whose wake-ups burn gas and re-arm every block,
            and thousands of tiny ones
  storage   a funded key calls a contract that writes 4 KiB rows until its gas runs out
  oversize  largest valid transactions (16 KiB of fresh code each), bodies and
            transactions over the limits, peer frames over MAX_FRAME
  flood     API reads (listings of 1,000, sync answers of 256 blocks, status)
  api       malformed and deeply nested bodies, bad paths and parameters, event-stream
            subscribers that never read
  peers     bad handshakes, links that never read, frames with bad signatures
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter

import aiohttp
from lendnet.consensus import messages as M
from lendnet.contracts.asm import assemble
from lendnet.ledger import codec, keys
from lendnet.ledger import tx as txm
from lendnet.ledger.fees import WAKE_GAS
from lendnet.node.daemon.transport import MAX_FRAME, HandshakeError, client_handshake

ATTACKS = ("spam", "gas", "wakes", "storage", "oversize", "flood", "api", "peers")
CHAIN = "lendnet-dev"
SPAM_KEYS = 300
WINDOW = 64                      # nonces in flight per key (the mempool's MAX_AHEAD)
POST_MAX = 1_500                 # transactions per POST /v1/txs (under its 1 MiB body)
FUND = 10_000_000                # each funded attacker's float (100,000.00 LND)
FUNDED = {"gas": 1, "wakes": 4, "storage": 1}       # funded keys per attack
WAKE_HEAVY, WAKE_TINY = 100, 3_000                  # as tests/test_duties.py, fewer tiny
STORAGE_BUDGET = 64 << 20        # bytes the storage attacker tries to write, at most
ROW = 4_096                      # one storage row's value (the VM's MAX_BYTES)
SUBSCRIBERS = 100                # event-stream readers that never read, per node
QUIET_LINKS = 20                 # peer links that never read, per node (16 admitted)
MAX_REQUESTS = 200_000           # any attacker's requests, at most
SOURCE = {name: f"127.0.0.{10 + i}" for i, name in enumerate(ATTACKS)} | \
    {"flood": "127.0.0.2"}
FLOOD_PATHS = ("/v1/applications?status=open&limit=1000", "/v1/loans?limit=1000",
               "/v1/status", "/v1/sync/1?count=256", "/v1/offers?limit=1000")

GAS_LOOP = """
    arg 0
    pushb "init"
    eq
    jnz done
loop:
    jmp loop
done:
    stop
"""
# init (n, t): keep n, arm a wake-up at chain time t (1: at once). tick: burn n loop
# turns and re-arm a second later. Each wake-up is paid when scheduled (WAKE_GAS by the
# deploy, then from the contract's balance).
WAKER = """
    arg 0
    pushb "init"
    eq
    jnz init
    pushb "n"
    sget
burn:
    push 1
    sub
    dup
    jnz burn
    pop
    time
    push 1
    add
    wake
    stop
init:
    pushb "n"
    arg 1
    sput
    arg 2
    wake
    stop
"""
# call "fill" n value: write value under n new keys (a counter kept in storage).
FILLER = """
    arg 0
    pushb "init"
    eq
    jnz done
    pushb "c"
    sget
    store 1
    arg 1
    store 0
next:
    load 0
    jz finish
    load 1
    itob
    arg 2
    sput
    load 1
    push 1
    add
    store 1
    load 0
    push 1
    sub
    store 0
    jmp next
finish:
    pushb "c"
    load 1
    sput
done:
    stop
"""
ROW_GAS = 170                     # FILLER's gas per row of ROW bytes (20 + 4096/32 + loop)


def attack_key(seed: int, name: str, i: int) -> keys.Keypair:
    return keys.Keypair(hashlib.sha256(f"chaos:{seed}:attack:{name}:{i}".encode()).digest())


def accounts(name: str, seed: int) -> list[str]:
    """The addresses whose transactions are this attack's (the report reads their
    nonces and balances from the ledger)."""
    n = SPAM_KEYS if name == "spam" else FUNDED.get(name, 1 if name == "oversize" else 0)
    return [attack_key(seed, name, i).address for i in range(n)]


def funding(names, seed: int) -> list[tuple[str, int]]:
    """(address, amount) the run transfers to the funded attackers before they start."""
    return [(attack_key(seed, n, i).address, FUND) for n in names
            for i in range(FUNDED.get(n, 0))]


# --- what an attacker records ---------------------------------------------------------

class Tally:
    def __init__(self, name: str, out: str):
        self.name, self.out = name, out
        self.sent = 0
        self.accepted = 0
        self.refused: Counter = Counter()       # refusal code -> transactions / requests
        self.answers: Counter = Counter()       # HTTP status (or "error") -> requests
        self.notes: dict = {}
        self.requests = 0
        self._written = 0.0

    def answer(self, status, code: str | None = None, n: int = 1) -> None:
        self.requests += 1
        self.answers[str(status)] += 1
        self.sent += n
        if status in (200, 201, 202):
            self.accepted += n
        else:
            self.refused[code or str(status)] += n
        if time.monotonic() - self._written > 2:
            self.write()

    def write(self) -> None:
        self._written = time.monotonic()
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"attack": self.name, "sent": self.sent, "accepted": self.accepted,
                       "refused": dict(self.refused), "answers": dict(self.answers),
                       "requests": self.requests, **self.notes}, f)
        os.replace(tmp, self.out)


class Ctx:
    def __init__(self, name: str, urls: list[str], seed: int, stop_at: float, out: str):
        self.name, self.urls, self.seed, self.stop_at = name, urls, seed, stop_at
        self.tally = Tally(name, out)
        self.turn = 0

    def live(self) -> bool:
        return time.time() < self.stop_at and self.tally.requests < MAX_REQUESTS

    def url(self) -> str:
        self.turn += 1
        return self.urls[self.turn % len(self.urls)]

    def session(self, limit: int = 64) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(SOURCE[self.name], 0), limit=limit),
            timeout=aiohttp.ClientTimeout(total=20))


def run_attack(name: str, urls: list[str], seed: int, stop_at: float, out: str) -> None:
    """The body of one attacker process."""
    ctx = Ctx(name, urls, seed, stop_at, out)
    ctx.tally.write()
    try:
        asyncio.run(_ATTACKS[name](ctx))
    finally:
        ctx.tally.write()


# --- transactions ---------------------------------------------------------------------

class Sender:
    """One key's transactions, nonces in order, `WINDOW` of them kept in the mempools:
    what a node answers moves the window on (nonce-used: that one is in a block)."""

    def __init__(self, kp: keys.Keypair, nonce: int, make):
        self.kp, self.lo, self.make = kp, nonce, make
        self.raws: dict[int, bytes] = {}

    def window(self) -> list[tuple[Sender, int, bytes]]:
        for n in [n for n in self.raws if n < self.lo]:
            del self.raws[n]
        out = []
        for n in range(self.lo, self.lo + WINDOW):
            if n not in self.raws:
                fields = self.make(n)
                if fields is None:
                    break
                kind, body = fields
                self.raws[n] = txm.sign(txm.build(self.kp, CHAIN, kind, n, **body),
                                        [self.kp]).raw
            out.append((self, n, self.raws[n]))
        return out

    def answered(self, nonce: int, code: str | None) -> None:
        if code == "nonce-used":
            self.lo = max(self.lo, nonce + 1)


async def _post_txs(ctx: Ctx, http, items: list) -> None:
    """POST the transactions in bodies of POST_MAX to the nodes in turn; count every
    answer per transaction and move each sender's window."""
    for k in range(0, len(items), POST_MAX):
        if not ctx.live():
            return
        part = items[k:k + POST_MAX]
        try:
            async with http.post(ctx.url() + "/v1/txs",
                                 json={"txs": [raw.hex() for _, _, raw in part]}) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    ctx.tally.answer(r.status, body.get("code"), len(part))
                    if r.status == 429:
                        await asyncio.sleep(min(2.0, float(r.headers.get("Retry-After", 1))))
                    continue
        except (TimeoutError, aiohttp.ClientError, ValueError):
            ctx.tally.answer("error", "connection", len(part))
            await asyncio.sleep(0.2)
            continue
        ctx.tally.requests += 1
        ctx.tally.answers["200"] += 1
        for (sender, nonce, _), res in zip(part, body["results"]):
            ctx.tally.sent += 1
            if res["http"] == 202:
                ctx.tally.accepted += 1
            else:
                ctx.tally.refused[res.get("code", str(res["http"]))] += 1
            sender.answered(nonce, res.get("code"))


async def _keep_windows(ctx: Ctx, http, senders: list[Sender], pause: float = 0.2) -> None:
    """Keep every sender's window offered until the end: what is already waiting comes
    back `duplicate` (cheap for the node), what was included `nonce-used`."""
    while ctx.live():
        items = [x for s in senders for x in s.window()]
        if not items:
            return
        await _post_txs(ctx, http, items)
        ctx.tally.write()
        await asyncio.sleep(pause)


async def _nonce(http, url: str, address: str) -> int:
    async with http.get(f"{url}/v1/accounts/{address}") as r:
        return (await r.json())["nonce"]


async def _deploy(ctx: Ctx, http, kp: keys.Keypair, code: bytes, args: list) -> str | None:
    """Deploy a contract and wait for it to commit: its address (None: it did not)."""
    nonce = await _nonce(http, ctx.urls[0], kp.address)
    raw = txm.sign(txm.build(kp, CHAIN, "deploy", nonce, code=code, args=args, gas=10_000),
                   [kp]).raw
    tx = txm.parse(raw)
    await _post_txs(ctx, http, [(Sender(kp, nonce, lambda n: None), nonce, raw)])
    while ctx.live():
        async with http.get(f"{ctx.url()}/v1/tx/{tx.id}") as r:
            st = await r.json()
        if st.get("status") == "committed":
            return keys.derive_address(b"contract", tx.hash)
        if st.get("status") in ("failed", "rejected"):
            ctx.tally.notes["deploy_failed"] = st.get("error")
            return None
        await asyncio.sleep(0.3)
    return None


async def spam(ctx: Ctx) -> None:
    sink = keys.Keypair.from_name("bob").address
    senders = [Sender(attack_key(ctx.seed, "spam", i), 0,
                      lambda n: ("transfer", {"to": sink, "amount": 1}))
               for i in range(SPAM_KEYS)]
    async with ctx.session() as http:
        await _keep_windows(ctx, http, senders)


async def gas(ctx: Ctx) -> None:
    kp = attack_key(ctx.seed, "gas", 0)
    async with ctx.session() as http:
        loop = await _deploy(ctx, http, kp, assemble(GAS_LOOP), [])
        if loop is None:
            return
        nonce = await _nonce(http, ctx.urls[0], kp.address)
        sender = Sender(kp, nonce, lambda n: ("call", {"contract": loop, "args": [b"go"],
                                                       "amount": 0,
                                                       "gas": txm.MAX_CALL_GAS}))
        await _keep_windows(ctx, http, [sender])


async def wakes(ctx: Ctx) -> None:
    code = assemble(WAKER)
    plan = [40_000] * WAKE_HEAVY + [1] * WAKE_TINY      # loop turns per tick
    n_keys = FUNDED["wakes"]
    per = -(-len(plan) // n_keys)
    async with ctx.session() as http:
        senders = []
        for i in range(n_keys):
            kp = attack_key(ctx.seed, "wakes", i)
            start = await _nonce(http, ctx.urls[0], kp.address)
            mine = plan[i * per:(i + 1) * per]

            def make(n, start=start, mine=mine):
                k = n - start
                return None if k >= len(mine) else (
                    "deploy", {"code": code, "args": [mine[k], 1],
                               "gas": WAKE_GAS + 20_000})
            senders.append(Sender(kp, start, make))
        await _keep_windows(ctx, http, senders)
        ctx.tally.notes["contracts_planned"] = len(plan)


async def storage(ctx: Ctx) -> None:
    kp = attack_key(ctx.seed, "storage", 0)
    rows = (txm.MAX_CALL_GAS - 2_000) // ROW_GAS
    calls = max(1, STORAGE_BUDGET // (rows * ROW))
    async with ctx.session() as http:
        filler = await _deploy(ctx, http, kp, assemble(FILLER), [])
        if filler is None:
            return
        start = await _nonce(http, ctx.urls[0], kp.address)
        value = b"\xa5" * ROW
        sender = Sender(kp, start, lambda n: None if n - start >= calls else (
            "call", {"contract": filler, "args": [b"fill", rows, value], "amount": 0,
                     "gas": txm.MAX_CALL_GAS}))
        ctx.tally.notes.update(rows_per_call=rows, row_bytes=ROW, calls_planned=calls)
        await _keep_windows(ctx, http, [sender], pause=1.0)
        ctx.tally.notes["contract"] = filler


def _big_code(n: int) -> bytes:
    """About 16 KiB of valid code, different for every n: four 4,000-byte pushes."""
    fill = hashlib.sha256(f"oversize:{n}".encode()).digest() * 125
    return assemble("\n".join(f'    pushb 0x{fill.hex()}\n    pop' for _ in range(4))
                    + "\n    stop\n")


async def oversize(ctx: Ctx) -> None:
    kp = attack_key(ctx.seed, "oversize", 0)
    filler = [b"\x5a" * 4_096] * 3          # with the code: just under MAX_TX_BYTES
    big = Sender(kp, 0, lambda n: ("deploy", {"code": _big_code(n), "args": filler,
                                              "gas": 10_000}))
    nobody = keys.Keypair.from_name("oversize-nobody")
    over_tx = txm.sign(txm.build(nobody, CHAIN, "transfer", 0, to=nobody.address,
                                 amount=1), [nobody]).raw + b"\x00" * txm.MAX_TX_BYTES
    bodies = {"tx-over-32KiB": {"tx": over_tx.hex()},
              "body-over-limit": {"tx": "00" * (txm.MAX_TX_BYTES + 1_000)},
              "batch-over-1MiB": {"txs": ["00" * 1_000] * 600}}
    sizes = Counter()
    async with ctx.session() as http:
        while ctx.live():
            items = big.window()
            sizes["largest_valid_tx_bytes"] = max(len(raw) for _, _, raw in items)
            await _post_txs(ctx, http, items[:16])
            for what, body in bodies.items():
                path = "/v1/txs" if "txs" in body else "/v1/tx"
                try:
                    async with http.post(ctx.url() + path, json=body) as r:
                        code = (await r.json(content_type=None)).get("code")
                        ctx.tally.answer(r.status, f"{what}:{code}")
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    ctx.tally.answer("error", f"{what}:connection")
            got = await _link(ctx.url(), attack_key(ctx.seed, "oversize-peer", ctx.turn),
                              [b"\x00" * (MAX_FRAME + 1)], seal=False)
            ctx.tally.answer(0, f"peer-frame-over-MAX_FRAME:{got}")
            ctx.tally.write()
            await asyncio.sleep(0.5)
    ctx.tally.notes.update(sizes)


async def flood(ctx: Ctx) -> None:
    async with ctx.session(limit=0) as http:
        async def reader(i: int) -> None:
            n = i
            while ctx.live():
                n += 1
                try:
                    async with http.get(ctx.url() + FLOOD_PATHS[n % len(FLOOD_PATHS)]) as r:
                        await r.read()
                        ctx.tally.answer(r.status, "rate-limited" if r.status == 429 else None)
                except (TimeoutError, aiohttp.ClientError):
                    ctx.tally.answer("error", "connection")
                    await asyncio.sleep(0.1)
        await asyncio.gather(*(reader(i) for i in range(16)))


API_BAD = (("POST", "/v1/tx", b"[" * 100_000), ("POST", "/v1/tx", b'{"tx": ' * 5_000),
           ("POST", "/v1/tx", b"\xff\xfe not json"), ("POST", "/v1/txs", b'{"txs": []}'),
           ("POST", "/v1/tx", b'{"tx": "zz"}'), ("POST", "/v1/txs", b'{"txs": "00"}'),
           ("GET", "/v1/blocks/abc", b""), ("GET", "/v1/blocks/99999999999", b""),
           ("GET", "/v1/loans?limit=99999", b""), ("GET", "/v1/loans?evil=1", b""),
           ("GET", "/v1/accounts/not-an-address", b""), ("GET", "/v1/tx/xyz", b""),
           ("GET", "/v1/sync/0?count=100000", b""), ("GET", "/v1/events?types=all", b""),
           ("GET", "/v1/../../etc/passwd", b""), ("GET", "/v1/assets/" + "a" * 5_000, b""),
           ("DELETE", "/v1/status", b""), ("POST", "/v1/blobs", b"x" * 100))


async def api(ctx: Ctx) -> None:
    held: list = []
    async with ctx.session(limit=0) as http:
        # Subscribers that never read, spread over the nodes.
        for url in ctx.urls:
            for _ in range(SUBSCRIBERS):
                if not ctx.live():
                    break
                try:
                    held.append(await http.ws_connect(url + "/v1/events"))
                    ctx.tally.answer(101, "subscribed")
                except aiohttp.WSServerHandshakeError as e:
                    if e.status == 503:            # the node's cap on readers: next node
                        ctx.tally.answer(503, "busy")
                        break
                    ctx.tally.answer(e.status, "rate-limited" if e.status == 429 else None)
                    await asyncio.sleep(0.1)
                except (TimeoutError, aiohttp.ClientError):
                    ctx.tally.answer("error", "connection")
        n = 0
        while ctx.live():
            method, path, body = API_BAD[n % len(API_BAD)]
            n += 1
            try:
                async with http.request(method, ctx.url() + path, data=body or None,
                                        headers={"Content-Type": "application/json"}) as r:
                    raw = await r.read()
                    code = json.loads(raw).get("code") if raw.startswith(b"{") else None
                    ctx.tally.answer(r.status, code)
                    if r.status == 429:
                        await asyncio.sleep(0.05)
            except (TimeoutError, aiohttp.ClientError, ValueError):
                ctx.tally.answer("error", "connection")
        ctx.tally.notes["subscribers_cut_off"] = sum(ws.closed for ws in held)
        ctx.tally.notes["subscribers_held"] = len(held)
        for ws in held:
            await ws.close()


async def _link(url: str, kp: keys.Keypair, frames: list[bytes], seal: bool = True) -> str:
    """Handshake as `kp` (the transport's own client side), send the frames (sealed
    under the link's key, or as they are), and say what the node did with the link."""
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url + "/p2p") as ws:
                try:
                    _, session = await client_handshake(ws, CHAIN, kp)
                except HandshakeError as e:
                    return "refused-banned" if "banned" in str(e) else "refused"
                for f in frames:
                    await ws.send_bytes(session.seal(f) if seal else f)
                msg = await ws.receive(timeout=2)
                return "closed" if msg.type != aiohttp.WSMsgType.BINARY else "open"
    except TimeoutError:
        return "open"
    except (aiohttp.ClientError, ConnectionError, OSError):
        return "closed"


async def _bad_hello(url: str, hello: bytes) -> str:
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url + "/p2p") as ws:
                await ws.send_bytes(hello)
                msg = await ws.receive(timeout=6)
                return "refused" if msg.type != aiohttp.WSMsgType.BINARY else "answered"
    except TimeoutError:
        return "open"
    except (aiohttp.ClientError, ConnectionError, OSError):
        return "refused"


async def peers(ctx: Ctx) -> None:
    """Links that never read (QUIET_LINKS per node, more than the node admits from
    strangers), held for the first half of the run and then half of them let go; and
    all along rounds of bad handshakes, badly signed gossip and forged consensus
    messages, each from a fresh key."""
    quiet: list = []
    http = aiohttp.ClientSession()
    half = time.time() + (ctx.stop_at - time.time()) / 2
    try:
        for url in ctx.urls:
            for i in range(QUIET_LINKS):
                kp = attack_key(ctx.seed, f"quiet-{url}", i)
                try:
                    ws = await http.ws_connect(url + "/p2p")
                    await client_handshake(ws, CHAIN, kp)
                    quiet.append(ws)
                    ctx.tally.answer(101, "quiet-link")
                except HandshakeError as e:
                    ctx.tally.answer(0, "quiet-link-refused-full" if "full" in str(e)
                                     else "quiet-link-refused")
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ctx.tally.answer("error", "quiet-link-connection")
        # Badly signed transactions with nonces a node would take (a nonce too far
        # ahead is refused before its signature is looked at: no strike).
        victim = attack_key(ctx.seed, "peer-victim", 0)
        bad = []
        for i in range(200):
            raw = bytearray(txm.sign(txm.build(victim, CHAIN, "transfer", i,
                                               to=keys.Keypair.from_name("bob").address,
                                               amount=1), [victim]).raw)
            raw[-5] ^= 1
            bad.append(bytes(raw))
        n = 0
        while ctx.live():
            n += 1
            if quiet and time.time() > half:
                ctx.tally.notes["quiet_links_closed_by_nodes"] = sum(ws.closed for ws in quiet)
                for ws in quiet[::2]:
                    await ws.close()
                quiet = quiet[1::2]
                half = float("inf")
            url = ctx.url()
            hellos = {"garbage-hello": b"\xc1" * 40,
                      "wrong-chain-hello": codec.encode({"chain": "other", "pubkey": b"\x01" * 32,
                                                         "nonce": os.urandom(32),
                                                         "eph": os.urandom(32)})}
            for what, hello in hellos.items():
                ctx.tally.answer(0, f"{what}:{await _bad_hello(url, hello)}")
            kp = attack_key(ctx.seed, "peer-badsig", n)
            got = await _link(url, kp, [codec.encode(["txs", codec.encode(bad)])])
            ctx.tally.answer(0, f"bad-signature-txs:{got}")
            again = await _link(url, kp, [])
            ctx.tally.answer(0, f"bad-signature-txs-reconnect:{again}")
            forger = attack_key(ctx.seed, "peer-forger", n)
            body = {"t": M.PREPARE, "v": 0, "h": 10**6, "d": b"\x00" * 32, "r": 1}
            forged = codec.encode(["msg", M.encode(M.sign(CHAIN, forger, body))])
            got = await _link(url, forger, [forged] * 4)
            ctx.tally.answer(0, f"forged-consensus-msgs:{got}")
            ctx.tally.write()
            await asyncio.sleep(0.2)
        ctx.tally.notes["quiet_links_held_to_the_end"] = len(quiet)
    finally:
        for ws in quiet:
            await ws.close()
        await http.close()


_ATTACKS = {"spam": spam, "gas": gas, "wakes": wakes, "storage": storage,
            "oversize": oversize, "flood": flood, "api": api, "peers": peers}
