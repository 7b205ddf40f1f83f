"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.fixture
def wallet(tmp_path, monkeypatch):
    """A keystore in tmp_path holding one wallet "w" (fast KDF, fixed passphrase), for
    commands that sign offline or are refused before they reach a node."""
    from lendnet.cli.main import main
    monkeypatch.setenv("LENDNET_KDF", "fast")
    monkeypatch.setenv("LENDNET_WALLETS", str(tmp_path / "wallets"))
    monkeypatch.setenv("LENDNET_PASSPHRASE", "pass")
    assert CliRunner().invoke(main, ["wallet", "create", "w"]).exit_code == 0
    return tmp_path
