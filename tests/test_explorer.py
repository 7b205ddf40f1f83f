"""The explorer's pieces without a browser: escaping and the bounded event log.
(tests/test_explorer_browser.py drives the pages themselves in Chromium.)"""
from __future__ import annotations

from lendnet.node.daemon import explorer, explorer_html as X

HOSTILE = '<script>alert("x")</script>&\'"'


def test_every_value_is_escaped_and_only_own_markup_passes():
    out = X.table(["a<b"], [[HOSTILE, X.link("/x?a=1&b=2", HOSTILE)]])
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert 'href="/x?a=1&amp;b=2"' in out
    assert X.h("<p>{}</p>", X.Safe("<b>ok</b>")) == "<p><b>ok</b></p>"
    assert X.Safe("<div>") + HOSTILE == "<div>" + X.esc(HOSTILE)     # Safe + text stays safe
    assert isinstance(X.Safe("<div>") + HOSTILE, X.Safe)
    page = X.page(HOSTILE, X.fields([(HOSTILE, HOSTILE)]), HOSTILE, 7)
    assert "<script>" not in page and page.count("&lt;script&gt;") == 5
    assert X.seg("ln1/<x>") == "ln1%2F%3Cx%3E"


def test_money_and_percentages_are_exact():
    assert X.money(123456) == "1,234.56" and X.money(-5) == "-0.05" and X.money(None) == "-"
    assert X.pct(1250) == "12.50%" and X.pct(None) == "-"


def test_the_event_log_is_bounded_and_forgets_evicted_events(monkeypatch):
    monkeypatch.setattr(explorer, "EVENTS_KEPT", 3)
    log = explorer.EventLog()
    for i in range(5):
        log.put_nowait({"type": "loan", "event": "payment", "loan": f"L{i % 2}",
                        "tx": f"T{i}", "height": 10 + i, "time": 0, "values": []})
    assert len(log.events) == 3 and log.since == 10
    assert [e["tx"] for e in log.by_loan["L0"]] == ["T2", "T4"]
    assert "T0" not in log.by_tx and "T1" not in log.by_tx and "L1" in log.by_loan
    assert not log.full() and log.types == {"loan"}
