"""Provides the conversation verbs: ``reply``, ``interrupt``, ``approvals``, ``approve`` and
``decline``.

Exit codes as the task verbs (:mod:`codex_tui.cli.tasks`): 0 success (``reply --follow``:
the turn ended, the task is idle, or it completed), 1 the task ended otherwise, 2 usage or
connection problems and refusals (a reply to an exec task, a second answer, ...), with the
server's reason and what to do.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING

import click

from codex_tui.cli.common import ID, connection, connection_options, fail, run_client
from server_client.enums import ApprovalDecision, ApprovalState
from server_client.text import json_safe

if TYPE_CHECKING:
    from server_client.client import CodexTuiClient
    from server_client.models import Approval

__all__ = ["approvals", "approve", "decline", "interrupt", "reply"]

#: The values of :class:`server_client.enums.ApprovalState`.
APPROVAL_STATES = tuple(state.value for state in ApprovalState)


@click.command()
@connection_options
@click.option("--follow", "-f", is_flag=True, help="Stream the events until the turn ends.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the reply (or, with --follow, each event) as JSON.",
)
@click.argument("task_id", type=ID)
@click.argument("prompt")
@click.pass_context
def reply(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    follow: bool,
    as_json: bool,
    task_id: str,
    prompt: str,
) -> None:
    """Send PROMPT (`-` reads it from stdin) to the conversation TASK_ID: it steers the
    running turn, or starts the next one of an idle task. Prints the reply's id."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail("the prompt is empty")
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> int:
        from codex_tui.cli.tasks import follow_turn

        before = await client.get_task(task_id)
        sent = await client.reply(task_id, prompt)
        if not follow:
            click.echo(json_safe(sent.model_dump_json()) if as_json else sent.id)
            return 0
        return await follow_turn(
            client, task_id, before.last_seq, as_json, reply_id=sent.id, turns=before.turns
        )

    raise SystemExit(run_client(conn, work))


@click.command()
@connection_options
@click.argument("task_id", type=ID)
@click.pass_context
def interrupt(ctx: click.Context, server: str | None, token: str | None, task_id: str) -> None:
    """Interrupt TASK_ID's running turn: codex stops, the conversation stays (it becomes
    idle and takes a reply). `codex-tui cancel` ends the task instead."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        task = await client.interrupt(task_id)
        click.echo(f"{task.id} interrupt requested (the turn ends; reply to go on)")

    run_client(conn, work)


def _age(then: datetime, now: datetime) -> str:
    """A short age: ``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _changed_files(diff: str) -> list[str]:
    """The paths a unified diff changes (its ``+++``/``---`` headers, ``/dev/null`` and the
    ``a/``/``b/`` prefixes dropped), in order."""
    files: list[str] = []
    for line in diff.splitlines():
        if line.startswith(("+++ ", "--- ")):
            path = line[4:].split("\t")[0].strip()
            if path == "/dev/null":
                continue
            if path.startswith(("a/", "b/")):
                path = path[2:]
            if path not in files:
                files.append(path)
    return files


def what(approval: Approval) -> str:
    """What an approval asks, on one line: the command, the files of a change, or the
    questions."""
    if approval.kind.value == "command":
        return approval.command or "(a command)"
    if approval.kind.value == "file_change":
        files = _changed_files(approval.diff or "")
        return "edit " + ", ".join(files) if files else "(a change)"
    questions = approval.questions or []
    return " / ".join(q.question or q.header or q.id for q in questions) or "(questions)"


def _approval_row(approval: Approval, now: datetime) -> str:
    """One line of ``approvals``: id, task, kind, what, age (control characters shown)."""
    from codex_tui.events.view import shown_line

    shown = shown_line(" ".join(what(approval).split()), 70)
    age = _age(approval.created_at, now)
    state = "" if approval.state is ApprovalState.PENDING else f"  [{approval.state.value}]"
    return f"{approval.id}  {approval.task_id}  {approval.kind.value:<11}  {age:>4}  {shown}{state}"


@click.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON approval per line.")
@click.option(
    "--state",
    type=click.Choice((*APPROVAL_STATES, "all")),
    default="pending",
    show_default=True,
    help="Only approvals in this state.",
)
@click.option("--task", "task_id", help="Only this task's approvals.")
@click.pass_context
def approvals(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    as_json: bool,
    state: str,
    task_id: str | None,
) -> None:
    """List what codex asks you (newest first): id, task, kind, what (the command, the files
    of a change, the questions) and age. Answer with `codex-tui approve ID` or `decline ID`."""
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        from server_client.models import utcnow

        found = await client.list_approvals(
            state=None if state == "all" else state, task_id=task_id
        )
        now = utcnow()
        for approval in found:
            click.echo(
                json_safe(approval.model_dump_json()) if as_json else _approval_row(approval, now)
            )
        if not found and not as_json:
            click.echo(f"no {'' if state == 'all' else state + ' '}approvals", err=True)

    run_client(conn, work)


def _answers(pairs: tuple[str, ...]) -> dict[str, list[str]] | None:
    """``QID=TEXT`` pairs as answers by question id (a repeated id gathers several)."""
    if not pairs:
        return None
    out: dict[str, list[str]] = {}
    for pair in pairs:
        qid, sep, text = pair.partition("=")
        if not sep or not qid:
            fail(f"--answer takes QID=TEXT (the question's id, =, the answer), not {pair!r}")
        out.setdefault(qid, []).append(text)
    return out


def _answer(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    approval_id: str,
    decision: ApprovalDecision,
    answers: dict[str, list[str]] | None = None,
) -> None:
    conn = connection(ctx, server, token, start=False)

    async def work(client: CodexTuiClient) -> None:
        done = await client.answer_approval(approval_id, decision, answers)
        click.echo(f"{done.id} {decision.value} (task {done.task_id})")

    run_client(conn, work)


@click.command()
@connection_options
@click.option(
    "--for-session",
    is_flag=True,
    help="Also allow the same again without asking, until the turn ends.",
)
@click.option(
    "--answer",
    "answer_pairs",
    multiple=True,
    metavar="QID=TEXT",
    help="Answer codex's question QID (repeatable; for a user_input approval).",
)
@click.argument("approval_id", type=ID)
@click.pass_context
def approve(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    for_session: bool,
    answer_pairs: tuple[str, ...],
    approval_id: str,
) -> None:
    """Allow what APPROVAL_ID asks (see `codex-tui approvals`); codex goes on."""
    answers = _answers(answer_pairs)
    if for_session and answers is not None:
        fail("--for-session is for commands and changes; --answer for questions, not both")
    decision = ApprovalDecision.ACCEPT_FOR_SESSION if for_session else ApprovalDecision.ACCEPT
    _answer(ctx, server, token, approval_id, decision, answers)


@click.command()
@connection_options
@click.option(
    "--cancel-turn",
    is_flag=True,
    help="Also interrupt the turn (codex stops; the task becomes idle).",
)
@click.argument("approval_id", type=ID)
@click.pass_context
def decline(
    ctx: click.Context,
    server: str | None,
    token: str | None,
    cancel_turn: bool,
    approval_id: str,
) -> None:
    """Refuse what APPROVAL_ID asks; codex is told and the turn goes on (with --cancel-turn,
    it stops)."""
    decision = ApprovalDecision.CANCEL if cancel_turn else ApprovalDecision.DECLINE
    _answer(ctx, server, token, approval_id, decision)
