"""`lendnet chaos` on real processes: a short schedule of every kind of fault holds, the
checker fails a deliberately broken cluster, and the admin endpoint is guarded."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from lendnet.node.harness.chaos import ChaosConfig, run
from lendnet.node.harness.cluster import Cluster


def test_a_short_chaos_schedule_holds(tmp_path):
    cfg = ChaosConfig(nodes=4, duration_s=30, seed=1, rate=20, log=None,
                      faults=("kill", "pause", "partition", "latency", "byzantine"))
    r = run(cfg, tmp_path)
    assert r["ok"], r["reasons"]
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["divergent_heights"] == 0
    assert r["conservation_ok"] and r["evidence"] > 0          # node0 equivocated
    assert r["acknowledged"] > 20 and r["faults_injected"] >= 3
    assert r["byzantine"] == {"node0": "equivocate"}


def test_the_checker_catches_a_broken_quorum(tmp_path):
    """Every node accepts f+1 votes as a quorum (test-only flag): partitioned halves
    commit different blocks, and the run says so."""
    cfg = ChaosConfig(nodes=4, duration_s=30, seed=3, rate=20, log=None,
                      faults=("partition",), broken_quorum=2, settle_s=15,
                      recovery_bound_s=8)
    r = run(cfg, tmp_path)
    assert not r["ok"]
    assert r["divergent_heights"] > 0 or r["lost"] > 0, r
    assert any("disagree" in x or "missing" in x or "unreachable" in x
               for x in r["reasons"])


def test_attackers_beside_the_honest_clients_are_measured(tmp_path):
    """A short attacked run (no nemesis) after its reference run: the report has each
    attack's figures and the checks' inputs; against spam from keys without money, bad
    API input and hostile peers every check holds (honest rate, loans on time, memory,
    attackers paid), and the spam got nothing in."""
    cfg = ChaosConfig(nodes=4, duration_s=10, seed=5, rate=20, log=None, faults=(),
                      attacks=("spam", "api", "peers"), settle_s=20)
    r = run(cfg, tmp_path)
    assert r["lost"] == 0 and r["divergent_heights"] == 0 and r["conservation_ok"], r
    assert r["acknowledged"] > 0 and r["honest_tx_per_s"] > 0
    ref = r["reference"]
    assert ref["ok"], ref["reasons"]
    assert ref["honest_tx_per_s"] > 0
    share = r["honest_rate_vs_reference"]
    assert (share < 0.5) == any("reference run's" in x for x in r["reasons"]), r["reasons"]
    for name in cfg.attacks:
        f = r["attacks"][name]
        assert {"sent", "accepted", "refused", "committed", "spent_lnd"} <= set(f), f
        assert f["sent"] > 0, f
    assert r["ok"], r["reasons"]
    spam = r["attacks"]["spam"]
    assert spam["accounts"] == 300 and spam["committed"] == 0 and spam["accepted"] == 0
    assert set(spam["refused"]) == {"cannot-pay"}, spam["refused"]
    assert r["attacks"]["api"]["refused"].get("bad-request", 0) > 0
    assert r["attacks"]["peers"]["refused"].get("quiet-link-refused-full", 0) > 0
    assert r["attackers_paid"]["paid"] is True, r["attackers_paid"]
    rss = r["rss"]
    assert rss["bound_mib"] == 400 and len(rss["peak_mib"]) == 4
    assert all(0 < v < rss["bound_mib"] for v in rss["peak_mib"].values()), rss
    loans = r["loans"]
    assert not loans["wrong_block"] and not loans["missed"], loans
    assert loans["loans"] > 0


def _post(url: str, body, token: str | None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw.startswith(b"{") else {"error": raw.decode()})


def test_admin_endpoint_needs_its_token_and_checks_the_spec(tmp_path):
    c = Cluster(tmp_path / "c")
    try:
        [m] = c.up(1, wait_s=30, admin=True)
        url = m.api + "/admin/faults"
        token = (m.home / "admin.token").read_text().strip()
        assert oct((m.home / "admin.token").stat().st_mode & 0o777) == "0o600"
        assert _post(url, {"drop_pct": 10}, None)[0] == 401
        assert _post(url, {"drop_pct": 10}, "0" * 32)[0] == 401
        status, body = _post(url, {"drop_pct": 101}, token)
        assert status == 400 and "drop_pct" in body["error"]
        status, body = _post(url, {"delay_ms": 5, "block_keys": ["zz"]}, token)
        assert status == 400 and "block_keys" in body["error"]
        status, body = _post(url, {"drop_pct": 5, "delay_ms": 20}, token)
        assert status == 200 and body["drop_pct"] == 5 and body["delay_ms"] == 20
    finally:
        c.down()


def test_admin_endpoint_is_off_by_default(tmp_path):
    c = Cluster(tmp_path / "c")
    try:
        [m] = c.up(1, wait_s=30)
        status, _ = _post(m.api + "/admin/faults", {}, "x")
        assert status == 404 and not (m.home / "admin.token").exists()
    finally:
        c.down()


@pytest.mark.parametrize("faults", ["oneway,loss,dup,stop"])
def test_the_other_faults_hold_too(tmp_path, faults):
    cfg = ChaosConfig(nodes=4, duration_s=20, seed=7, rate=20, log=None,
                      faults=tuple(faults.split(",")))
    r = run(cfg, tmp_path)
    assert r["ok"], r["reasons"]
    assert r["faults_injected"] >= 2


def test_several_hosts_mode_in_network_namespaces(tmp_path):
    from lendnet.node.harness.netns import available
    why = available()
    if why:
        pytest.skip(f"several-hosts mode unavailable here: {why}")
    cfg = ChaosConfig(nodes=4, duration_s=20, seed=2, rate=20, log=None, hosts=True,
                      faults=("kill", "partition", "oneway"))
    r = run(cfg, tmp_path)
    assert r["ok"], r["reasons"]
    assert r["faults_injected"] >= 2
    import subprocess
    assert "lendnet-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True).stdout      # torn down
