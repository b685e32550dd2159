"""The app keeps its start-up objects out of the garbage collector's full passes while it runs
(a full pass walked all of Textual's objects in the middle of event bursts) and gives them back
when it exits, so that apps run one after another (tests, embedding) leak nothing."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from click.testing import CliRunner

from codex_tui.cli import main
from tests.conftest import LiveServer
from tests.support.tui_helpers import dashboard_ready, running_app, wait_for


async def test_start_up_objects_are_frozen_while_running_and_released_at_exit(
    live_server: LiveServer,
) -> None:
    gc.unfreeze()
    async with live_server.client() as client:
        async with running_app(client, live_server) as (app, pilot):
            await wait_for(pilot, lambda: dashboard_ready(app))
            await wait_for(pilot, lambda: gc.get_freeze_count() > 0)
            frozen = gc.get_freeze_count()
            assert frozen > 10_000  # Textual's and our own long-lived objects
    assert gc.get_freeze_count() == 0


async def test_the_collector_is_back_on_after_the_first_frame(live_server: LiveServer) -> None:
    """The command turns the collector off for start-up (codex_tui.cli.tui); the app turns it
    back on once its first frame is drawn, start-up's objects frozen first."""
    gc.unfreeze()
    gc.disable()
    try:
        async with live_server.client() as client:
            async with running_app(client, live_server) as (app, pilot):
                await wait_for(pilot, lambda: dashboard_ready(app))
                await wait_for(pilot, gc.isenabled, "the collector to be on again")
                assert gc.get_freeze_count() > 10_000
    finally:
        gc.enable()


def test_the_tui_command_starts_with_the_collector_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Opening the TUI turns the collector off before the app is imported and run (the app
    turns it back on after its first frame)."""
    from codex_tui.app import CodexTuiApp

    seen: list[bool] = []

    def run(app: CodexTuiApp) -> None:
        seen.append(gc.isenabled())

    monkeypatch.setattr(CodexTuiApp, "run", run)
    try:
        result = CliRunner().invoke(main, [], env={"CODEX_TUI_HOME": str(tmp_path)})
    finally:
        gc.enable()
    assert seen == [False]
    assert result.exit_code == 0, result.output
