"""Provides the tests of what ``codex-tui`` settles after its first frame (codex_tui.startup):
the frame is drawn before the settings are read, in the theme they will name; then the
settings apply (theme unremembered, keymap, notifications), the panes remembered for the
server come back, and the client connects; a start-up error exits 2 and loses no state."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from textual.widgets import Static

from codex_tui.app import CodexTuiApp
from codex_tui.config import NotifySettings, TuiSettings
from codex_tui.deferred_client import DeferredClient
from codex_tui.screens.compose import ComposeScreen
from codex_tui.startup import StartedUp, StartUpError, first_frame_theme
from codex_tui.state import PaneLayout, TuiState, load_layout, load_state, save_layout, save_state
from tests.conftest import ServerFactory, free_port
from tests.support.tui_helpers import SIZE, dashboard_ready, event_view, task_list, wait_for
from tests.tui.test_panes import create_tasks, grid

#: Bound of the waits on the start-up thread, in seconds.
THREAD_WAIT_S = 20.0


async def test_start_up_runs_after_the_first_frame_then_applies_and_connects(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    state = tmp_path / "state" / "tui-state.json"
    async with server.client() as client:
        tasks = await create_tasks(client, server, 2)
    order = (tasks[1].id, tasks[0].id)
    save_layout(state, server.url, PaneLayout(tasks=order, active=1))
    save_layout(state, "http://127.0.0.1:1", PaneLayout(tasks=("elsewhere",)))
    settings = TuiSettings(
        theme="codex-light",
        keymap={"new-task": "f2"},
        notify=NotifySettings(bell=False, desktop=False),
    )
    release = threading.Event()
    ran_in: list[str] = []

    def start_up() -> StartedUp:
        ran_in.append(threading.current_thread().name)
        assert release.wait(THREAD_WAIT_S), "the test never saw the first frame"
        return StartedUp(settings, server.url, server.token)

    app = CodexTuiApp(
        DeferredClient(),
        poll_interval_s=0.2,
        close_client=True,
        state_path=state,
        start_up=start_up,
        theme="codex-high-contrast",
    )
    async with app.run_test(size=SIZE) as pilot:
        # The dashboard is up, in the theme given for the first frame, while start-up waits.
        await wait_for(pilot, lambda: dashboard_ready(app) and ran_in, "the first frame")
        assert app.theme == "codex-high-contrast"
        assert app.settings is None and app.notifier is None
        assert not app.client.is_connected  # type: ignore[attr-defined]
        # The task list says what it waits for (a local server can take seconds to start).
        connecting = task_list(app).query_one("#task-list-connecting", Static)
        await wait_for(pilot, lambda: connecting.display, "the list to say it is connecting")
        assert str(connecting.render()) == "Connecting to the server…"
        release.set()

        def restored() -> bool:
            return tuple(pane.task_id for pane in grid(app).panes) == order

        await wait_for(pilot, restored, "the panes remembered for this server")
        await wait_for(pilot, lambda: len(task_list(app).tasks) == 2, "the first poll")
        assert not connecting.display
        assert ran_in and ran_in[0] != threading.main_thread().name
        assert app.settings is settings
        assert app.theme == "codex-light"
        assert app.notifier is not None and not app.notifier.settings.bell
        await pilot.press("f2")  # the keymap applies from now on
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose on f2")
    # The theme start-up applied is not a choice made in the app: not remembered.
    assert load_state(state).theme is None
    assert load_layout(state, "http://127.0.0.1:1") == PaneLayout(tasks=("elsewhere",))


async def test_the_hints_name_the_new_task_key_once_the_keymap_applies() -> None:
    release = threading.Event()
    settings = TuiSettings(keymap={"new-task": "ctrl+t"})

    def start_up() -> StartedUp:
        assert release.wait(THREAD_WAIT_S), "the test never saw the first frame"
        return StartedUp(settings, f"http://127.0.0.1:{free_port()}", "t")

    app = CodexTuiApp(DeferredClient(), poll_interval_s=5.0, close_client=True, start_up=start_up)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: dashboard_ready(app), "the first frame")
        empty = task_list(app).query_one("#task-list-empty", Static)

        def hints() -> tuple[str, str]:
            return str(empty.render()), event_view(app).transcript.placeholder or ""

        assert hints() == (
            "No tasks yet. Press n to start one.",
            "No task selected. Press n to start one.",
        )
        release.set()
        wanted = (
            "No tasks yet. Press ^t to start one.",
            "No task selected. Press ^t to start one.",
        )
        await wait_for(pilot, lambda: hints() == wanted, "the hints to name ^t")
        await pilot.press("ctrl+t")  # the key they name opens the compose screen
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")


async def test_a_start_up_error_exits_2_with_its_message_and_keeps_the_state(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state" / "tui-state.json"
    save_state(state, TuiState(theme="codex-light"))
    save_layout(state, "http://127.0.0.1:1", PaneLayout(tasks=("abc",), active=0))
    before = state.read_bytes()

    def start_up() -> StartedUp:
        raise StartUpError("invalid config.toml: notify.bell: Input should be a valid boolean")

    client = DeferredClient()
    app = CodexTuiApp(client, state_path=state, start_up=start_up, theme="codex-light")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_code == 2
    assert app.start_up_error == (
        "invalid config.toml: notify.bell: Input should be a valid boolean"
    )
    assert state.read_bytes() == before
    # Whatever still asks the client is told why there is no server.
    with pytest.raises(httpx.ConnectError, match="notify.bell"):
        await client.ready()


async def test_the_client_waits_for_its_server_and_never_blocks_the_loop() -> None:
    client = DeferredClient()
    assert client.base_url == "" and not client.is_connected
    with pytest.raises(httpx.ConnectError, match="still finding its server"):
        client.build()  # on the event loop's thread: refused at once, never a wait
    waiting = asyncio.ensure_future(client.ready())
    await asyncio.sleep(0)
    assert not waiting.done()
    client.connect("http://127.0.0.1:1/", "t")
    built = await waiting
    try:
        assert built.base_url == "http://127.0.0.1:1" == client.base_url
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("flag", "env", "remembered", "config", "expected"),
    [
        ("codex-dark", "codex-light", "codex-light", 'theme = "codex-light"\n', "codex-dark"),
        (None, "codex-light", "codex-dark", 'theme = "codex-dark"\n', "codex-light"),
        (None, None, "codex-high-contrast", 'theme = "codex-dark"\n', "codex-high-contrast"),
        (None, None, None, 'theme = "codex-light"\n', "codex-light"),
        (None, " ", None, 'theme = "codex-light"\n', "codex-light"),
        (None, None, None, 'theme = "unterminated\n', None),  # validated after the frame
        (None, None, None, "theme = 3\n", None),
        (None, None, None, None, None),
    ],
)
def test_the_first_frame_theme_follows_the_settings_precedence(
    tmp_path: Path,
    flag: str | None,
    env: str | None,
    remembered: str | None,
    config: str | None,
    expected: str | None,
) -> None:
    state = tmp_path / "tui-state.json"
    if remembered is not None:
        save_state(state, TuiState(theme=remembered))
    config_file = tmp_path / "config.toml"
    if config is not None:
        config_file.write_text(config)
    environ = {"CODEX_TUI_THEME": env} if env is not None else {}
    assert first_frame_theme(flag, config=config_file, state=state, environ=environ) == expected
