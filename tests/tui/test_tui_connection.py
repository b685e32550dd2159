"""Provides tests of the connection state: the poll backoff schedule, the task list while the
server is down, and the connection banner, against a real server stopped and restarted on the
same port."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from textual.app import App, ComposeResult

from codex_tui.failures import describe_poll_failure, poll_forever, poll_retry_delays
from codex_tui.widgets.connection_banner import ConnectionBanner
from codex_tui.widgets.task_list import TaskList
from tests.conftest import LiveServer, ServerFactory, wait_until_async
from tests.support.tui_helpers import SIZE, seed_tasks, wait_for
from tests.tui.test_tui_attention import ListApp, layout

# -- the schedule ----------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_cap_with_bounded_jitter() -> None:
    longest = poll_retry_delays(uniform=lambda _low, high: high)
    assert list(itertools.islice(longest, 8)) == [1, 2, 4, 8, 15, 15, 15, 15]
    shortest = poll_retry_delays(uniform=lambda low, _high: low)
    assert list(itertools.islice(shortest, 5)) == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.0])
    drawn: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        drawn.append((low, high))
        return low

    list(itertools.islice(poll_retry_delays(0.5, 3.0, uniform=record), 5))
    assert [low for low, _ in drawn] == pytest.approx([0.4, 0.8, 1.6, 2.4, 2.4])
    assert [high for _, high in drawn] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for attempt, delay in enumerate(itertools.islice(poll_retry_delays(), 200)):
        assert 0.8 * min(15, 2**attempt) <= delay <= min(15, 2**attempt), (attempt, delay)


async def test_poll_forever_waits_what_each_poll_returns_and_wakes_at_once() -> None:
    """None waits the interval, a number waits that long; a wake polls at once either way."""
    answers: list[float | None] = [None, 0.0, 0.0, 3600.0, None]
    calls = 0

    async def poll_once() -> float | None:
        nonlocal calls
        calls += 1
        return answers[min(calls, len(answers)) - 1]

    async def stays(count: int) -> None:
        for _ in range(50):  # many turns of the loop: the poller stays asleep
            await asyncio.sleep(0)
        assert calls == count

    wake = asyncio.Event()
    poller = asyncio.create_task(poll_forever(poll_once, wake, 3600.0))
    try:
        await wait_until_async(lambda: calls == 1, what="the first poll")
        await stays(1)  # None: the interval
        wake.set()
        await wait_until_async(lambda: calls == 4, what="two polls without a wait, then one")
        await stays(4)  # 3600 s: the retry delay it returned
        wake.set()
        await wait_until_async(lambda: calls == 5, what="the wake")
        await stays(5)
    finally:
        poller.cancel()


def test_poll_failures_name_the_server() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:8765/api/tasks")
    refused = httpx.ConnectError("All connection attempts failed", request=request)
    timed_out = httpx.ReadTimeout("", request=request)
    url = "http://127.0.0.1:8765"
    assert describe_poll_failure(refused, url) == f"Cannot reach the server at {url}"
    assert describe_poll_failure(timed_out, url) == f"Cannot reach the server at {url} (timed out)"
    assert describe_poll_failure(refused).startswith("Cannot reach the server: All connection")


# -- the task list while the server is down --------------------------------------------------


async def restart(server_factory: ServerFactory, server: LiveServer) -> LiveServer:
    """Start the stopped ``server`` again on its port (off the event loop: it blocks)."""
    return await asyncio.to_thread(server_factory, local_worker=False, reuse=server)


async def test_backoff_grows_while_the_server_is_down_and_resets_after(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    async with server.client() as client:
        app = ListApp(client)  # retries after 0.05, 0.1, 0.2, then every 0.4 s
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list

            def failures() -> list[TaskList.ConnectionChanged]:
                return [m for m in app.posted(TaskList.ConnectionChanged) if m.error]

            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            assert app.posted(TaskList.ConnectionChanged) == []
            await asyncio.to_thread(server.stop)
            await wait_for(pilot, lambda: len(failures()) >= 5, "five failed polls")
            first_run = failures()
            assert [m.retry_in_s for m in first_run[:5]] == [0.05, 0.1, 0.2, 0.4, 0.4]
            assert all(m.error == f"Cannot reach the server at {server.url}" for m in first_run)
            since = first_run[0].since
            assert since is not None and all(m.since == since for m in first_run)
            assert tasks.offline_since == since and tasks.has_class("-offline")

            await restart(server_factory, server)
            await wait_for(pilot, lambda: tasks.error is None, "the server to answer again", 30)
            recovered = app.posted(TaskList.ConnectionChanged)[-1]
            assert recovered.connected and recovered.retry_in_s is None and recovered.since is None
            assert tasks.offline_since is None and not tasks.has_class("-offline")

            seen = len(failures())
            await asyncio.to_thread(server.stop)
            await wait_for(pilot, lambda: len(failures()) >= seen + 3, "three more failures")
            second_run = failures()[seen:]
            assert [m.retry_in_s for m in second_run[:3]] == [0.05, 0.1, 0.2]  # from the start
            assert second_run[0].since is not None and second_run[0].since > since


async def test_banner_while_offline_keeps_the_list_usable_and_recovers_on_the_same_port(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    await seed_tasks(server)
    async with server.client() as client:
        app = ListApp(client)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.task_list
            banner = app.banner
            await wait_for(pilot, lambda: tasks.loaded, "the first poll")
            assert not banner.offline and not banner.display and banner.text == ""
            before = layout(tasks)
            shown = tasks.tasks
            assert len(shown) == 5 and tasks.selected_task == shown[0]

            await asyncio.to_thread(server.stop)
            await wait_for(pilot, lambda: banner.offline, "the banner")
            assert banner.display and banner.has_class("-offline")
            assert banner.text.startswith(f"⚠ Cannot reach the server at {server.url} — retrying")
            assert "· offline since " in banner.text
            assert banner.text.endswith("· loaded history stays readable")
            assert any(m.error for m in app.posted(TaskList.ConnectionChanged))

            # The loaded list stays on screen and can be browsed.
            assert layout(tasks) == before and tasks.tasks == shown
            await pilot.press("down")
            await wait_for(pilot, lambda: tasks.selected_task == shown[1], "the next task")
            await pilot.press("down")
            await wait_for(pilot, lambda: tasks.selected_task == shown[2], "past a header")

            # Back on the same port, without restarting the app: the banner goes, polling
            # resumes at the normal interval and new tasks show.
            await restart(server_factory, server)
            await wait_for(pilot, lambda: not banner.offline, "the banner to go", 30)
            assert not banner.display and banner.text == "" and tasks.error is None
            new = await client.create_task("after the restart", workdir=str(server.workdir))
            await wait_for(pilot, lambda: new.id in [t.id for t in tasks.tasks], "the new task")
            assert tasks.selected_task == shown[2]
            assert tasks.counts.running == 3


# -- the banner ------------------------------------------------------------------------------


class BannerApp(App[None]):
    """A bare app around one banner whose clock the test moves."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(clock=lambda: self.now, tz=UTC, id="connection-banner")


async def test_banner_counts_down_with_an_injected_clock_and_hides_on_recovery() -> None:
    since = datetime(2026, 11, 21, 12, 3, 4, tzinfo=UTC)
    app = BannerApp(since + timedelta(seconds=1))
    async with app.run_test(size=(120, 5)) as pilot:
        banner = app.query_one(ConnectionBanner)
        assert not banner.display and not banner.offline
        url = "http://127.0.0.1:8765"

        banner.set_state(f"Cannot reach the server at {url}", 4.0, since)
        await pilot.pause()
        assert banner.display and banner.has_class("-offline")
        assert banner.text == (
            f"⚠ Cannot reach the server at {url} — retrying in 4 s · offline since 12:03:04"
            " · loaded history stays readable"
        )
        assert banner.retry_in_s == 4.0

        app.now += timedelta(seconds=1.5)  # the timer redraws the countdown by itself
        await wait_for(pilot, lambda: "retrying in 3 s" in banner.text, "the countdown")
        app.now += timedelta(seconds=10)
        await wait_for(pilot, lambda: "retrying now" in banner.text, "the try")
        assert banner.retry_in_s == 0.0

        banner.set_state(f"Cannot reach the server at {url}", 8.0, since)  # it failed again
        await pilot.pause()
        assert "retrying in 8 s · offline since 12:03:04" in banner.text

        banner.set_state(None, None, None)
        await pilot.pause()
        assert not banner.display and not banner.offline and banner.text == ""
        assert banner.retry_in_s is None

        banner.set_state("The server refused the request: 401 Unauthorized", None, None)
        await pilot.pause()
        assert banner.text == (
            "⚠ The server refused the request: 401 Unauthorized — retrying"
            " · loaded history stays readable"
        )
