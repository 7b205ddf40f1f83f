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

import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import signal
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import ApiError, NodeClient, http_json
from lendnet.node.harness.workload import LIMITS, OFFER

from . import attacks as A
from .bench import _rss_kib
from .cluster import Cluster, Member

FAULTS = ("kill", "pause", "stop", "partition", "oneway", "latency", "loss", "dup",
          "byzantine")
CHAIN = "lendnet-dev"
CLIENTS = 4
RSS_BOUND_MIB = 400       # docs/CHAOS.md: measured peak under every attack, with margin
RSS_EVERY_S = 2.0
# With the fast clock a fifth client borrows and never repays, against an offer with
# short deadlines, so every run has loans that go late and default under the attacks.
DEADBEAT = CLIENTS
SHORT_OFFER = {**OFFER, "periods": ["weekly"], "max_term": 2, "tolerance_days": 1,
               "default_days": 3, "tiers": [[300, 2400, 150_000]]}
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
    attacks: tuple = ()                 # attacks.ATTACKS to run beside the clients
    reference: bool = True              # with attacks: first a run without them
    rss_bound_mib: int = RSS_BOUND_MIB  # no node's RSS above this (sampled)
    fast_clock: bool = False            # the demo's chain clock (1 s = 2 days): loans move


# --- clients: separate processes, each with its own keys and history ---------------------

def _client_key(seed: int, i: int) -> keys.Keypair:
    return keys.Keypair(hashlib.sha256(f"chaos:{seed}:client:{i}".encode()).digest())


def _client(i: int, seed: int, urls: list[str], rate: float, stop_at: float,
            give_up_at: float, offers: dict, out: str) -> None:
    """One wallet: submits its next transaction, waits until some node says it is
    committed (resubmitting the same bytes elsewhere if a node dies), records it.
    `offers`: the lender's offer ("main"), and with the fast clock the short one and
    the borrower who never repays ("short", "deadbeat")."""
    rng = random.Random(seed * 1000 + i)
    lender = i == 0                       # client 0 is the lender: it funds applications
    deadbeat = i == DEADBEAT
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
            kind, fields = (_lender_action(rng, api, offers) if lender else
                            _deadbeat_action(api, kp, registered) if deadbeat else
                            _next_action(rng, api, kp, registered))
        except (OSError, ApiError, ValueError):
            time.sleep(0.2)
            continue
        if kind == "wait":
            time.sleep(0.3)
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


def _lender_action(rng, api, offers: dict):
    apps = api.get("/v1/applications?status=open&limit=20")["applications"]
    if apps and rng.randrange(10) < 7:
        app = rng.choice(apps)
        short = app["borrower"] == offers.get("deadbeat")
        return "fund", {"application": app["application"],
                        "offer": offers["short" if short else "main"], "accept": []}
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
                         "docs_hash": b"\x02" * 32, **LIMITS}
    to = keys.Keypair.from_name(rng.choice(["bob", "carol", "dave"])).address
    return "transfer", {"to": to, "amount": rng.randint(1, 1_000)}


def _deadbeat_action(api, kp, registered):
    """Borrow one week's money at a time, never repay: late fee after a day, default
    after three (SHORT_OFFER)."""
    if not registered:
        return "register_borrower", {"profile_hash": b"\x04" * 32, "docs_hash": b"\x05" * 32}
    loans = api.get(f"/v1/loans?borrower={kp.address}&limit=100")["loans"]
    apps = api.get(f"/v1/applications?borrower={kp.address}&status=open")["applications"]
    if any(x["status"] == "active" for x in loans) or apps:
        return "wait", None
    return "apply", {"amount": 5_000, "purpose": "never repaid", "term": 1,
                     "period": "weekly", "method": "annuity", "product": "consumer",
                     "grace": 0, "docs_hash": b"\x05" * 32,
                     **LIMITS, "min_default_days": SHORT_OFFER["default_days"]}


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
    times: dict[int, int] = {}                  # height -> chain time (first honest node)
    twice: set[str] = set()                    # hashes in more than one block of a chain
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
            if not chains:
                times[h] = b["header"]["time"]
            for t in b["txs"]:
                if t in seen:
                    twice.add(t)
                seen.add(t)
        chains[m.name], txsets[m.name] = chain, seen
    common = min((len(c) for c in chains.values()), default=0)
    divergent = [h for h in range(1, common + 1)
                 if len({c[h] for c in chains.values()}) > 1]
    acked = [r["tx"] for r in history if r["ack"]]
    # A transaction is in two blocks only if the first held it but could not include it
    # (its price under the contract price by then, say): its nonce stayed unused, and
    # the ledger lets a nonce be used once. What a client was told was committed must
    # be in one block only; an attacker's such repeats are counted, not failed.
    duplicated = len(twice & set(acked))
    repeated = len(twice) - duplicated
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
            "repeated_not_included": repeated,
            "divergent_heights": len(divergent), "conservation_ok": conservation,
            "evidence": evidence, "recovery_seconds": recovery_s,
            "committed_height": common, "ok": not reasons, "reasons": reasons,
            "_times": times}


def check_loans(honest: list[Member], events: list[dict], times: dict[int, int]) -> dict:
    """Every loan's late fee and default happen in the first block whose chain time
    reaches the deadline (the agreement's: a late fee once `due + tol` has passed,
    default once `due + dflt` is reached), and none is missed: a loan still active whose
    deadline the chain's time has passed is a duty not done."""
    api = NodeClient(honest[0].api, timeout=10)

    def time_at(h: int) -> int:
        if h not in times:
            times[h] = api.get(f"/v1/blocks/{h}")["header"]["time"]
        return times[h]

    def first(after: int, inclusive: bool, upto: int) -> int | None:
        for h in range(1, upto + 1):
            t = time_at(h)
            if t > after or (inclusive and t == after):
                return h
        return None

    loans, cursor, height = {}, None, 0
    for _ in range(1_000):
        page = api.get("/v1/loans?limit=1000" + (f"&after={cursor}" if cursor else ""))
        height = page["height"]
        loans.update({x["loan"]: x for x in page["loans"]})
        cursor = page["next"]
        if cursor is None:
            break
    seen = {(e["loan"], e["event"], e["height"], json.dumps(e["values"])): e for e in events}
    reasons: list[str] = []
    on_time = {"instalment_late": 0, "defaulted": 0}
    wrong, missed = [], []
    observed_defaults = set()
    for (loan, name, h, _), e in sorted(seen.items()):
        view = loans.get(loan)
        if view is None or name not in on_time:
            continue
        terms = view["terms"]
        if name == "instalment_late":
            deadline, inclusive = e["values"][2] + terms["tol"], False
        else:
            # default: the oldest unpaid instalment's due date + default_s (it stays the
            # oldest unpaid: nothing pays instalments after default)
            if not view["instalments"]:
                continue
            deadline, inclusive = view["instalments"][0]["due"] + terms["dflt"], True
            observed_defaults.add(loan)
        want = first(deadline, inclusive, max(h, 1))
        if want == h:
            on_time[name] += 1
        else:
            wrong.append({"loan": loan, "event": name, "height": h, "expected": want,
                          "deadline": deadline})
    now = time_at(height) if height else 0
    for loan, view in loans.items():
        t, rows = view["terms"], view["instalments"]
        if view["status"] != "active" or not rows:
            continue
        for r in rows:      # every unpaid instalment past its tolerance has had its fee
            if r["n"] > t["kl"] and now > r["due"] + t["tol"]:
                missed.append({"loan": loan, "missed": f"late fee of instalment {r['n']}",
                               "deadline": r["due"] + t["tol"]})
        if now >= rows[0]["due"] + t["dflt"]:
            missed.append({"loan": loan, "missed": "default",
                           "deadline": rows[0]["due"] + t["dflt"]})
    status = Counter(v["status"] for v in loans.values())
    unobserved = sorted(x for x, v in loans.items()
                        if v["status"] == "defaulted" and x not in observed_defaults)
    if wrong:
        reasons.append(f"{len(wrong)} loan deadlines met in the wrong block, e.g. {wrong[0]}")
    if missed:
        reasons.append(f"{len(missed)} loan deadlines passed and not met, e.g. {missed[0]}")
    return {"loans": len(loans), "by_status": dict(status), "late_fees_on_time":
            on_time["instalment_late"], "defaults_on_time": on_time["defaulted"],
            "wrong_block": wrong[:10], "missed": missed[:10],
            "defaults_not_seen_in_stream": len(unobserved), "checked_at_height": height,
            "reasons": reasons}


# --- attackers: what they sent, what got in, what it cost them --------------------------

def _snapshot(url: str, addresses: list[str]) -> dict[str, tuple[int, int]]:
    api = NodeClient(url, timeout=10)
    out = {}
    for a in addresses:
        try:
            acct = api.account(a)
            out[a] = (acct["balance"], acct["nonce"])
        except (OSError, ApiError):
            out[a] = (0, 0)
    return out


def _attack_figures(path: Path, before: dict, after: dict) -> dict:
    """What one attacker sent and was answered (its own file), and from the ledger:
    its transactions included in blocks (nonces used, whether they succeeded or
    failed) and the money its accounts lost."""
    try:
        sent = json.loads(path.read_text())
    except (OSError, ValueError):
        sent = {"error": "the attacker left no figures"}
    included = {a: after[a][1] - before[a][1] for a in before}
    spent = {a: before[a][0] - after[a][0] for a in before}
    return {**sent, "committed": sum(included.values()),
            "spent_units": sum(spent.values()),
            "spent_lnd": round(sum(spent.values()) / 100, 2),
            "accounts": len(before),
            "_per_account": [(included[a], spent[a]) for a in before]}


def attackers_paid(home: Path, figures: dict) -> dict:
    """Did every attacker transaction that got into a block cost its sender? Only a
    chain that charges fees can say yes: without fee parameters in its genesis this
    is null, with the reason, never a pass."""
    genesis = json.loads((home / "genesis.json").read_text())
    fee_params = {k: v for k, v in {**genesis.get("params", {}),
                                    **genesis.get("fees", {})}.items()
                  if "fee" in k or "price" in k}
    per = {name: f.pop("_per_account", []) for name, f in figures.items()}
    if not fee_params:
        return {"paid": None, "why": "this chain charges no fees: its genesis has no fee "
                                     "or price parameter, so attackers' transactions "
                                     "cost them nothing"}
    unpaid = {name: sum(1 for inc, sp in rows if inc and sp < inc)
              for name, rows in per.items()}
    return {"paid": not any(unpaid.values()), "fee_params": fee_params,
            "rule": "every attacker account lost at least 1 unit per transaction it got "
                    "into a block (a lower bound of its fees)",
            "accounts_that_did_not_pay": unpaid}


# --- a run ---------------------------------------------------------------------------

FAST_PARAMS = {"time_scale": H.FAST_CLOCK, "empty_block_ms": 250}     # as `lendnet demo`


def run(cfg: ChaosConfig, root: Path) -> dict:
    """One run; with attacks, first a reference run without them on a fresh cluster
    (unless cfg.reference is off), then the attacked run, and the honest commit rate of
    the one against the other."""
    unknown = set(cfg.faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    bad = set(cfg.attacks) - set(A.ATTACKS)
    if bad:
        raise ValueError(f"unknown attacks {sorted(bad)}; choose from {', '.join(A.ATTACKS)}")
    if cfg.hosts and set(cfg.faults) & {"latency", "loss", "dup"}:
        raise ValueError("with --hosts, network faults are partitions and one-way cuts "
                         "(routes); latency, loss and dup run in the loopback mode")
    if not cfg.attacks:
        return _run_once(cfg, root)
    log = cfg.log or (lambda *_: None)
    cfg = replace(cfg, fast_clock=True)
    ref = None
    if cfg.reference:
        log("reference run: the same seed and duration, no attackers")
        ref = _run_once(replace(cfg, attacks=()), root / "reference")
    log("attacked run: " + ",".join(cfg.attacks))
    report = _run_once(cfg, root / "attacked")
    if ref is not None:
        honest, base = report["honest_tx_per_s"], ref["honest_tx_per_s"]
        report["reference"] = {k: ref[k] for k in (
            "ok", "reasons", "honest_tx_per_s", "acknowledged", "submitted", "rss", "loans")}
        report["honest_rate_vs_reference"] = round(honest / base, 3) if base else None
        if honest < HONEST_SHARE * base:
            report["reasons"].append(
                f"honest transactions committed at {honest} tx/s under attack, under "
                f"{HONEST_SHARE} x the reference run's {base} tx/s")
        if not ref["ok"]:
            report["reasons"].append("the reference run failed its own checks: "
                                     + "; ".join(ref["reasons"]))
        report["ok"] = not report["reasons"]
    return report


HONEST_SHARE = 0.5        # honest tx/s under attack, at least this share of the reference's


def _run_once(cfg: ChaosConfig, root: Path) -> dict:
    log = cfg.log or (lambda *_: None)
    rng = random.Random(cfg.seed)
    names = [f"node{i}" for i in range(cfg.nodes)]
    byz_mode = "equivocate" if "byzantine" in cfg.faults else None
    byzantine = {"node0"} if byz_mode else set()     # node0 is view 0's primary
    extra: dict[str, list] = {n: [] for n in names}
    if byz_mode:
        extra["node0"] += ["--byzantine", byz_mode]
    if cfg.broken_quorum:
        for n in names:
            extra[n] += ["--quorum-override", str(cfg.broken_quorum)]
    cluster: Cluster
    if cfg.hosts:
        from .netns import NetnsCluster
        cluster = NetnsCluster(root / "cluster")
    else:
        cluster = Cluster(root / "cluster")
    procs: list = []
    watch = _Watch()
    try:
        members = cluster.up(cfg.nodes, wait_s=60, extra_args=extra, admin=not cfg.hosts,
                             params=FAST_PARAMS if cfg.fast_clock else None)
        urls = [m.api for m in members]
        log(f"cluster up: {cfg.nodes} nodes at " + ", ".join(m.api for m in members)
            + (f"; node0 {byz_mode}" if byz_mode else ""))
        honest_members = [m for m in members if m.name not in byzantine]
        watch.start(honest_members, events=cfg.fast_clock)
        offers = _setup(NodeClient(urls[1], timeout=10), cfg.seed, cfg.fast_clock,
                        A.funding(cfg.attacks, cfg.seed))
        accounts = {a: A.accounts(a, cfg.seed) for a in cfg.attacks}
        before = {a: _snapshot(urls[1], addrs) for a, addrs in accounts.items()}
        t_end = time.time() + cfg.duration_s
        ctx = multiprocessing.get_context("spawn")
        for i in range(CLIENTS + (1 if cfg.fast_clock else 0)):
            p = ctx.Process(target=_client, args=(i, cfg.seed, urls, cfg.rate / CLIENTS,
                                                  t_end, t_end + cfg.settle_s, offers,
                                                  str(root / f"history-{i}.jsonl")))
            p.start()
            procs.append(p)
        attackers = []
        for a in cfg.attacks:
            p = ctx.Process(target=A.run_attack, args=(a, urls, cfg.seed, t_end,
                                                       str(root / f"attack-{a}.json")))
            p.start()
            procs.append(p)
            attackers.append(p)
        if cfg.attacks:
            log(f"  attackers started: {', '.join(cfg.attacks)}")
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
        for p in attackers:               # they stop at t_end by themselves
            p.join(15)
            if p.is_alive():
                p.kill()
        nemesis.heal()
        healed = time.time()
        log("  healed everything; waiting for the cluster to settle")
        recovery = _recovery(members, byzantine, healed, cfg.recovery_bound_s * 2)
        for p in procs:
            p.join(cfg.settle_s + 10)
        history = []
        for i in range(CLIENTS + 1):
            path = root / f"history-{i}.jsonl"
            if path.exists():
                history += [json.loads(x) for x in path.read_text().splitlines() if x]
        _settle(nemesis.honest(), cfg.settle_s)
        report = check(nemesis.honest(), history, cfg, byz_mode, recovery)
        times = report.pop("_times")
        watch.stop()
        acked_in_run = sum(1 for r in history if r["ack"] and r["acked"] <= t_end)
        report.update(faults_injected=len(injected), faults=injected, seed=cfg.seed,
                      nodes=cfg.nodes, duration=cfg.duration_s, submitted=len(history),
                      byzantine={n: byz_mode for n in byzantine},
                      honest_tx_per_s=round(acked_in_run / cfg.duration_s, 2))
        report["rss"] = {"bound_mib": cfg.rss_bound_mib, "every_s": RSS_EVERY_S,
                         "peak_mib": {n: round(k / 1024, 1)
                                      for n, k in sorted(watch.peak_kib.items())}}
        report["disk_mib"] = {m.name: round(sum(
            f.stat().st_size for f in m.home.glob("node.db*")) / 2**20, 1) for m in members}
        over = {n: v for n, v in report["rss"]["peak_mib"].items() if v > cfg.rss_bound_mib}
        if over:
            report["reasons"].append(f"node RSS over {cfg.rss_bound_mib} MiB: {over}")
        if cfg.fast_clock:
            report["loans"] = check_loans(nemesis.honest(), watch.events, times)
            report["reasons"] += report["loans"].pop("reasons")
        if cfg.attacks:
            report["attacks"] = {a: _attack_figures(root / f"attack-{a}.json", before[a],
                                                    _snapshot(urls[1], accounts[a]))
                                 for a in cfg.attacks}
            report["attackers_paid"] = attackers_paid(members[0].home, report["attacks"])
        report["ok"] = not report["reasons"]
        return report
    finally:
        watch.stop()
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        cluster.down()


def _setup(api: NodeClient, seed: int, fast: bool = False,
           funding: list | None = None) -> dict:
    """Fund the clients (and the funded attackers) and put the lender's offers on the
    ledger (before any fault): {"main": offer, and with the fast clock "short": offer,
    "deadbeat": address}."""
    alice, lender = keys.Keypair.from_name("alice"), keys.Keypair.from_name("lender")
    an, ln = api.account(alice.address)["nonce"], api.account(lender.address)["nonce"]
    pay = [(_client_key(seed, i).address, 5_000_000) for i in range(1, CLIENTS)]
    if fast:
        pay.append((_client_key(seed, DEADBEAT).address, 5_000_000))
    pay += funding or []
    hs = [api.submit(txm.sign(txm.build(alice, CHAIN, "transfer", an + k, to=to,
                                        amount=amount), [alice]).raw)
          for k, (to, amount) in enumerate(pay)]
    hs.append(api.submit(txm.sign(txm.build(lender, CHAIN, "register_lender", ln,
                                            profile_hash=b"\x03" * 32), [lender]).raw))
    offers = {"main": api.submit(txm.sign(txm.build(lender, CHAIN, "publish_offer", ln + 1,
                                                    amount=50_000_000, **OFFER),
                                          [lender]).raw)}
    if fast:
        offers["short"] = api.submit(txm.sign(txm.build(
            lender, CHAIN, "publish_offer", ln + 2, amount=5_000_000, **SHORT_OFFER),
            [lender]).raw)
        offers["deadbeat"] = _client_key(seed, DEADBEAT).address
    for h in hs + [offers["main"], offers.get("short")]:
        if h is None:
            continue
        st = api.wait_committed(h, 60)
        if st["status"] != "committed":
            raise RuntimeError(f"chaos setup transaction failed: {st.get('error')}")
    return offers


# --- what the run watches: loan events, node memory ----------------------------------

class _Watch:
    """A thread that records every honest node's loan events (its /v1/events stream,
    reconnecting after a restart) and samples each node's RSS every RSS_EVERY_S."""

    def __init__(self):
        self.events: list[dict] = []
        self.peak_kib: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, members: list[Member], events: bool) -> None:
        async def stream(m: Member) -> None:
            while not self._stop.is_set():
                try:
                    async with aiohttp.ClientSession() as http:
                        async with http.ws_connect(m.api + "/v1/events?types=loan") as ws:
                            while not self._stop.is_set():
                                try:
                                    msg = await ws.receive(timeout=0.5)
                                except TimeoutError:
                                    continue       # (a quiet half second: look at _stop)
                                if msg.type == aiohttp.WSMsgType.TEXT:
                                    self.events.append({**json.loads(msg.data),
                                                        "node": m.name})
                                elif msg.type != aiohttp.WSMsgType.BINARY:
                                    break
                except (aiohttp.ClientError, OSError, ValueError, TimeoutError):
                    pass
                await asyncio.sleep(0.3)

        async def memory() -> None:
            while not self._stop.is_set():
                for m in members:
                    if m.pid:
                        kib = _rss_kib(m.pid)
                        self.peak_kib[m.name] = max(self.peak_kib.get(m.name, 0), kib)
                await asyncio.sleep(RSS_EVERY_S)

        async def main() -> None:
            await asyncio.gather(memory(), *(stream(m) for m in members if events))

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


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
