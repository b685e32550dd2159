"""Forwarded client addresses are believed from configured proxies only (issue 17 item 7,
docs/reliability.md S11), against real servers: a local client that varies
``X-Forwarded-For``, ``X-Real-IP`` or ``Forwarded`` still has one pairing budget of 10
guesses; with the proxy configured, the clients it forwards are counted (and audited) apart;
a malformed proxy setting stops the server before it starts, naming the setting."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server_client.server.settings import ServerSettings
from tests.conftest import LiveServer, ServerFactory

PROBLEM = "application/problem+json"
#: The default pairing limit (ServerSettings.rate_pairing), set explicitly over the test
#: servers' high one.
PAIRING = {"CODEX_TUI_SERVER_RATE_PAIRING": "10/minute"}


def _guess(server: LiveServer, headers: dict[str, str]) -> httpx.Response:
    """One wrong pairing code sent with ``headers``."""
    return httpx.post(
        f"{server.url}/api/pair", json={"code": "WRONG-CODE", "name": "w"}, headers=headers
    )


def _refused_addresses(server: LiveServer) -> list[str]:
    """The client address of each ``pairing.refused`` audit row, oldest first."""
    (db,) = list(server.home.rglob("codex-tui.db"))
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT client_addr FROM audit_log WHERE action = 'pairing.refused' ORDER BY id"
        )
        return [str(row[0]) for row in rows]


def _spoofing_headers(i: int) -> dict[str, str]:
    """Headers claiming the ``i``-th of many different clients."""
    return {
        "X-Forwarded-For": f"203.0.113.{i + 1}",
        "X-Real-IP": f"198.51.100.{i + 1}",
        "Forwarded": f"for=192.0.2.{i + 1}",
    }


def test_a_local_client_varying_forwarded_headers_has_one_pairing_budget(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False, extra_env=PAIRING)
    answers = [_guess(server, _spoofing_headers(i)).status_code for i in range(10)]
    assert answers == [400] * 10
    refused = _guess(server, _spoofing_headers(10))
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert "rate_pairing" in refused.json()["detail"]
    # Every guess is audited with the real peer, never a claimed one.
    assert set(_refused_addresses(server)) == {"127.0.0.1"}


def test_behind_a_configured_proxy_forwarded_clients_are_counted_apart(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        local_worker=False,
        extra_env=PAIRING | {"CODEX_TUI_SERVER_TRUSTED_PROXIES": "127.0.0.1"},
    )
    alice = {"X-Forwarded-For": "203.0.113.7"}
    bob = {"X-Forwarded-For": "203.0.113.8"}
    assert [_guess(server, alice).status_code for _ in range(10)] == [400] * 10
    assert _guess(server, alice).status_code == 429
    # Another client behind the same proxy has a budget of its own.
    assert _guess(server, bob).status_code == 400
    # Only X-Forwarded-For is read: X-Real-IP and Forwarded never name the client.
    assert _guess(server, {"X-Real-IP": "198.51.100.1"}).status_code == 400
    addresses = _refused_addresses(server)
    assert addresses == ["203.0.113.7"] * 10 + ["203.0.113.8", "127.0.0.1"]


def _proxies(value: object) -> list[str]:
    """``trusted_proxies`` as the settings read ``value``."""
    return ServerSettings.model_validate(
        {"db_url": "sqlite:///x.db", "trusted_proxies": value}
    ).trusted_proxies


def test_the_trusted_proxies_setting_takes_addresses_and_networks_only() -> None:
    assert _proxies("10.0.0.5, 10.1.2.3/16,::1") == ["10.0.0.5", "10.1.0.0/16", "::1"]
    assert _proxies('["127.0.0.1"]') == ["127.0.0.1"]
    assert _proxies("") == []
    assert ServerSettings(db_url="sqlite:///x.db").trusted_proxies == []
    with pytest.raises(ValueError, match="nginx.internal"):
        _proxies("nginx.internal")


def test_a_malformed_proxy_stops_the_server_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
    env |= {"CODEX_TUI_HOME": str(tmp_path / "home"), "CODEX_TUI_KEYRING": "0"}
    env["CODEX_TUI_SERVER_TRUSTED_PROXIES"] = "10.0.0.300"
    run = subprocess.run(
        [sys.executable, "-m", "codex_tui", "server", "--no-local-worker", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "CODEX_TUI_SERVER_TRUSTED_PROXIES" in run.stderr
    assert "10.0.0.300" in run.stderr
