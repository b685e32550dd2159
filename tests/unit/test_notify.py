"""Provides the tests of the finished-task notifier: each switch, the exact OSC 9 bytes (also
inside tmux), control characters stripped, the length cap, and the desktop "auto" rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from codex_tui.config import NotifySettings, desktop_supported
from codex_tui.notify import DESKTOP_TEXT_LIMIT, Notifier, Severity, clean_text, osc9
from server_client.models import Sandbox, Task, TaskStatus


def make_task(status: TaskStatus, prompt: str = "fix the build", error: str | None = None) -> Task:
    """A task as the server reports it."""
    return Task(
        id="t-1",
        prompt=prompt,
        workdir="/srv/app",
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=status,
        created_at=datetime(2026, 11, 21, 6, 0, tzinfo=UTC),
        error=error,
    )


@dataclass
class Recorder:
    """Records what a Notifier writes, rings and toasts."""

    written: list[str] = field(default_factory=list)
    bells: int = 0
    toasts: list[tuple[str, str, Severity]] = field(default_factory=list)

    def write(self, text: str) -> None:
        self.written.append(text)

    def bell(self) -> None:
        self.bells += 1

    def toast(self, message: str, *, title: str, severity: Severity) -> None:
        self.toasts.append((message, title, severity))

    def notifier(self, settings: NotifySettings, environ: dict[str, str]) -> Notifier:
        return Notifier(
            settings, write=self.write, bell=self.bell, toast=self.toast, environ=environ
        )


# -- the OSC 9 sequence ---------------------------------------------------------------------


def test_osc9_bytes_are_exact() -> None:
    assert osc9("codex-tui: task completed: fix it") == (
        "\x1b]9;codex-tui: task completed: fix it\x07"
    )


def test_osc9_in_tmux_is_wrapped_in_passthrough_with_escapes_doubled() -> None:
    assert osc9("done", tmux=True) == "\x1bPtmux;\x1b\x1b]9;done\x07\x1b\\"


def test_control_characters_are_stripped() -> None:
    # ESC, BEL, the 8-bit OSC and ST (C1), DEL, and newlines can neither end the sequence
    # early nor start another one.
    hostile = "a\x1b]0;evil\x07b\x9d2;x\x9cc\x7fd\ne\tf\x00g"
    text = clean_text(hostile)
    assert text == "a ]0;evil b 2;x c d e f g"
    sequence = osc9(hostile)
    assert sequence == f"\x1b]9;{text}\x07"
    body = sequence[len("\x1b]9;") : -1]
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in body)


def test_long_text_is_cut_to_the_limit() -> None:
    text = clean_text("x" * 1000)
    assert len(text) == DESKTOP_TEXT_LIMIT == 200
    assert text.endswith("…")
    assert clean_text("  short \n text ") == "short text"


# -- the switches ---------------------------------------------------------------------------


def test_a_task_on_the_screen_gets_the_bell_and_the_desktop_notification_but_no_toast() -> None:
    recorder = Recorder()
    notifier = recorder.notifier(NotifySettings(toast=True, bell=True, desktop=True), {})
    notifier.task_finished(make_task(TaskStatus.COMPLETED), toast=False)
    assert recorder.toasts == []
    assert recorder.bells == 1
    assert recorder.written == ["\x1b]9;codex-tui: task completed: fix the build\x07"]


@pytest.mark.parametrize("toast", [True, False])
@pytest.mark.parametrize("bell", [True, False])
@pytest.mark.parametrize("desktop", [True, False])
def test_each_channel_has_its_own_switch(toast: bool, bell: bool, desktop: bool) -> None:
    recorder = Recorder()
    notifier = recorder.notifier(NotifySettings(toast=toast, bell=bell, desktop=desktop), {})
    notifier.task_finished(make_task(TaskStatus.COMPLETED))
    assert len(recorder.toasts) == int(toast)
    assert recorder.bells == int(bell)
    assert recorder.written == (
        ["\x1b]9;codex-tui: task completed: fix the build\x07"] if desktop else []
    )


@pytest.mark.parametrize(
    ("status", "severity"),
    [
        (TaskStatus.COMPLETED, "information"),
        (TaskStatus.FAILED, "error"),
        (TaskStatus.LOST, "error"),
        (TaskStatus.CANCELED, "warning"),
    ],
)
def test_toast_severity_and_text_follow_the_status(status: TaskStatus, severity: str) -> None:
    recorder = Recorder()
    notifier = recorder.notifier(NotifySettings(bell=False, desktop=False), {})
    notifier.task_finished(make_task(status, prompt="add\na [b]test[/b]", error="turn failed"))
    [(message, title, got)] = recorder.toasts
    assert got == severity
    assert title.endswith(f"Task {status.value}")
    # The prompt on one line, kept verbatim (the app shows toasts without markup).
    assert message.startswith("add a [b]test[/b]")
    assert ("turn failed" in message) == (severity == "error")


@pytest.mark.parametrize("toast", [True, False])
@pytest.mark.parametrize("bell", [True, False])
@pytest.mark.parametrize("desktop", [True, False])
def test_an_approval_is_announced_on_each_channel_switched_on(
    toast: bool, bell: bool, desktop: bool
) -> None:
    recorder = Recorder()
    notifier = recorder.notifier(NotifySettings(toast=toast, bell=bell, desktop=desktop), {})
    notifier.approval_needed(make_task(TaskStatus.WAITING))
    assert recorder.toasts == ([("fix the build", "! Approval needed", "warning")] if toast else [])
    assert recorder.bells == int(bell)
    assert recorder.written == (
        ["\x1b]9;codex-tui: approval needed: fix the build\x07"] if desktop else []
    )


@pytest.mark.parametrize(
    "status", [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.IDLE]
)
def test_a_task_that_has_not_ended_is_not_announced(status: TaskStatus) -> None:
    recorder = Recorder()
    recorder.notifier(NotifySettings(desktop=True), {}).task_finished(make_task(status))
    assert recorder == Recorder()


def test_desktop_notification_inside_tmux_is_wrapped() -> None:
    recorder = Recorder()
    settings = NotifySettings(toast=False, bell=False, desktop=True)
    recorder.notifier(settings, {"TMUX": "/tmp/tmux-1000/default,1,0"}).task_finished(
        make_task(TaskStatus.FAILED, prompt="p")
    )
    assert recorder.written == ["\x1bPtmux;\x1b\x1b]9;codex-tui: task failed: p\x07\x1b\\"]


# -- desktop = "auto" -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "supported"),
    [
        ({}, False),
        ({"TERM": "xterm-256color"}, False),
        ({"TERM_PROGRAM": "Apple_Terminal"}, False),
        ({"TERM_PROGRAM": "tmux", "TERM": "tmux-256color"}, False),
        ({"TERM_PROGRAM": "iTerm.app"}, True),
        ({"TERM_PROGRAM": "WezTerm"}, True),
        ({"TERM_PROGRAM": "ghostty"}, True),
        ({"LC_TERMINAL": "iTerm2"}, True),
        ({"TERM": "xterm-kitty"}, True),
        ({"TERM": "foot-extra"}, True),
        ({"TERM": "wezterm"}, True),
        ({"TERM": "xterm-ghostty"}, True),
        ({"WT_SESSION": "4b1c"}, False),  # Windows Terminal shows no OSC 9
        ({"KITTY_WINDOW_ID": "1"}, True),
    ],
)
def test_desktop_auto_rule(environ: dict[str, str], supported: bool) -> None:
    assert desktop_supported(environ) is supported
    recorder = Recorder()
    notifier = recorder.notifier(NotifySettings(toast=False, bell=False), environ)
    assert notifier.desktop is supported
    notifier.task_finished(make_task(TaskStatus.COMPLETED))
    assert bool(recorder.written) is supported
