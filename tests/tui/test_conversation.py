"""Provides Pilot tests of a pane following a conversation: deltas that build a live item its
``item.completed`` replaces exactly once (live, replayed in one burst, resumed mid-item, and
paged), approval cards and the bar of answer keys, the reply box, token usage in the border,
and the task list's *Needs attention* and *Ready for a reply* groups.

The events are handed to the pane as its stream would hand them (``EventView._ingest``), on a
fake monotonic clock and a frozen UTC clock, so every frame is deterministic.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.dom import DOMNode
from textual.widgets import Input

from codex_tui.events.export import markdown_event
from codex_tui.events.view import CONVERSATION_KEYS, MAX_TEXT_CHARS, LiveItem
from codex_tui.widgets.event_view import EventView
from server_client.client import CodexTuiClient
from server_client.models import (
    Approval,
    ApprovalDecision,
    ApprovalKind,
    ApprovalState,
    Event,
    EventKind,
    Runtime,
    Sandbox,
    Task,
    TaskStatus,
    UserInputAnswers,
)
from tests.support.tui_helpers import SIZE, FrozenClock, wait_for
from tests.tui.test_transcript import BurstClient, FakeClock
from themes import APP_CSS_PATH

TS = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def codex_event(seq: int, data: dict[str, Any], ts: datetime = TS) -> Event:
    """A codex event."""
    return Event(seq=seq, ts=ts, kind=EventKind.CODEX, data=data)


def status_event(seq: int, data: dict[str, Any]) -> Event:
    """A status event."""
    return Event(seq=seq, ts=TS, kind=EventKind.STATUS, data=data)


def conversation_task(status: TaskStatus = TaskStatus.RUNNING) -> Task:
    """A conversation (app-server) task record, as the list would hand it to a pane."""
    return Task(
        id="task",
        prompt="Tidy the build directory",
        workdir="/srv/app",
        model=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        status=status,
        created_at=TS,
        runtime=Runtime.APP_SERVER,
    )


def delta(seq: int, item_id: str, text: str, stream: str = "agent_message") -> Event:
    """An ``item.delta`` event."""
    return codex_event(
        seq, {"type": "item.delta", "item_id": item_id, "stream": stream, "delta": text}
    )


def item(seq: int, phase: str, body: dict[str, Any], ts: datetime = TS) -> Event:
    """An ``item.<phase>`` event with an app-server (camelCase) item."""
    return codex_event(seq, {"type": f"item.{phase}", "item": body}, ts)


COMMAND = "pytest -q tests/test_sync.py"
MESSAGE = "All **green**: the flaky test waited on a lock."

#: A turn as an app-server worker stores it: the user's message, a command whose output
#: streams (codex left out its first chunk), then the agent's message streamed in pieces.
TURN: list[Event] = [
    codex_event(1, {"type": "turn.started", "turn_id": "t1"}),
    item(
        2,
        "completed",
        {
            "id": "u1",
            "type": "userMessage",
            "content": [{"type": "text", "text": "fix the flaky test"}],
        },
    ),
    item(
        3,
        "started",
        {"id": "c1", "type": "commandExecution", "command": COMMAND, "status": "inProgress"},
    ),
    delta(4, "c1", "collected 12 items\n", "command_output"),
    delta(5, "c1", "............\n", "command_output"),
    item(
        6,
        "completed",
        {
            "id": "c1",
            "type": "commandExecution",
            "command": COMMAND,
            "status": "completed",
            "exitCode": 0,
            "aggregatedOutput": "platform linux\ncollected 12 items\n............\n12 passed\n",
        },
        TS + timedelta(seconds=4),
    ),
    item(7, "started", {"id": "m1", "type": "agentMessage", "text": ""}),
    delta(8, "m1", "All **gr"),
    delta(9, "m1", "een**: the flaky"),
    item(10, "completed", {"id": "m1", "type": "agentMessage", "text": MESSAGE}),
    codex_event(
        11,
        {
            "type": "usage.updated",
            "token_usage": {
                "total": {"inputTokens": 30000, "outputTokens": 1200, "totalTokens": 31200},
                "last": {"totalTokens": 12400},
                "modelContextWindow": 40000,
            },
        },
    ),
]


class PaneHost(App[None]):
    """A bare app with one :class:`EventView` on fake clocks and a given client."""

    CSS_PATH = APP_CSS_PATH

    def __init__(self, client: CodexTuiClient, now: FrozenClock | None = None) -> None:
        super().__init__()
        self.client = client
        self.clock = FakeClock()
        self.now = now or FrozenClock(TS + timedelta(seconds=7))

    def compose(self) -> ComposeResult:
        yield EventView(self.client, clock=self.clock, now=self.now, id="pane")

    @property
    def pane(self) -> EventView:
        """The pane."""
        return self.query_one("#pane", EventView)


def feed(app: PaneHost, events: Sequence[Event]) -> None:
    """Deliver ``events`` as the pane's stream would, then hand them to the transcript."""
    view = app.pane
    for event in events:
        view._ingest("task", event)
    app.clock.now += 1
    view._flush()


def entry_count(view: EventView) -> int:
    """Entries the window holds."""
    return len(view.transcript.entries)


async def test_deltas_build_live_items_that_their_completion_replaces_once() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        feed(app, TURN[:4])
        await pilot.pause()
        text = view.text()
        assert "› you: fix the flaky test" in text
        assert f"running…  7.0s $ {COMMAND}" in text, text  # the timer: now - item.started
        assert "│ collected 12 items" in text
        entries = entry_count(view)

        feed(app, TURN[4:5])
        await pilot.pause()
        assert "│ ............" in view.text()
        assert entry_count(view) == entries, "a delta grows its item's entry"
        app.now.now = TS + timedelta(seconds=9)
        view._tick_live()
        await pilot.pause()
        assert "running…  9.0s" in view.text()

        feed(app, TURN[5:9])
        await pilot.pause()
        text = view.text()
        assert "running…" not in text
        assert text.count(f"$ {COMMAND}") == 1, "the completed command replaced the running one"
        assert "12 passed" in text and "platform linux" in text  # codex's whole output
        assert "codex ✎" in text and "All **green**: the flaky" in text

        feed(app, TURN[9:])
        await pilot.pause()
        text = view.text()
        assert "codex ✎" not in text
        assert text.count("the flaky test waited on a lock") == 1
        assert text.count("All green") == 1 and "**gr" not in text, "no trace of the deltas"
        assert "31.2k tokens · 31% context" in str(view.border_subtitle)


async def test_a_replay_in_one_burst_and_a_stream_resumed_mid_item_show_the_same() -> None:
    texts = []
    for cut in (None, 5, 9):  # a fresh replay, resumed mid-command, resumed mid-message
        app = PaneHost(BurstClient())
        async with app.run_test(size=SIZE) as pilot:
            view = app.pane
            view.follow(conversation_task())
            await pilot.pause()
            if cut is None:
                feed(app, TURN)
            else:
                feed(app, TURN[:cut])
                await pilot.pause()
                feed(app, TURN[cut:])
            await pilot.pause()
            texts.append(view.text())
    assert texts[0] == texts[1] == texts[2]
    assert texts[0].count("12 passed") == 1
    assert texts[0].count("waited on a lock") == 1


async def test_a_page_shows_each_item_once_without_its_deltas() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        # Pages from the server are read out of stream order, each on its own.
        whole = view.feed.page_entries(TURN)
        assert [entry.seq for entry in whole] == [1, 2, 3, 7 + 3]
        assert whole[2].shown_event.seq == 6, "the command shows as it completed"
        tail = view.feed.page_entries(TURN[4:])  # starts mid-command
        assert [entry.seq for entry in tail] == [6, 10]


APPROVAL = {
    "id": "ap1",
    "task_id": "task",
    "item_id": "c2",
    "kind": "command",
    "command": "rm -rf build",
    "cwd": "/srv/app",
    "reason": "clean the build output before the release",
    "state": "pending",
}


async def test_an_approval_card_shows_its_keys_until_answered() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        feed(app, [status_event(1, {"status": "waiting", "approval": APPROVAL})])
        await pilot.pause()
        text = view.text()
        assert "⚠ approval needed · run a command" in text
        assert "$ rm -rf build" in text and "in /srv/app" in text
        assert "reason: clean the build output" in text
        assert "y accept  a session  d decline  D cancel turn" in text
        assert view.has_class("-approval")
        assert view.pending_approval is not None and view.pending_approval.id == "ap1"
        answered = {"id": "ap1", "decision": "acceptForSession", "answered_by": "alice"}
        feed(app, [status_event(2, {"status": "running", "approval": answered})])
        await pilot.pause()
        text = view.text()
        assert "→ accepted for the session by alice" in text
        assert "y accept" not in text
        assert entry_count(view) == 1, "the answer settles the card in place"
        assert not view.has_class("-bar")
        assert view.pending_approval is None


async def test_turn_done_interrupt_and_waiting_for_worker_lines() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        feed(
            app,
            [
                status_event(1, {"status": "running", "interrupt": "requested"}),
                codex_event(2, {"type": "turn.interrupted", "turn_id": "t1"}),
                status_event(3, {"status": "idle", "turns": 1}),
                status_event(4, {"status": "queued", "reply": {"id": "r1", "prompt": "go on"}}),
                status_event(5, {"status": "queued", "waiting_for_worker": "devbox"}),
            ],
        )
        await pilot.pause()
        text = view.text()
        assert "● running · interrupt requested" in text
        assert "■ turn interrupted" in text
        assert "◇ idle · turn 1 done — reply with i" in text
        assert "› you: go on" in text
        assert "waiting for worker devbox" in text


def test_the_markdown_export_shows_each_item_once_and_the_conversation() -> None:
    events = [
        *TURN,
        status_event(12, {"status": "waiting", "approval": APPROVAL}),
        status_event(
            13,
            {
                "status": "running",
                "approval": {"id": "ap1", "decision": "decline", "answered_by": "alice"},
            },
        ),
        codex_event(14, {"type": "turn.interrupted", "turn_id": "t1"}),
        status_event(15, {"status": "idle", "turns": 1}),
        status_event(16, {"status": "queued", "reply": {"id": "r1", "prompt": "now the docs"}}),
    ]
    text = "".join(markdown_event(event) for event in events)
    assert "**› you:**\n\n```\nfix the flaky test\n```" in text
    assert text.count("12 passed") == 1 and "collected 12 items\n............\n12" in text
    assert text.count("All **green**") == 1 and "**gr\n" not in text
    assert "item.delta" not in text and "usage.updated" not in text
    assert "**approval asked:** command" in text and "- command: `rm -rf build`" in text
    assert "*approval declined by alice*" in text
    assert "> **turn interrupted**" in text
    assert "*status: idle — turn 1 done*" in text
    assert "```\nnow the docs\n```" in text


class AnsweringClient(BurstClient):
    """A client that records the approval answers it is asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, str, UserInputAnswers | None]] = []

    async def answer_approval(
        self,
        approval_id: str,
        decision: ApprovalDecision | str,
        answers: UserInputAnswers | None = None,
    ) -> Approval:
        self.answers.append((approval_id, str(decision), answers))
        return Approval(
            id=approval_id,
            task_id="task",
            item_id="q1",
            kind=ApprovalKind.USER_INPUT,
            created_at=TS,
            state=ApprovalState.ANSWERED,
            decision=ApprovalDecision(decision),
            answers=answers,
        )


QUESTIONS = {
    "id": "ap2",
    "task_id": "task",
    "item_id": "q1",
    "kind": "user_input",
    "questions": [
        {
            "id": "db",
            "header": "Database",
            "question": "Which database?",
            "options": [{"label": "sqlite"}, {"label": "postgres"}],
        },
        {"id": "name", "question": "Name of the table?"},
    ],
    "state": "pending",
}


async def test_codex_questions_are_answered_one_by_one_in_the_reply_box() -> None:
    client = AnsweringClient()
    app = PaneHost(client)
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task(TaskStatus.WAITING))
        await pilot.pause()
        feed(app, [status_event(1, {"status": "waiting", "approval": QUESTIONS})])
        await pilot.pause()
        text = view.text()
        assert "? Database Which database?" in text and "sqlite / postgres" in text
        assert "y answer  D cancel turn" in text
        view.transcript.focus()
        await pilot.press("y")
        field = view.query_one("#reply-input", Input)
        assert view.replying and app.focused is field
        assert field.placeholder.startswith("1/2 Database Which database? 1=sqlite 2=postgres")
        await pilot.press("2", "enter")
        assert field.placeholder.startswith("2/2 Name of the table?")
        assert field.value == ""
        await pilot.press(*"users", "enter")
        await wait_for(pilot, lambda: client.answers, "the answer")
        assert client.answers == [("ap2", "accept", {"db": ["postgres"], "name": ["users"]})]
        assert not view.replying
        assert view.pending_approval is None, "answered from here: not offered again"


async def test_conversation_keys_are_free_on_the_dashboard_and_listed() -> None:
    from codex_tui.app import CodexTuiApp
    from codex_tui.commands import binding_registry
    from codex_tui.screens.dashboard import DashboardScreen
    from codex_tui.widgets.pane_grid import PaneGrid
    from codex_tui.widgets.transcript import Transcript

    # Every binding active while a pane has the focus: its own and its ancestors'.
    chain: list[type[DOMNode]] = [
        Transcript,
        EventView,
        PaneGrid,
        DashboardScreen,
        CodexTuiApp,
        App,
    ]
    for binding_id, key in CONVERSATION_KEYS.items():
        owners = [
            (node.__name__, binding.action)
            for node in chain
            for binding in node.BINDINGS
            if isinstance(binding, Binding) and key in binding.key.split(",")
        ]
        assert len(owners) == 1, f"{key} ({binding_id}) is bound by {owners}"
    registered = {cls for _title, cls in binding_registry()}
    assert EventView in registered
    ids = {b.id for b in EventView.BINDINGS if isinstance(b, Binding)}
    assert set(CONVERSATION_KEYS) <= ids


async def test_a_burst_of_deltas_keeps_one_bounded_entry_per_item() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        line = "x" * 99 + "\n"
        events = [item(1, "started", {"id": "c1", "type": "commandExecution", "command": "yes"})]
        events += [delta(2 + n, "c1", line, "command_output") for n in range(20_000)]
        events += [delta(20_002 + n, "m1", "word ") for n in range(20_000)]
        feed(app, events)
        await pilot.pause()
        assert entry_count(view) == 2
        command, message = (entry.note.live for entry in view.transcript.entries)
        assert isinstance(command, LiveItem) and isinstance(message, LiveItem)
        assert len(command.text) <= MAX_TEXT_CHARS and command.text.endswith(line)
        assert command.dropped == 20_000 * len(line) - len(command.text)
        assert len(message.text) == MAX_TEXT_CHARS and message.dropped > 0
        text = view.text()
        assert "│ … " in text and "earlier lines" in text
        assert f"codex ✎\n{'word ' * 3}" in text


async def test_a_window_paged_in_mid_item_follows_the_stream_to_the_completion() -> None:
    app = PaneHost(BurstClient())
    async with app.run_test(size=SIZE) as pilot:
        view = app.pane
        view.follow(conversation_task())
        await pilot.pause()
        feed(app, TURN[:5])
        await pilot.pause()
        # The window is filled from a page, as the end key does after reading far back.
        transcript = view.transcript
        transcript.reset()
        transcript.append(view.feed.page_entries(TURN[:5]))
        gc.collect()  # the stream's own entry for the command is gone
        await pilot.pause()
        assert "running…" in view.text()
        feed(app, TURN[5:])
        await pilot.pause()
        text = view.text()
        assert "running…" not in text
        assert text.count(f"$ {COMMAND}") == 1 and "12 passed" in text
        assert text.count("waited on a lock") == 1
