"""The API's limits against abusive clients, on a real node daemon (in this process,
a real socket on 127.0.0.1, a real store): request rates per client address."""
from __future__ import annotations

import aiohttp

from lendnet.node.daemon import home as H
from lendnet.node.daemon.daemon import Daemon
from lendnet.node.daemon.ratelimit import RateLimiter


async def _statuses(home, n: int) -> list[tuple[int, str | None, dict]]:
    d = Daemon(home)
    await d.start()
    try:
        out = []
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                async with s.get(f"http://127.0.0.1:{d.port}/v1/status") as r:
                    out.append((r.status, r.headers.get("Retry-After"), await r.json()))
        return out
    finally:
        await d.stop()


async def test_a_client_past_its_rate_gets_429_and_when_to_come_back(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(api_rate=1, api_burst=2, api_limit_loopback=True))
    got = await _statuses(tmp_path, 12)
    assert [s for s, _, _ in got[:2]] == [200, 200]           # the burst
    refused = [(retry, body) for s, retry, body in got if s == 429]
    assert refused, got                     # 12 requests take far less than 10 s here
    retry, body = refused[0]
    assert int(retry) >= 1 and body["code"] == "rate-limited" and "retry in" in body["error"]


async def test_loopback_clients_are_not_limited_unless_the_config_says(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(api_rate=1, api_burst=1))
    assert {s for s, _, _ in await _statuses(tmp_path, 8)} == {200}


def test_a_bucket_refills_at_its_rate_and_the_buckets_are_bounded():
    now = [0.0]
    lim = RateLimiter(rate=2, burst=4, clock=lambda: now[0], max_clients=3)
    assert [lim.wait("a") for _ in range(5)] == [0, 0, 0, 0, 1]
    now[0] += 0.5                                   # one token back
    assert lim.wait("a") == 0 and lim.wait("a") == 1
    for who in ("b", "c", "d", "e"):
        lim.wait(who)
    assert len(lim.buckets) == 3 and "a" not in lim.buckets
    assert lim.refused == 2
