"""The app keeps its start-up objects out of the garbage collector's full passes while it runs
(a full pass walked all of Textual's objects in the middle of event bursts) and gives them back
when it exits, so that apps run one after another (tests, embedding) leak nothing."""

from __future__ import annotations

import gc

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
