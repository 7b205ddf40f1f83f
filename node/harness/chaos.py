"""`lendnet chaos`: break a real cluster of real processes on a schedule, then check it.

A run starts a local cluster (admin endpoints on, optionally one byzantine validator),
drives a lending workload from several client processes that record what they were told
(their history), lets a seeded nemesis inject faults — processes killed, paused or
stopped; links partitioned, cut one way, slowed, lossy or duplicating — heals
everything, waits for the cluster to settle, and checks every honest node's ledger
against the history. The schedule comes from the seed; the processes' timing does not,
so a run is repeatable in what it does, not in exactly when.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import ApiError, NodeClient, http_json
from lendnet.node.harness.workload import OFFER

from .cluster import Cluster, Member

FAULTS = ("kill", "pause", "stop", "partition", "oneway", "latency", "loss", "dup",
          "byzantine")
CHAIN = "lendnet-dev"
CLIENTS = 4
# Refusals after which a client sends the same transaction again (to this node or
# another): it may be in flight already, or its turn may come.
RESEND = {"nonce-used", "nonce-ahead", "nonce-taken", "duplicate", "mempool-full"}


@dataclass
class ChaosConfig:
    nodes: int = 4
    duration_s: int = 60
    faults: tuple = ("kill", "pause", "partition", "latency", "byzantine")
    seed: int = 1
    rate: int = 20                      # transactions per second, all clients together
    settle_s: int = 45
    recovery_bound_s: int = 20
    broken_quorum: int | None = None    # test-only: every node accepts this many votes
    hosts: bool = False                 # one network namespace (own address) per node
    log: object = print                 # progress lines (None: quiet)
    faults_done: list = field(default_factory=list)


# --- clients: separate processes, each with its own keys and history ---------------------

def _client_key(seed: int, i: int) -> keys.Keypair:
    return keys.Keypair(hashlib.sha256(f"chaos:{seed}:client:{i}".encode()).digest())


def _client(i: int, seed: int, urls: list[str], rate: float, stop_at: float,
            give_up_at: float, offer: str, out: str) -> None:
    """One wallet: submits its next transaction, waits until some node says it is
    committed (resubmitting the same bytes elsewhere if a node dies), records it."""
    rng = random.Random(seed * 1000 + i)
    lender = i == 0                       # client 0 is the lender: it funds applications
    kp = keys.Keypair.from_name("lender") if lender else _client_key(seed, i)
    apis = [NodeClient(u, timeout=3) for u in urls]
    history = open(out, "w")
    nonce = None
    registered = False
    while time.time() < stop_at:
        api = apis[rng.randrange(len(apis))]
        try:
            if nonce is None:
                nonce = api.account(kp.address)["nonce"]
            kind, fields = (_lender_action(rng, api, offer) if lender else
                            _next_action(rng, api, kp, registered))
        except (OSError, ApiError, ValueError):
            time.sleep(0.2)
            continue
        raw = txm.sign(txm.build(kp, CHAIN, kind, nonce, **fields), [kp]).raw
        tx_id = txm.parse(raw).id
        rec = {"tx": tx_id, "kind": kind, "nonce": nonce, "submitted": time.time(),
               "ack": False}
        st = _until_committed(apis, raw, tx_id, rng, give_up_at)
        if st is not None:
            rec.update(ack=st["status"] == "committed", status=st["status"],
                       height=st["height"], acked=time.time())
            nonce += 1
            registered = registered or kind == "register_borrower" and rec["ack"]
        history.write(json.dumps(rec) + "\n")
        history.flush()
        time.sleep(rng.uniform(0.5, 1.5) / rate)
    history.close()


def _lender_action(rng, api, offer: str):
    apps = api.get("/v1/applications?status=open&limit=20")["applications"]
    if apps and rng.randrange(10) < 7:
        return "fund", {"application": rng.choice(apps)["application"], "offer": offer}
    to = keys.Keypair.from_name(rng.choice(["bob", "carol", "dave"])).address
    return "transfer", {"to": to, "amount": rng.randint(1, 1_000)}


def _next_action(rng, api, kp, registered):
    if not registered:
        return "register_borrower", {"profile_hash": b"\x01" * 32, "docs_hash": b"\x02" * 32}
    loans = api.get(f"/v1/loans?borrower={kp.address}&limit=20")["loans"]
    active = [x for x in loans if x["status"] == "active"]
    roll = rng.randrange(10)
    if active and roll < 6:
        return "repay", {"loan": rng.choice(active)["loan"], "amount": rng.randint(100, 5_000)}
    apps = api.get(f"/v1/applications?borrower={kp.address}&status=open")["applications"]
    if not active and not apps and roll < 8:
        return "apply", {"amount": rng.randint(5_000, 50_000), "purpose": "chaos",
                         "term": rng.randint(2, 6), "period": "monthly",
                         "method": "annuity", "product": "business", "grace": 0,
                         "docs_hash": b"\x02" * 32}
    to = keys.Keypair.from_name(rng.choice(["bob", "carol", "dave"])).address
    return "transfer", {"to": to, "amount": rng.randint(1, 1_000)}


def _until_committed(apis, raw: bytes, tx_id: str, rng, give_up_at: float):
    """Submit and poll until committed or failed (a status a node reported), or None
    if no node would say so before `give_up_at`."""
    api = apis[rng.randrange(len(apis))]
    submitted_to = set()
    next_submit = 0.0
    while time.time() < give_up_at:
        if time.time() >= next_submit:
            try:
                api.submit(raw)
                submitted_to.add(api.url)
            except ApiError as e:
                if e.code not in RESEND:
                    return {"status": "refused", "height": None, "error": e.error}
            except OSError:
                api = apis[rng.randrange(len(apis))]    # that node is down: another
                continue
            next_submit = time.time() + 3.0             # resend if nothing happens
        for probe in apis:
            try:
                st = probe.tx(tx_id)
            except OSError:
                continue
            if st and st["status"] in ("committed", "failed"):
                return st
        time.sleep(0.1)
        if time.time() >= next_submit:
            api = apis[rng.randrange(len(apis))]
    return None


# --- the nemesis ---------------------------------------------------------------------

class Nemesis:
    def __init__(self, cluster: Cluster, members: list[Member], cfg: ChaosConfig,
                 byzantine: set, extra: dict):
        self.c = cluster
        self.members = members
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.byzantine = byzantine
        self.extra = extra
        self.tokens = {}
        self.keys = {m.name: H.load_key(m.home).pubkey.hex() for m in members}
        self.down: dict[str, str] = {}           # name -> "killed" | "stopped" | "paused"
        self.log = cfg.log or (lambda *_: None)

    def token(self, m: Member) -> str:
        if m.name not in self.tokens:
            self.tokens[m.name] = (m.home / "admin.token").read_text().strip()
        return self.tokens[m.name]

    def set_faults(self, m: Member, spec: dict) -> None:
        req = urllib.request.Request(m.api + "/admin/faults", data=json.dumps(spec).encode(),
                                     headers={"Authorization": f"Bearer {self.token(m)}",
                                              "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=3).read()
        except OSError as e:
            self.log(f"  (could not set faults on {m.name}: {e})")

    def honest(self) -> list[Member]:
        return [m for m in self.members if m.name not in self.byzantine]

    def primary(self) -> Member | None:
        for m in self.members:
            st = m.status() if m.name not in self.down else None
            if st and st.get("primary") is not None:
                return self.members[st["primary"]]
        return None

    def inject(self, fault: str) -> dict:
        """Apply one fault; return what was done (with how to undo it)."""
        rng = self.rng
        up = [m for m in self.honest() if m.name not in self.down]
        if fault in ("kill", "stop", "pause"):
            if not up or self.down:
                return {}                 # one process fault at a time: f = 1 with n = 4
            m = rng.choice(up)
            sig = {"kill": signal.SIGKILL, "stop": signal.SIGTERM,
                   "pause": signal.SIGSTOP}[fault]
            self.c.kill_member(m.name, sig)
            self.down[m.name] = fault
            return {"fault": fault, "node": m.name}
        links = [m for m in self.members if m.name not in self.down]
        if fault == "partition":
            p = self.primary()
            if p is not None and rng.randrange(2) == 0:
                side = [p]                                  # the primary cut off alone
            else:
                side = rng.sample(links, rng.randint(1, max(1, len(links) // 2)))
            names = {m.name for m in side}
            if self.cfg.hosts:                              # routes between namespaces
                self.c.partition({int(n[4:]) for n in names})
                return {"fault": fault, "side": sorted(names)}
            for m in links:
                other = [x for x in self.members if (x.name in names) != (m.name in names)]
                self.set_faults(m, {"block_peers": [f"127.0.0.1:{x.port}" for x in other],
                                    "block_keys": [self.keys[x.name] for x in other]})
            return {"fault": fault, "side": sorted(names)}
        if fault == "oneway":
            a, b = rng.sample(links, 2)
            if self.cfg.hosts:
                self.c.cut(int(a.name[4:]), int(b.name[4:]))
            else:
                self.set_faults(a, {"block_peers": [f"127.0.0.1:{b.port}"]})
            return {"fault": fault, "from": a.name, "to": b.name}
        spec = {"latency": {"delay_ms": rng.randint(30, 120), "jitter_ms": 50},
                "loss": {"drop_pct": rng.randint(10, 30)},
                "dup": {"dup_pct": rng.randint(20, 50)}}[fault]
        for m in links:
            self.set_faults(m, {**spec, "seed": rng.randrange(2**32)})
        return {"fault": fault, **spec}

    def heal(self) -> None:
        for name, how in list(self.down.items()):
            m = next(x for x in self.members if x.name == name)
            if how == "pause":
                os.kill(m.pid, signal.SIGCONT)
            else:
                self.c.start_member(name, self.extra.get(name, []))
                fresh = {x.name: x for x in self.c.members()}
                m.pid, m.proc = fresh[name].pid, fresh[name].proc
            del self.down[name]
        if self.cfg.hosts:
            self.c.heal_network()
        deadline = time.monotonic() + 20
        for m in self.members:
            while m.status() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.cfg.hosts:
                self.set_faults(m, {})


# --- the checker ---------------------------------------------------------------------

def _metric(url: str, name: str) -> int:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return int(float(line.split()[1]))
    except OSError:
        return 0
    return 0


def check(honest: list[Member], history: list[dict], cfg: ChaosConfig, byzantine_mode,
          recovery_s) -> dict:
    reasons = []
    chains, txsets = {}, {}
    duplicated = 0
    for m in honest:
        api = NodeClient(m.api, timeout=10)
        try:
            top = api.status()["height"]
        except (OSError, ApiError) as e:
            reasons.append(f"{m.name} unreachable after healing: {e}")
            continue
        chain, seen = {}, set()
        for h in range(1, top + 1):
            b = api.get(f"/v1/blocks/{h}")
            chain[h] = (b["hash"], b["state_root"])
            for t in b["txs"]:
                if t in seen:
                    duplicated += 1
                seen.add(t)
        chains[m.name], txsets[m.name] = chain, seen
    common = min((len(c) for c in chains.values()), default=0)
    divergent = [h for h in range(1, common + 1)
                 if len({c[h] for c in chains.values()}) > 1]
    acked = [r["tx"] for r in history if r["ack"]]
    lost = sorted({t for t in acked for s in txsets.values() if t not in s})
    conservation = True
    for m in honest:
        status, sup = http_json(m.api + "/v1/supply", 5)
        if status != 200 or sup["total"] != sup["supply"]:
            conservation = False
    evidence = sum(_metric(m.api, "lendnet_evidence_total") for m in honest)
    if lost:
        reasons.append(f"{len(lost)} acknowledged transactions missing, e.g. {lost[0]}")
    if duplicated:
        reasons.append(f"{duplicated} transactions committed twice")
    if divergent:
        reasons.append(f"honest nodes disagree at {len(divergent)} heights, first {divergent[0]}")
    if not conservation:
        reasons.append("money not conserved on some node")
    if byzantine_mode == "equivocate" and evidence == 0:
        reasons.append("the equivocating validator left no evidence")
    if recovery_s is None or recovery_s > cfg.recovery_bound_s:
        reasons.append(f"no recovery within {cfg.recovery_bound_s} s of healing")
    return {"acknowledged": len(acked), "lost": len(lost), "duplicated": duplicated,
            "divergent_heights": len(divergent), "conservation_ok": conservation,
            "evidence": evidence, "recovery_seconds": recovery_s,
            "committed_height": common, "ok": not reasons, "reasons": reasons}


# --- a run ---------------------------------------------------------------------------

def run(cfg: ChaosConfig, root: Path) -> dict:
    log = cfg.log or (lambda *_: None)
    unknown = set(cfg.faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if cfg.hosts and set(cfg.faults) & {"latency", "loss", "dup"}:
        raise ValueError("with --hosts, network faults are partitions and one-way cuts "
                         "(routes); latency, loss and dup run in the loopback mode")
    rng = random.Random(cfg.seed)
    names = [f"node{i}" for i in range(cfg.nodes)]
    byz_mode = "equivocate" if "byzantine" in cfg.faults else None
    byzantine = {"node0"} if byz_mode else set()     # node0 is view 0's primary
    extra = {n: [] for n in names}
    if byz_mode:
        extra["node0"] += ["--byzantine", byz_mode]
    if cfg.broken_quorum:
        for n in names:
            extra[n] += ["--quorum-override", str(cfg.broken_quorum)]
    if cfg.hosts:
        from .netns import NetnsCluster
        cluster = NetnsCluster(root / "cluster")
    else:
        cluster = Cluster(root / "cluster")
    procs = []
    try:
        members = cluster.up(cfg.nodes, wait_s=60, extra_args=extra, admin=not cfg.hosts)
        urls = [m.api for m in members]
        log(f"cluster up: {cfg.nodes} nodes at " + ", ".join(m.api for m in members)
            + (f"; node0 {byz_mode}" if byz_mode else ""))
        offer = _setup(NodeClient(urls[1], timeout=10), cfg.seed)
        t_end = time.time() + cfg.duration_s
        ctx = multiprocessing.get_context("spawn")
        for i in range(CLIENTS):
            p = ctx.Process(target=_client, args=(i, cfg.seed, urls, cfg.rate / CLIENTS,
                                                  t_end, t_end + cfg.settle_s, offer,
                                                  str(root / f"history-{i}.jsonl")))
            p.start()
            procs.append(p)
        nemesis = Nemesis(cluster, members, cfg, byzantine, extra)
        injected = []
        active = [f for f in cfg.faults if f != "byzantine"]
        while active and time.time() < t_end - 4:
            time.sleep(rng.uniform(1.0, 2.5))
            fault = rng.choice(active)
            done = nemesis.inject(fault)
            if not done:
                continue
            injected.append({"at_s": round(cfg.duration_s - (t_end - time.time()), 1), **done})
            log(f"  t={injected[-1]['at_s']:5.1f}s inject {done}")
            time.sleep(min(rng.uniform(2.0, 5.0), max(0.0, t_end - time.time())))
            nemesis.heal()
        while time.time() < t_end:
            time.sleep(0.2)
        nemesis.heal()
        healed = time.time()
        log("  healed everything; waiting for the cluster to settle")
        recovery = _recovery(members, byzantine, healed, cfg.recovery_bound_s * 2)
        for p in procs:
            p.join(cfg.settle_s + 10)
        history = []
        for i in range(CLIENTS):
            path = root / f"history-{i}.jsonl"
            if path.exists():
                history += [json.loads(x) for x in path.read_text().splitlines() if x]
        _settle(nemesis.honest(), cfg.settle_s)
        report = check(nemesis.honest(), history, cfg, byz_mode, recovery)
        report.update(faults_injected=len(injected), faults=injected, seed=cfg.seed,
                      nodes=cfg.nodes, duration=cfg.duration_s, submitted=len(history),
                      byzantine={n: byz_mode for n in byzantine})
        return report
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        cluster.down()


def _setup(api: NodeClient, seed: int) -> str:
    """Fund the clients and put an offer on the ledger (before any fault)."""
    alice, lender = keys.Keypair.from_name("alice"), keys.Keypair.from_name("lender")
    an, ln = api.account(alice.address)["nonce"], api.account(lender.address)["nonce"]
    hs = [api.submit(txm.sign(txm.build(alice, CHAIN, "transfer", an + i - 1,
                                        to=_client_key(seed, i).address, amount=5_000_000),
                              [alice]).raw) for i in range(1, CLIENTS)]
    hs.append(api.submit(txm.sign(txm.build(lender, CHAIN, "register_lender", ln,
                                            profile_hash=b"\x03" * 32), [lender]).raw))
    offer = api.submit(txm.sign(txm.build(lender, CHAIN, "publish_offer", ln + 1,
                                          amount=50_000_000, **OFFER), [lender]).raw)
    for h in hs + [offer]:
        st = api.wait_committed(h, 60)
        if st["status"] != "committed":
            raise RuntimeError(f"chaos setup transaction failed: {st.get('error')}")
    return offer


def _recovery(members, byzantine, healed: float, bound: float):
    """Seconds from the heal until a new transaction commits on every honest node."""
    honest = [m for m in members if m.name not in byzantine]
    dave = keys.Keypair.from_name("dave")
    deadline = healed + bound
    while time.time() < deadline:
        try:
            api = NodeClient(honest[0].api, timeout=3)
            raw = txm.sign(txm.build(dave, CHAIN, "transfer",
                                     api.account(dave.address)["nonce"],
                                     to=keys.Keypair.from_name("bob").address, amount=1),
                           [dave]).raw
            h = api.submit(raw)
            for m in honest:
                NodeClient(m.api, timeout=3).wait_committed(h, max(0.1, deadline - time.time()))
            return round(time.time() - healed, 2)
        except (OSError, ApiError, TimeoutError):
            time.sleep(0.2)
    return None


def _settle(honest, wait_s: float) -> None:
    """Until every honest node holds the same height (or the wait runs out)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        heights = {(m.status() or {}).get("height") for m in honest}
        if len(heights) == 1 and None not in heights:
            return
        time.sleep(0.3)
