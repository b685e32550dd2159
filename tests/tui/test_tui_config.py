"""Provides the tests of the TUI's configuration: settings precedence (defaults, config.toml,
environment, flags, remembered theme), the keymap, startup warnings, themes, NO_COLOR, the
keys screen, the command palette and the finished-task announcement.

Every test runs with ``CODEX_TUI_HOME`` in a temporary folder and no other ``CODEX_TUI_*``
variable, so nothing reads or writes the user's real files. The app tests use a client whose
server does not answer: none of what they check needs one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from textual.color import Color
from textual.command import Command, CommandList, CommandPalette
from textual.pilot import Pilot

from codex_tui.app import CodexTuiApp
from codex_tui.cli import main
from codex_tui.commands import binding_commands, binding_sections, known_binding_ids
from codex_tui.config import (
    ConfigError,
    NotifySettings,
    TuiSettings,
    config_path,
    load_tui_settings,
)
from codex_tui.screens.compose import ComposeScreen
from codex_tui.screens.dashboard import DashboardScreen
from codex_tui.screens.keys import KeysModal
from codex_tui.state import (
    STATE_FILE_NAME,
    TuiState,
    default_state_path,
    load_state,
    save_state,
)
from server_client.client import CodexTuiClient
from server_client.models import Sandbox, Task, TaskStatus
from tests.conftest import free_port
from tests.support.tui_helpers import SIZE, type_text, wait_for
from themes import DEFAULT_THEME, THEME_NAMES, THEMES


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty CODEX_TUI_HOME; no other CODEX_TUI_* variable, no NO_COLOR."""
    for name in list(os.environ):
        if name.startswith("CODEX_TUI_") or name in {"NO_COLOR", "TEXTUAL_THEME"}:
            monkeypatch.delenv(name)
    root = tmp_path / "home"
    monkeypatch.setenv("CODEX_TUI_HOME", str(root))
    yield root


def write_config(text: str) -> Path:
    """Write ``config.toml`` in the (temporary) config folder."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CONFIG = """
theme = "codex-light"
server = "http://devbox:8765"

[keymap]
new-task = "ctrl+n"

[notify]
bell = false
desktop = true
"""


# -- settings precedence --------------------------------------------------------------------


def test_defaults_when_nothing_is_configured() -> None:
    settings = load_tui_settings()
    assert settings == TuiSettings.defaults()
    assert settings.theme is None
    assert settings.keymap == {}
    assert settings.notify == NotifySettings(toast=True, bell=True, desktop="auto")


def test_config_toml_is_read() -> None:
    write_config(CONFIG)
    settings = load_tui_settings()
    assert settings.theme == "codex-light"
    assert settings.keymap == {"new-task": "ctrl+n"}
    assert settings.notify == NotifySettings(toast=True, bell=False, desktop=True)


def test_environment_overrides_config_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(CONFIG)
    monkeypatch.setenv("CODEX_TUI_THEME", "codex-high-contrast")
    monkeypatch.setenv("CODEX_TUI_NOTIFY__BELL", "1")
    monkeypatch.setenv("CODEX_TUI_NOTIFY__DESKTOP", "auto")
    monkeypatch.setenv("CODEX_TUI_KEYMAP__CANCEL_TASK", "ctrl+x, delete")
    settings = load_tui_settings()
    assert settings.theme == "codex-high-contrast"
    assert settings.notify == NotifySettings(toast=True, bell=True, desktop="auto")
    # Tables merge: the file's new-task stays, the environment adds cancel-task.
    assert settings.keymap == {"new-task": "ctrl+n", "cancel-task": "ctrl+x,delete"}


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(CONFIG)
    monkeypatch.setenv("CODEX_TUI_THEME", "codex-high-contrast")
    monkeypatch.setenv("CODEX_TUI_NOTIFY__BELL", "true")
    monkeypatch.setenv("CODEX_TUI_NOTIFY__DESKTOP", "true")
    settings = load_tui_settings(theme="codex-dark", bell=False, desktop=False)
    assert settings.theme == "codex-dark"
    assert settings.notify == NotifySettings(toast=True, bell=False, desktop=False)


def test_theme_precedence_flag_env_remembered_file_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_tui_settings().theme is None  # the app then uses codex-dark
    write_config('theme = "codex-light"\n')
    assert load_tui_settings().theme == "codex-light"
    save_state(default_state_path(), TuiState(theme="codex-high-contrast"))
    assert load_tui_settings().theme == "codex-high-contrast"  # remembered beats the file
    monkeypatch.setenv("CODEX_TUI_THEME", "codex-dark")
    assert load_tui_settings().theme == "codex-dark"  # the environment beats remembered
    assert load_tui_settings(theme="codex-light").theme == "codex-light"  # the flag beats all


def test_state_file_is_atomic_json_that_keeps_unknown_keys(home: Path) -> None:
    path = default_state_path()
    assert path == home / "state" / STATE_FILE_NAME
    assert load_state(path) == TuiState()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"theme": "codex-dark", "later": [1, 2]}))
    save_state(path, TuiState(theme="codex-light"))
    assert json.loads(path.read_text()) == {"theme": "codex-light", "later": [1, 2]}
    assert load_state(path) == TuiState(theme="codex-light")
    assert sorted(p.name for p in path.parent.iterdir()) == [STATE_FILE_NAME]  # no temp left


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"theme": 7}', '{"theme": ""}', ""])
def test_a_corrupt_state_file_is_ignored(content: str) -> None:
    write_config('theme = "codex-light"\n')
    path = default_state_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert load_state(path) == TuiState()
    assert load_tui_settings().theme == "codex-light"
    save_state(path, TuiState(theme="codex-dark"))  # and it is replaced on the next choice
    assert load_state(path) == TuiState(theme="codex-dark")


# -- invalid settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('theme = "unterminated\n', "is not valid TOML"),
        ("[notify]\nbell = 'loud'\n", "notify.bell: Input should be a valid boolean"),
        ("[notify]\nbel = true\n", "notify.bel: Extra inputs are not permitted"),
        ("[keymap]\nnew-task = 3\n", "keymap.new-task: Input should be a valid string"),
        ('local_port = "abc"\n', "local_port: Input should be a valid integer"),
    ],
)
def test_invalid_config_toml_is_a_clear_cli_error(content: str, problem: str) -> None:
    path = write_config(content)
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr
    assert problem in result.stderr
    assert result.stderr.startswith("codex-tui: ")
    assert "Traceback" not in result.output


def test_a_server_that_cannot_be_reached_without_a_token_is_a_clear_cli_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Settled after the first frame (codex_tui.startup), and still a message and exit 2.
    monkeypatch.setenv("CODEX_TUI_KEYRING", "0")
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["--server", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"codex-tui: cannot connect to {url} (named by --server)")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "value"), [("CODEX_TUI_NOTIFY__DESKTOP", "sometimes"), ("CODEX_TUI_KEYMAP", "n=x")]
)
def test_an_invalid_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"environment variable {name}: "):
        load_tui_settings()


# -- the app --------------------------------------------------------------------------------


def offline_client() -> CodexTuiClient:
    """A client of a server that does not answer (the tests here need none)."""
    return CodexTuiClient(f"http://127.0.0.1:{free_port()}", "no-token")


@asynccontextmanager
async def app_running(**kwargs: Any) -> AsyncIterator[tuple[CodexTuiApp, Pilot[None]]]:
    """The app at 80×24 on an offline client, its dashboard mounted."""
    async with offline_client() as client:
        app = CodexTuiApp(client, poll_interval_s=5.0, **kwargs)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "dashboard")
            yield app, pilot


def warnings(app: CodexTuiApp) -> list[str]:
    """The messages of the settings warnings the app showed."""
    return [n.message for n in app._notifications if n.title == "Settings"]


async def test_keymap_remap_changes_the_key_that_opens_compose() -> None:
    settings = TuiSettings(keymap={"new-task": "ctrl+n"})
    async with app_running(settings=settings) as (app, pilot):
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)  # n no longer opens it
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen), "compose")
        assert warnings(app) == []


async def test_unknown_binding_id_and_theme_warn_at_start() -> None:
    settings = TuiSettings(theme="solarized", keymap={"new-tsak": "ctrl+n", "quit": "ctrl+q"})
    async with app_running(settings=settings) as (app, pilot):
        assert app.theme == DEFAULT_THEME
        # The settings are checked once the first frame is drawn.
        await wait_for(pilot, lambda: len(warnings(app)) == 2, "the settings warnings")
        [theme_warning, keymap_warning] = warnings(app)
        assert "'solarized'" in theme_warning
        assert all(name in theme_warning for name in THEME_NAMES)
        assert "new-tsak" in keymap_warning and "quit," not in keymap_warning.split(":")[1]
        assert "new-task" in keymap_warning and "show-keys" in keymap_warning
        await pilot.press("ctrl+q")  # the valid part of the keymap still applies
        await wait_for(pilot, lambda: not app.is_running, "the app to quit")


@pytest.mark.parametrize("name", THEME_NAMES)
async def test_each_theme_applies(name: str) -> None:
    theme = next(theme for theme in THEMES if theme.name == name)
    async with app_running(settings=TuiSettings(theme=name)) as (app, pilot):
        assert app.theme == name
        assert app.has_class(f"-theme-{name}")
        assert app.screen.styles.background == Color.parse(theme.background or "")
        assert app.theme_variables["foreground"].upper() == (theme.foreground or "").upper()
        assert warnings(app) == []


def _luminance(color: Color) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.r) + 0.7152 * channel(color.g) + 0.0722 * channel(color.b)


def contrast(text: str, background: str) -> float:
    """WCAG contrast ratio of ``text`` (alpha blended) on ``background``."""
    back = Color.parse(background)
    front = back.blend(Color.parse(text), Color.parse(text).a, alpha=1.0)
    high, low = sorted((_luminance(front), _luminance(back)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(("name", "minimum"), [("codex-light", 4.5), ("codex-high-contrast", 7)])
def test_theme_text_colours_are_readable(name: str, minimum: float) -> None:
    theme = next(theme for theme in THEMES if theme.name == name)
    variables = {**theme.to_color_system().generate(), **theme.variables}
    texts = ["foreground", "foreground-muted", "text-muted", "text-disabled", "primary"]
    texts += ["accent", "success", "warning", "error"]
    for background in ("background", "surface", "panel"):
        for text in texts:
            ratio = contrast(variables[text], variables[background])
            assert ratio >= minimum, f"{name}: {text} on {background} is {ratio:.2f}:1"


def test_high_contrast_status_colours_are_distinct() -> None:
    theme = next(theme for theme in THEMES if theme.name == "codex-high-contrast")
    assert theme.background == "#000000" and theme.foreground == "#FFFFFF"
    roles = [theme.success, theme.warning, theme.error, theme.accent, theme.primary]
    colors = [Color.parse(role or "") for role in roles]
    for index, first in enumerate(colors):
        for second in colors[index + 1 :]:
            assert abs(first.r - second.r) + abs(first.g - second.g) + abs(first.b - second.b) > 150


async def test_only_codex_themes_are_offered() -> None:
    async with app_running() as (app, pilot):
        assert sorted(app.available_themes) == sorted(THEME_NAMES)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert [f"Theme: {name}" for name in THEME_NAMES] == [
            title for title in titles if title.startswith("Theme: ")
        ]


def best_hit(commands: CommandList) -> str | None:
    """The text of the highlighted command (the one Enter runs)."""
    if commands.option_count == 0 or commands.highlighted is None:
        return None
    option = commands.get_option_at_index(commands.highlighted)
    return str(option.hit.text) if isinstance(option, Command) else None


async def run_palette_command(pilot: Pilot[None], app: CodexTuiApp, query: str) -> None:
    """Open the command palette, search ``query``, and run the best hit (it must be ``query``)."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
    palette = app.screen
    await type_text(pilot, query)
    commands = palette.query_one(CommandList)

    await wait_for(pilot, lambda: best_hit(commands) == query, f"{query!r} as the best hit")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "palette closed")


async def test_a_theme_chosen_in_the_palette_is_remembered_across_app_instances() -> None:
    write_config('theme = "codex-dark"\n')
    state = default_state_path()
    async with app_running(settings=load_tui_settings(), state_path=state) as (app, pilot):
        assert app.theme == "codex-dark"
        assert not state.exists()  # starting is not choosing
        await run_palette_command(pilot, app, "Theme: codex-high-contrast")
        await wait_for(pilot, lambda: app.theme == "codex-high-contrast", "the new theme")
        assert load_state(state).theme == "codex-high-contrast"
    assert config_path().read_text() == 'theme = "codex-dark"\n'  # config.toml untouched

    async with app_running(settings=load_tui_settings(), state_path=state) as (app, pilot):
        assert app.theme == "codex-high-contrast"
        app.search_themes()  # Textual's picker, limited to our themes, is remembered too
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the theme picker")
        commands = app.screen.query_one(CommandList)
        await wait_for(pilot, lambda: commands.option_count == len(THEME_NAMES), "themes")
        await type_text(pilot, "codex-light")
        await wait_for(
            pilot,
            lambda: (
                commands.highlighted is not None
                and str(commands.get_option_at_index(commands.highlighted).prompt) == "codex-light"
            ),
            "codex-light as the best hit",
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "codex-light", "the picked theme")
        assert load_state(state).theme == "codex-light"

    async with app_running(settings=load_tui_settings(), state_path=state) as (app, _pilot):
        assert app.theme == "codex-light"


async def test_without_a_state_path_nothing_is_written(home: Path) -> None:
    async with app_running() as (app, pilot):
        app.theme = "codex-light"
        await pilot.pause()
    assert not (home / "state").exists()


NO_COLOR_CHROME = {"#ff5f57", "#febc2e", "#28c840", "#c5c8c6"}
"""The SVG export's window decoration (not app output)."""


def screen_colours(app: CodexTuiApp) -> set[str]:
    """The colours in an SVG screenshot of the app, less the window decoration."""
    svg = app.export_screenshot()
    return {c.lower() for c in re.findall(r"#[0-9a-fA-F]{6}\b", svg)} - NO_COLOR_CHROME


def is_grey(colour: str) -> bool:
    return colour[1:3] == colour[3:5] == colour[5:7]


@pytest.mark.parametrize("name", THEME_NAMES)
async def test_no_color_makes_the_app_monochrome(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    async with app_running(settings=TuiSettings(theme=name)) as (app, pilot):
        assert not app.no_color
        assert any(not is_grey(colour) for colour in screen_colours(app))  # the control

    monkeypatch.setenv("NO_COLOR", "1")
    async with app_running(settings=TuiSettings(theme=name)) as (app, pilot):
        assert app.no_color
        app.announce_finished(make_task(TaskStatus.FAILED))  # a red toast, in colour
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysModal), "the keys modal")
        await pilot.pause()
        colours = screen_colours(app)
        assert colours and all(is_grey(colour) for colour in colours), sorted(colours)


async def test_question_mark_opens_the_keys_modal_listing_ids() -> None:
    settings = TuiSettings(keymap={"new-task": "ctrl+n,f2"})
    async with app_running(settings=settings) as (app, pilot):
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysModal), "the keys modal")
        modal = app.screen
        assert isinstance(modal, KeysModal)
        rows = {row[3]: row for row in modal.rows if row[3]}
        assert {"quit", "show-keys", "new-task", "workers", "submit", "close-keys"} <= set(rows)
        assert rows["new-task"][:2] == ("Dashboard", "^n, f2")  # keys after the keymap
        assert rows["show-keys"][1:3] == ("?", "Keys")
        assert {row[0] for row in modal.rows} >= {"Global", "Dashboard", "Compose", "Workers"}
        # Fits 80×24, and shows ids.
        dialog = modal.query_one("#keys-dialog")
        assert dialog.region.right <= SIZE[0] and dialog.region.bottom <= SIZE[1]
        assert "show-keys" in app.export_screenshot()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "closed")


async def test_binding_sections_cover_every_known_id() -> None:
    async with app_running() as (app, _pilot):
        listed = {b.id for _title, bindings in binding_sections(app) for b in bindings if b.id}
        assert listed == known_binding_ids(app)
        titles = [title for title, _bindings in binding_sections(app)]
        assert titles[:2] == ["Global", "Dashboard"]
        assert len(titles) == len(set(titles))


async def test_the_palette_has_a_command_per_binding() -> None:
    async with app_running() as (app, pilot):
        screen = app.screen
        commands = {command.title: command for command in app.get_system_commands(screen)}
        expected = [
            active.binding
            for active in screen.active_bindings.values()
            if active.binding.id and active.binding.description
        ]
        assert {"quit", "show-keys", "new-task", "workers"} <= {b.id for b in expected}
        for binding in expected:
            assert binding.description in commands, binding
            assert binding.id is not None and binding.id in commands[binding.description].help
        assert "? · show-keys" in commands["Keys"].help
        # Bindings of codex-tui widgets that are not focused are there too.
        ours = {c.help for c in binding_commands(app, screen)}
        assert any("follow-tail" in text for text in ours)

        workers = next(b for b in expected if b.id == "workers")
        await run_palette_command(pilot, app, workers.description)
        await wait_for(
            pilot, lambda: type(app.screen).__name__ == "WorkersScreen", "the workers screen"
        )


async def test_palette_command_for_a_remapped_binding_shows_the_new_key() -> None:
    settings = TuiSettings(keymap={"show-keys": "f1"})
    async with app_running(settings=settings) as (app, pilot):
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert commands["Keys"].help.startswith("f1 · show-keys")
        await run_palette_command(pilot, app, "Keys")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysModal), "the keys modal")


def make_task(status: TaskStatus) -> Task:
    """A finished task."""
    return Task(
        id="t-1",
        prompt="add a test for [bold]parse()[/bold]",
        workdir=None,
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=status,
        created_at=datetime(2026, 11, 21, 6, 0, tzinfo=UTC),
        error="turn failed",
    )


@pytest.mark.parametrize(
    ("status", "severity"),
    [
        (TaskStatus.COMPLETED, "information"),
        (TaskStatus.FAILED, "error"),
        (TaskStatus.CANCELED, "warning"),
    ],
)
async def test_announce_finished_shows_a_toast(status: TaskStatus, severity: str) -> None:
    async with app_running() as (app, pilot):
        app.announce_finished(make_task(status))
        await pilot.pause()
        [toast] = [n for n in app._notifications if n.title.endswith(f"Task {status.value}")]
        assert toast.severity == severity
        assert toast.message.startswith("add a test for [bold]parse()[/bold]")  # not markup
        assert not toast.markup


async def test_toasts_can_be_switched_off() -> None:
    settings = TuiSettings(notify=NotifySettings(toast=False, bell=False, desktop=False))
    async with app_running(settings=settings) as (app, pilot):
        app.announce_finished(make_task(TaskStatus.COMPLETED))
        await pilot.pause()
        assert not [n for n in app._notifications if "Task" in n.title]
