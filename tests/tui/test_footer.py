"""Provides tests of the dashboard's footer at 80×24: the keys screen's ``?`` stays in sight,
on the dashboard and with a pane focused."""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Footer

from codex_tui.app import CodexTuiApp
from codex_tui.config import TuiSettings
from codex_tui.screens.keys import KeysModal
from tests.conftest import ServerFactory
from tests.support.tui_helpers import SIZE, dashboard, running_app, wait_for
from tests.tui.test_panes import create_tasks, grid, open_panes


def footer_keys(app: CodexTuiApp) -> dict[str, Widget]:
    """The footer's keys that are drawn whole inside the screen, by action."""
    footer = dashboard(app).query_one(Footer)
    width = SIZE[0]
    shown: dict[str, Widget] = {}
    for key in footer.query("FooterKey"):
        region = key.region
        if region.width and region.x >= 0 and region.right <= width:
            shown.setdefault(str(getattr(key, "action", "")), key)
    return shown


async def test_the_keys_hint_stays_in_the_footer_at_80_columns(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        await create_tasks(client, server, 2)
        async with running_app(client, server) as (app, pilot):
            await open_panes(app, pilot, 2)
            await wait_for(pilot, lambda: "show_keys" in footer_keys(app), "? on the dashboard")
            assert "new_task" in footer_keys(app), "the dashboard's own keys are shown too"

            grid(app).focus_pane(grid(app).panes[0])
            await wait_for(
                pilot,
                lambda: "search" in footer_keys(app) and "show_keys" in footer_keys(app),
                "? beside the pane's keys",
            )
            # One key, one meaning: ? opens the keys screen.
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, KeysModal), "the keys screen")


async def test_a_remapped_binding_keeps_its_place_in_the_footer(
    server_factory: ServerFactory,
) -> None:
    # Textual's keymap moves a remapped binding to the end of the footer, where 80 columns
    # cut it off: "New" was gone with new-task = "f2".
    server = server_factory(local_worker=False)
    settings = TuiSettings(keymap={"new-task": "f2"})
    async with server.client() as client:
        async with running_app(client, server, settings=settings) as (app, pilot):
            await wait_for(pilot, lambda: "new_task" in footer_keys(app), "New in the footer")
            shown = list(footer_keys(app))
            assert shown[:3] == ["show_keys", "new_task", "open_pane"], shown
            assert "f2" in str(footer_keys(app)["new_task"].render())
