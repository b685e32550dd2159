"""Provides a test of what the TUI prints when it crashes: the traceback, without the frames'
local variables, which can hold a token (docs/reliability.md S7)."""

from __future__ import annotations

import pytest

from codex_tui.app import CodexTuiApp
from server_client.client import CodexTuiClient
from tests.support.tui_helpers import SIZE, wait_for

#: Stands in for a user token held in a local variable when the crash happens.
SECRET = "ctu_" + "s3cr3t" * 7


def crash_with_a_secret_local() -> None:
    """Raise, with :data:`SECRET` in a local variable of the raising frame."""
    token = SECRET
    raise RuntimeError(f"a bug (token of {len(token)} characters)")


async def test_a_crash_prints_its_traceback_without_local_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens on port 9: the dashboard starts offline, which is all this needs.
    client = CodexTuiClient("http://127.0.0.1:9", "unused-token")
    app = CodexTuiApp(client)
    with pytest.raises(RuntimeError, match="a bug"):
        async with app.run_test(size=SIZE) as pilot:
            app.call_later(crash_with_a_secret_local)
            await wait_for(pilot, lambda: app._exit_renderables, "the crash's traceback")
    await client.aclose()
    printed = capsys.readouterr().err  # printed at exit, as on a terminal
    assert "crash_with_a_secret_local" in printed and "a bug (token of 46" in printed
    assert SECRET not in printed and "s3cr3t" not in printed
