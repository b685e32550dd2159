"""Provides the tests of what starting ``codex-tui`` imports: the command module only click,
``--help`` nothing more, the TUI neither the server, the settings' pydantic nor the screens it
does not show, and a screen its module when it first opens (the cold-start goal in
benchmarks/tui.py).

Each check runs in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from codex_tui import cli, config
from server_client.models import Sandbox, TaskStatus
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

#: Never imported by the command module, nor by the TUI until it runs.
SERVER_SIDE = (
    "fastapi",
    "sqlalchemy",
    "uvicorn",
    "alembic",
    "server_client.server",
    "server_client.worker",
)
#: The TUI's screens that the first frame does not show.
HIDDEN_SCREENS = (
    "codex_tui.screens.compose",
    "codex_tui.screens.confirm",
    "codex_tui.screens.history",
    "codex_tui.screens.keys",
    "codex_tui.screens.pairing",
    "codex_tui.screens.workers",
)
#: Codex's typed events: their models are built when the first event is read, not before the
#: first frame.
TYPED_EVENTS = ("server_client.codex.events", "server_client.codex.items")
#: The SDK, its wire models and what they import: imported in a thread after the first frame
#: (codex_tui.deferred_client); httpx's package imports its command line and with it Rich's
#: syntax highlighting and pygments.
SDK = (
    "httpx",
    "httpx_sse",
    "server_client.client",
    "server_client.errors",
    "server_client.models",
    "server_client.retry",
    "server_client.streams",
    "rich.syntax",
    "pygments",
)


def run_python(code: str, home: Path) -> Any:
    """Run ``code`` in a fresh interpreter (in the repository, isolated ``CODEX_TUI_HOME``)
    and return the JSON it prints last."""
    env = {
        "CODEX_TUI_HOME": str(home),
        "CODEX_TUI_KEYRING": "0",
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def imported(modules: Iterable[str], names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are in ``modules``, counting submodules (``textual.app`` for
    ``textual``)."""
    loaded = set(modules)
    return [
        name for name in names if name in loaded or any(m.startswith(name + ".") for m in loaded)
    ]


def test_the_command_module_imports_only_click(tmp_path: Path) -> None:
    modules = run_python(
        """
        import json, sys
        import codex_tui.cli
        print(json.dumps(sorted(sys.modules)))
        """,
        tmp_path,
    )
    heavy = ("textual", "rich", "pydantic", "pydantic_settings", "httpx", "asyncio")
    assert imported(modules, (*heavy, *SERVER_SIDE, "codex_tui.config")) == []
    assert "click" in modules


@pytest.mark.parametrize("argv", [["--help"], ["submit", "--help"], ["admin", "user", "--help"]])
def test_help_imports_nothing_but_the_command(tmp_path: Path, argv: list[str]) -> None:
    result = run_python(
        f"""
        import json, sys
        from click.testing import CliRunner
        from codex_tui.cli import main
        result = CliRunner().invoke(main, {argv!r})
        print(json.dumps({{"code": result.exit_code, "modules": sorted(sys.modules)}}))
        """,
        tmp_path,
    )
    assert result["code"] == 0
    heavy = ("textual", "pydantic", "httpx", "codex_tui.config", "server_client.models")
    assert imported(result["modules"], (*heavy, *SERVER_SIDE)) == []


def test_the_tui_starts_without_the_server_side_or_hidden_screens(tmp_path: Path) -> None:
    # The command with no subcommand, up to the moment the app would take over the terminal.
    port = free_port()
    modules = run_python(
        f"""
        import json, sys
        from codex_tui.cli import main

        def run(app):
            print(json.dumps(sorted(sys.modules)))

        import codex_tui.app
        codex_tui.app.CodexTuiApp.run = run
        main(["--server", "http://127.0.0.1:{port}", "--token", "t"], standalone_mode=False)
        """,
        tmp_path,
    )
    assert "codex_tui.screens.dashboard" in modules
    # The settings are read after the first frame (codex_tui.startup): no pydantic before it.
    settings = ("pydantic", "pydantic_settings", "codex_tui.config", "codex_tui.launcher")
    hidden = (
        *SERVER_SIDE,
        *HIDDEN_SCREENS,
        *TYPED_EVENTS,
        *SDK,
        *settings,
        "codex_tui.events.plain",
    )
    assert imported(modules, hidden) == []


def test_the_sdk_is_built_in_a_thread_after_the_first_frame(tmp_path: Path) -> None:
    # The app as codex-tui starts it: with a DeferredClient, against a server that is down.
    port = free_port()
    result = run_python(
        f"""
        import asyncio, json, threading
        from codex_tui.app import CodexTuiApp
        from codex_tui.deferred_client import DeferredClient

        built_in = []
        build = DeferredClient.build

        def recording_build(self):
            if not self.is_built:
                built_in.append(threading.current_thread().name)
            return build(self)

        DeferredClient.build = recording_build

        async def main():
            client = DeferredClient("http://127.0.0.1:{port}", "t")
            app = CodexTuiApp(client, poll_interval_s=60, close_client=True)
            async with app.run_test(size=(80, 24)) as pilot:
                for _ in range(400):
                    await pilot.pause(0.05)
                    if app.connection_error:
                        break
                error = app.connection_error
            main = threading.main_thread().name
            print(json.dumps({{"built_in": built_in, "main": main, "error": error}}))

        asyncio.run(main())
        """,
        tmp_path,
    )
    # Built off the event loop's thread, and then used: the first poll found no server.
    assert result["built_in"] and result["main"] not in result["built_in"]
    assert "Cannot reach the server" in (result["error"] or "")


def test_screens_are_imported_when_first_opened_and_still_listed(tmp_path: Path) -> None:
    port = free_port()
    result = run_python(
        f"""
        import asyncio, json, sys
        from codex_tui.app import CodexTuiApp
        from codex_tui.commands import binding_sections
        from codex_tui.config import TuiSettings
        from server_client.client import CodexTuiClient

        async def main():
            out = {{}}
            settings = TuiSettings(keymap={{"submit": "ctrl+s", "new-tsak": "f2"}})
            async with CodexTuiClient("http://127.0.0.1:{port}", "t") as client:
                app = CodexTuiApp(client, poll_interval_s=60, settings=settings)
                async with app.run_test(size=(80, 24)) as pilot:
                    out["at_start"] = sorted(sys.modules)
                    await pilot.pause()
                    await pilot.press("h")
                    await pilot.pause()
                    out["history"] = type(app.screen).__name__
                    out["after_h"] = sorted(sys.modules)
                    out["sections"] = [title for title, _ in binding_sections(app)]
                    out["warnings"] = [n.message for n in app._notifications]
            print(json.dumps(out))

        asyncio.run(main())
        """,
        tmp_path,
    )
    # The modules of the screens not shown are not imported at start ...
    assert imported(result["at_start"], HIDDEN_SCREENS) == []
    # ... a screen's is when it opens ...
    assert result["history"] == "HistoryScreen"
    assert "codex_tui.screens.history" in result["after_h"]
    # ... and the keys screen and the [keymap] check know the screens not opened yet.
    assert {"Compose", "Workers", "Pairing", "Confirm"} <= set(result["sections"])
    [warning] = [text for text in result["warnings"] if "[keymap]" in text]
    assert "new-tsak" in warning and "submit," not in warning.split(":")[1]


def test_the_spelled_out_choices_match_their_sources() -> None:
    assert cli.DEFAULT_PORT == config.DEFAULT_PORT
    assert cli.SANDBOXES == tuple(sandbox.value for sandbox in Sandbox)
    assert cli.DEFAULT_SANDBOX == Sandbox.WORKSPACE_WRITE.value
    assert cli.TASK_STATUSES == tuple(status.value for status in TaskStatus)


def test_events_read_after_the_tui_started_render_with_their_own_models(tmp_path: Path) -> None:
    """The TUI imports the events layer before codex's models exist; the first event read
    afterwards (through ``Event.codex``) must come out as the very classes the renderers
    match on, not as a second copy of them (which renders nothing)."""
    result = run_python(
        """
        import json, sys
        import codex_tui.app, codex_tui.screens.dashboard
        from datetime import UTC, datetime
        from codex_tui.events.pane import RenderState, render_event
        from server_client.models import Event, EventKind

        loaded_before = "server_client.codex.events" in sys.modules
        data = {"type": "thread.started", "thread_id": "t-1"}
        event = Event(seq=1, ts=datetime.now(UTC), kind=EventKind.CODEX, data=data)
        shown = [str(r) for r in render_event(event, RenderState())]
        print(json.dumps({"loaded_before": loaded_before, "shown": shown}))
        """,
        tmp_path,
    )
    assert result == {"loaded_before": False, "shown": ["thread t-1"]}
