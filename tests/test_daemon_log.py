"""What the daemon says about refusals: every one counted by reason, each reason logged
at most once per REFUSAL_LOG_MS with the count it did not log (a flood of refusals must
not become a flood of log lines)."""
from __future__ import annotations

import logging

from lendnet.consensus.effects import Refused
from lendnet.node.daemon import daemon as D
from lendnet.node.daemon.metrics import Metrics


def test_refusals_are_all_counted_and_each_reason_logged_at_most_every_10_s(monkeypatch,
                                                                           caplog):
    d = D.Daemon.__new__(D.Daemon)          # only what _refused uses: no home, no sockets
    d.metrics = Metrics()
    d._refusals_logged = {}
    clock = [1_000_000]
    monkeypatch.setattr(D, "now_ms", lambda: clock[0])
    caplog.set_level(logging.WARNING, logger="lendnet.node")
    for _ in range(5):
        d.refused(Refused(3, 12, 0, "time-ahead", "time 99 is ahead"))
    d.refused(Refused(3, 12, 0, "exec-root", "state root at 11 is not this replica's"))
    clock[0] += D.REFUSAL_LOG_MS
    d.refused(Refused(4, 13, 1, "time-ahead", "time 100 is ahead"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused the proposal for height 12 in view 3 from validator 0: time-ahead "
        "(time 99 is ahead)",
        "refused the proposal for height 12 in view 3 from validator 0: exec-root "
        "(state root at 11 is not this replica's)",
        "refused the proposal for height 13 in view 4 from validator 1: time-ahead "
        "(time 100 is ahead); 4 more refused for this reason since the last report"]
    text = d.metrics.exposition().decode()
    assert 'lendnet_proposals_refused_total{reason="time-ahead"} 6.0' in text
    assert 'lendnet_proposals_refused_total{reason="exec-root"} 1.0' in text
