"""Provides tests of how a pane shows codex's stderr: a run of consecutive lines (codex's
start-up notes) is one row that enter unfolds, and every line stays searchable and copyable."""

from __future__ import annotations

from server_client.models import EventIn, EventKind, TaskStatus
from tests.conftest import ServerFactory
from tests.support.tui_helpers import (
    SEED_TS,
    SIZE,
    SeedTask,
    seed_tasks,
    type_text,
    wait_for,
)
from tests.tui.test_transcript import PaneHost, codex_in, replayed

STARTUP = [
    "Reading additional input from stdin...",
    "OpenAI Codex v0.169.0 (research preview)",
    "workdir: /srv/app",
]


def stderr_in(line: str) -> EventIn:
    """A stderr line to seed."""
    return EventIn(ts=SEED_TS, kind=EventKind.STDERR, data={"line": line})


async def test_a_run_of_stderr_lines_is_one_row_that_unfolds(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    events = [
        *(stderr_in(line) for line in STARTUP),
        codex_in({"type": "thread.started", "thread_id": "t-1"}),
        codex_in({"type": "turn.started"}),
        stderr_in("warning: a later note"),  # a run of its own
        codex_in(
            {
                "type": "item.completed",
                "item": {"id": "item_0", "type": "agent_message", "text": "Done."},
            }
        ),
    ]
    seeded = await seed_tasks(server, [SeedTask("fold", events, TaskStatus.COMPLETED)])
    [task] = seeded.tasks
    async with server.client() as client:
        app = PaneHost(client, 2000)
        async with app.run_test(size=SIZE) as pilot:
            view = app.pane
            transcript = view.transcript
            view.follow(task)
            transcript.focus()
            await replayed(pilot, view, task)

            runs = [e for e in transcript.entries if e.event.kind is EventKind.STDERR]
            assert len(runs) == 2, "the start-up lines are one entry, the later line another"
            first = runs[0]
            text = view.text()
            assert f"▸ 3 stderr lines · {STARTUP[0]}" in text
            assert STARTUP[1] not in text and STARTUP[2] not in text, "folded to one row"
            assert "warning: a later note" in text

            # Searchable while folded: the search finds the entry by a folded line.
            index = transcript.find("research preview", backwards=True)
            assert index is not None and transcript.entries[index] is first

            # enter unfolds it, as it does a command's output, and folds it again.
            transcript.move_cursor(transcript.entries.index(first))
            await pilot.press("enter")
            await wait_for(pilot, lambda: first.expanded, "the run unfolded")
            text = view.text()
            assert all(line in text for line in STARTUP), text
            assert "stderr lines ·" not in text
            await pilot.press("enter")
            await wait_for(pilot, lambda: not first.expanded, "the run folded")

            # A search that finds a folded line unfolds the run and puts the cursor on it.
            transcript.move_cursor(len(transcript.entries) - 1)
            await pilot.press("slash")
            await type_text(pilot, "research preview\n")
            await wait_for(pilot, lambda: first.expanded, "the run unfolded by the search")
            assert transcript.cursor_entry is first
            first.expanded = False
            transcript.focus()

            # C copies every line of the run.
            await pilot.press("C")
            await wait_for(pilot, lambda: bool(app.clipboard), "the copy")
            assert app.clipboard.splitlines() == STARTUP
