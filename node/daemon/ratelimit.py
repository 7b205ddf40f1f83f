"""Request rate limits per client address: a token bucket each (`rate` tokens a second,
at most `burst` saved up), for the API. A client past its limit is told when to come
back (HTTP 429 with Retry-After) and costs nothing more than this lookup. The buckets
are bounded: past MAX_CLIENTS the one unused longest is forgotten (it starts full again,
which only errs on the side of serving)."""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000


class RateLimiter:
    def __init__(self, rate: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS):
        self.rate, self.burst, self.clock, self.max_clients = rate, burst, clock, max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self.refused = 0

    def wait(self, client: str, cost: int = 1) -> int:
        """Take `cost` tokens for `client` (at most `burst`, or it could never go on): 0 if
        it may go on, else the whole seconds to wait."""
        cost = min(cost, self.burst)
        now = self.clock()
        tokens, then = self.buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if len(self.buckets) >= self.max_clients:
            self.buckets.popitem(last=False)
        if tokens >= cost:
            self.buckets[client] = (tokens - cost, now)
            return 0
        self.buckets[client] = (tokens, now)
        self.refused += 1
        return max(1, math.ceil((cost - tokens) / self.rate))
