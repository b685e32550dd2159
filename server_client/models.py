"""Provides the wire contract: the pydantic models shared by the server, the workers and clients.

Everything that crosses HTTP is one of these models, serialised as JSON. Times are UTC
ISO 8601 strings; durations are seconds unless a field name says otherwise.

Event envelope (what ``GET /api/tasks/{id}/events`` sends as the SSE ``data:`` of each
message, and what ``codex-tui logs --json`` prints one per line)::

    {"seq": 7, "ts": "2026-11-21T06:00:00.123456Z", "kind": "codex",
     "data": {"type": "item.completed", "item": {...}}}

``kind`` is one of :class:`EventKind`: ``codex`` (a JSONL object exactly as ``codex exec
--json`` printed it, unknown types kept), ``stdout`` (a stdout line that was not a JSON
object, kept raw), ``stderr`` (one stderr line) or ``status`` (a task state change recorded by
the server).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from server_client.codex import CodexEvent

# The enumerations live in server_client.enums and the clock in server_client.clock (no pydantic
# there); re-exported here.
from server_client.clock import utcnow as utcnow
from server_client.enums import ACTIVE_STATUSES as ACTIVE_STATUSES
from server_client.enums import TERMINAL_STATUSES as TERMINAL_STATUSES
from server_client.enums import ApprovalDecision as ApprovalDecision
from server_client.enums import ApprovalKind as ApprovalKind
from server_client.enums import ApprovalPolicy as ApprovalPolicy
from server_client.enums import ApprovalState as ApprovalState
from server_client.enums import EventKind as EventKind
from server_client.enums import Runtime as Runtime
from server_client.enums import Sandbox as Sandbox
from server_client.enums import TaskStatus as TaskStatus

#: Largest prompt the server accepts, in characters.
MAX_PROMPT_CHARS = 100_000

#: Largest seq, event index or exit code on the wire: the store keeps them in 32-bit columns.
MAX_INT32 = 2**31 - 1


def _reject_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: Text without NUL characters (PostgreSQL cannot store them in text columns; a 422 says so).
NulFree = Annotated[str, AfterValidator(_reject_nul)]

#: A worker label: short, no spaces (e.g. ``gpu``, ``os:linux``).
Label = Annotated[
    str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/=-]*$")
]


def _ref_is_plain(value: str) -> str:
    if value.startswith("-") or any(c <= " " or c == "\x7f" for c in value):
        raise ValueError("a ref is a branch, tag or commit: no spaces, no leading '-'")
    return value


#: A git branch, tag or commit name as a task's ``ref`` (no spaces or control characters, no
#: leading ``-``, so it can never read as an option of git's).
GitRef = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_ref_is_plain)]


class WorkspaceState(StrEnum):
    """Where a task's workspace stands: ``present`` on its worker, ``removing`` (asked for,
    the worker has not yet done it) or ``removed``."""

    PRESENT = "present"
    REMOVING = "removing"
    REMOVED = "removed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _prompt_is_text(value: str) -> str:
    if not value.strip():
        raise ValueError("the prompt is blank")
    if value.strip() == "-":
        raise ValueError('a prompt of just "-" would make codex read stdin')
    return _reject_nul(value)


#: A prompt: 1 to :data:`MAX_PROMPT_CHARS` characters, not blank, not ``-``, no NUL.
Prompt = Annotated[
    str, Field(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(_prompt_is_text)
]


class TaskCreate(_Model):
    """Body of ``POST /api/tasks``.

    ``workdir`` must be an absolute path inside one of the allowed workdir roots (400
    otherwise); ``None`` means the worker's first root. ``model`` is passed to codex as
    ``--model``; ``None`` keeps codex's configured default. ``worker`` (a worker name of the
    caller's, 400 if unknown) and ``labels`` (all of which the worker must carry) route the
    task; it stays queued until a matching worker is online.

    ``approval_policy`` is codex's ``-a`` (``never`` by default: codex does not ask);
    ``runtime`` picks how the worker runs codex (``None``: the worker's own default, which is
    ``app-server`` unless its owner chose otherwise). A policy other than ``never`` needs the
    ``app-server`` runtime: only it can ask (400 with ``exec``; an unpinned task then only
    goes to a worker that can run it).

    ``repo`` gives the task a workspace of its own (docs/design.md, "Workspaces"): an
    absolute path of a git repository on the worker (inside its workdir roots: the worker
    makes a ``git worktree`` of it) or a URL the server's policy allows (the worker clones
    it); ``ref`` is the branch, tag or commit to start from (default: the repository's HEAD).
    A task with a ``repo`` has no ``workdir``: codex runs in the workspace.
    """

    prompt: Prompt
    workdir: str | None = Field(default=None, max_length=4096)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    sandbox: Sandbox = Sandbox.WORKSPACE_WRITE
    approval_policy: ApprovalPolicy = ApprovalPolicy.NEVER
    runtime: Runtime | None = None
    worker: str | None = Field(default=None, min_length=1, max_length=100)
    labels: list[Label] = Field(default_factory=list, max_length=20)
    repo: str | None = Field(default=None, min_length=1, max_length=4096)
    ref: GitRef | None = None

    @model_validator(mode="after")
    def _repo_or_workdir(self) -> TaskCreate:
        if self.ref is not None and self.repo is None:
            raise ValueError("ref needs repo: a ref names a commit of the task's repository")
        if self.repo is not None and self.workdir is not None:
            raise ValueError(
                "give workdir or repo, not both: a task on a repository runs in its own "
                "checkout of it (its workspace)"
            )
        return self

    @classmethod
    def from_task(cls, task: Task) -> TaskCreate:
        """The body that submits ``task`` again with the same options: its prompt, workdir,
        model, sandbox and routing (target worker name and labels).

        The target worker is the one the task was routed to, not the one that happened to
        run it, so an unrouted task stays unrouted.

        Raises:
            pydantic.ValidationError: the task's fields no longer fit the body's limits.
        """
        return cls(
            prompt=task.prompt,
            workdir=task.workdir,
            model=task.model,
            sandbox=task.sandbox,
            worker=task.target_worker,
            labels=list(task.labels),
            approval_policy=task.approval_policy,
            runtime=task.requested_runtime,
            repo=task.repo,
            ref=task.ref,
        )

    @field_validator("workdir", "model", "worker", "repo")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Task(_Model):
    """A task as the server reports it.

    ``last_seq`` is the seq of the newest stored event (0 when none). ``error`` says why a
    task failed or was lost, or why an idle conversation's last turn ended early (a worker
    restart, say). ``worker_name`` names the worker that claimed it; a conversation keeps
    it while idle, because that worker holds the thread (codex keeps it in that machine's
    ``CODEX_HOME``) and takes its replies.

    ``runtime`` is the runtime the worker runs it with (``None`` until claimed);
    ``requested_runtime`` the one asked for at submit (``None``: the worker's default).
    ``turns`` counts the turns started (the first prompt and each reply that started one);
    ``pending_approvals`` the approvals waiting for an answer; ``pending_replies`` the
    replies not yet handed to codex; ``interrupt_requested`` is set from an interrupt
    until the running turn ends.

    A task submitted with a ``repo`` (and ``ref``) gets a workspace once a worker claims it:
    ``workspace_path`` (on that worker) and ``base_commit`` (40 hex digits, what its diff is
    against), ``workspace_state`` (``present``, ``removing`` once removal was asked for,
    ``removed``) and ``workspace_bytes`` (its disk use as the worker last reported it).
    ``diff_files``/``diff_added``/``diff_removed`` summarise the latest diff (lines; binary
    files count as a file only) and ``diff_updated_at`` says when the worker computed it; the
    diff itself is ``GET /api/tasks/{id}/diff`` (:class:`TaskDiff`) and ``.../patch``.
    """

    id: str
    prompt: str
    workdir: str | None
    model: str | None
    sandbox: Sandbox
    status: TaskStatus
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    worker_name: str | None = None
    thread_id: str | None = None
    exit_code: int | None = None
    error: str | None = None
    last_seq: int = 0
    target_worker: str | None = None
    labels: list[str] = Field(default_factory=list)
    approval_policy: ApprovalPolicy = ApprovalPolicy.NEVER
    runtime: Runtime | None = None
    requested_runtime: Runtime | None = None
    turns: int = 0
    pending_approvals: int = 0
    pending_replies: int = 0
    interrupt_requested: bool = False
    repo: str | None = None
    ref: str | None = None
    workspace_path: str | None = None
    base_commit: str | None = None
    workspace_state: WorkspaceState | None = None
    workspace_bytes: int | None = None
    diff_files: int | None = None
    diff_added: int | None = None
    diff_removed: int | None = None
    diff_updated_at: datetime | None = None

    @property
    def is_conversation(self) -> bool:
        """True when the task takes replies: it runs (or will run) on ``app-server``."""
        return (self.runtime or self.requested_runtime) is not Runtime.EXEC


class TaskPage(_Model):
    """One page of ``GET /api/tasks``, newest first; pass ``next_cursor`` as ``?cursor=``."""

    items: list[Task]
    next_cursor: str | None = None


#: Every task status's wire value (a set: tested for each status event a client reads).
_STATUS_VALUES = frozenset(status.value for status in TaskStatus)


class Event(_Model):
    """One stored event of a task's log (see the module docstring for the envelope)."""

    seq: int = Field(ge=1)
    ts: datetime
    kind: EventKind
    data: Any
    #: The task, on a stream that follows several (``GET /api/events``); None elsewhere, and
    #: then left out of the envelope.
    task_id: str | None = Field(default=None, exclude_if=lambda value: value is None)

    @property
    def codex_type(self) -> str | None:
        """The codex event's ``type`` (``item.completed``, ...) or None for other kinds."""
        if self.kind is EventKind.CODEX:
            from server_client.codex.events import event_type

            return event_type(self.data) or None
        return None

    @property
    def codex(self) -> CodexEvent | None:
        """The codex event typed (:func:`server_client.codex.parse_event`), or None for the
        other kinds. Unknown types read as :class:`~server_client.codex.UnknownEvent`, never
        as an error. Read again on each access (a few µs), not kept: a TUI holds thousands of
        events, and the typed copy would double what each costs in memory."""
        if self.kind is not EventKind.CODEX:
            return None
        from server_client.codex.events import parse_event

        return parse_event(self.data)

    @property
    def status(self) -> TaskStatus | None:
        """The task status a ``status`` event records, else None."""
        if self.kind is EventKind.STATUS and isinstance(self.data, dict):
            value = self.data.get("status")
            if isinstance(value, str) and value in _STATUS_VALUES:
                return TaskStatus(value)
        return None

    @property
    def is_terminal(self) -> bool:
        """True for the status event that ends the task's stream."""
        status = self.status
        return status is not None and status.is_terminal


class ReplyCreate(_Model):
    """Body of ``POST /api/tasks/{id}/replies``: a follow-up prompt for a conversation.

    Sent while a turn runs, it steers that turn (codex adds it to the running turn); sent to
    an idle task, it starts the next turn on the worker that holds the thread (the task is
    queued for that worker, and waits visibly while it is offline). 409 for a task that
    ended or runs on the ``exec`` runtime.
    """

    prompt: Prompt


class Reply(_Model):
    """A reply as stored: ``delivered_at`` is when the worker handed it to codex (None
    while it waits)."""

    id: str
    task_id: str
    prompt: str
    created_at: datetime
    delivered_at: datetime | None = None


class UserInputOption(_Model):
    """One choice offered for a codex question (``label`` and its ``description``)."""

    label: str = Field(max_length=1_000)
    description: str = Field(default="", max_length=10_000)


class UserInputQuestion(_Model):
    """One question of codex's ``request_user_input`` tool (app-server's
    ``item/tool/requestUserInput``): ``id`` keys the answer; ``options`` are its choices
    (None: free text); ``is_other`` allows a free answer beside them; ``is_secret`` asks
    that the answer is not shown."""

    id: NulFree = Field(max_length=200)
    header: str = Field(default="", max_length=1_000)
    question: str = Field(default="", max_length=10_000)
    options: list[UserInputOption] | None = Field(default=None, max_length=50)
    is_other: bool = False
    is_secret: bool = False


#: Answers to codex's questions: question id → the chosen labels or typed answers.
UserInputAnswers = dict[
    Annotated[NulFree, Field(max_length=200)],
    Annotated[list[Annotated[NulFree, Field(max_length=10_000)]], Field(max_length=50)],
]


class ApprovalRequest(_Model):
    """Body of ``POST /api/workers/{wid}/tasks/{tid}/approvals``: codex asked (under the
    lease ``lease_id``). Idempotent by ``item_id``: the same item again returns the stored
    approval.

    ``command``/``cwd`` are what codex wants to run and where (``command``); ``diff`` is
    the pending change as a unified diff (``file_change``); ``questions`` are codex's
    (``user_input``); ``reason`` is codex's (or the model's) justification;
    ``available_decisions`` the decisions codex offers (empty: all of them).
    """

    lease_id: NulFree = Field(max_length=64)
    item_id: NulFree = Field(min_length=1, max_length=200)
    turn_id: NulFree | None = Field(default=None, max_length=200)
    kind: ApprovalKind
    command: NulFree | None = Field(default=None, max_length=100_000)
    cwd: NulFree | None = Field(default=None, max_length=4096)
    reason: NulFree | None = Field(default=None, max_length=10_000)
    diff: NulFree | None = Field(default=None, max_length=1_000_000)
    questions: list[UserInputQuestion] | None = Field(default=None, max_length=20)
    available_decisions: list[ApprovalDecision] = Field(default_factory=list, max_length=10)


class Approval(_Model):
    """A request of codex's, kept by the server until answered (``GET /api/approvals``).

    The request's fields are as in :class:`ApprovalRequest`; ``state`` is ``pending`` until
    the owner answers (``decision``, ``answers`` for questions, ``answered_at``,
    ``answered_by``: the answering user's name) or the turn ends without an answer
    (``withdrawn``, with ``withdrawn_reason``).
    """

    id: str
    task_id: str
    item_id: str
    turn_id: str | None = None
    kind: ApprovalKind
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    diff: str | None = None
    questions: list[UserInputQuestion] | None = None
    available_decisions: list[ApprovalDecision] = Field(default_factory=list)
    state: ApprovalState = ApprovalState.PENDING
    decision: ApprovalDecision | None = None
    answers: UserInputAnswers | None = None
    created_at: datetime
    answered_at: datetime | None = None
    answered_by: str | None = None
    withdrawn_reason: str | None = None


class ApprovalAnswer(_Model):
    """Body of ``POST /api/approvals/{id}``: the owner's decision (and, for ``user_input``,
    the answers by question id). Accepted once: a second answer gets 409 naming the first.
    ``acceptForSession`` is refused (400) where codex did not offer it."""

    decision: ApprovalDecision
    answers: UserInputAnswers | None = None


class Problem(BaseModel):
    """An RFC 9457 problem body (``application/problem+json``) sent with every 4xx/5xx."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None
    next_index: int | None = None


class Health(_Model):
    """Body of ``GET /healthz``."""

    status: Literal["ok"] = "ok"
    version: str


class Me(_Model):
    """Body of ``GET /api/me``: who the token belongs to."""

    user_id: str
    name: str


# --------------------------------------------------------------------------------------
# Worker protocol. A worker authenticates with its owner's token, connects once, then
# long-polls for work and for cancel signals, and uploads events under a lease.
# --------------------------------------------------------------------------------------


class WorkerHello(_Model):
    """Body of ``POST /api/workers/connect``: what the worker is and can do."""

    name: NulFree = Field(min_length=1, max_length=100)
    hostname: NulFree = Field(default="", max_length=255)
    codex_version: NulFree | None = Field(default=None, max_length=100)
    workdir_roots: list[Annotated[NulFree, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64
    )
    max_tasks: int = Field(default=4, ge=1, le=1000)
    labels: list[Label] = Field(default_factory=list, max_length=50)
    runtime: Runtime | None = None
    #: Why the worker cannot run tasks now (its codex binary is missing: the message says how
    #: to install it); None when it can. While set it claims nothing, and the server hands
    #: it nothing.
    cannot_run: NulFree | None = Field(default=None, max_length=1000)


class Worker(_Model):
    """A worker as the server knows it.

    ``online`` is true while the worker was heard from within the lease TTL; ``running``
    counts its running tasks; ``heartbeat_s`` is how often the worker must poll (s) to keep
    its leases. ``allow_danger`` is an admin's mark: only such workers are handed
    ``danger-full-access`` tasks (``codex-tui admin worker allow-danger``). ``cannot_run``
    says why the worker cannot run tasks now (codex missing), as its last hello said; it is
    handed none while set.
    """

    id: str
    name: str
    hostname: str
    codex_version: str | None
    workdir_roots: list[str]
    max_tasks: int
    labels: list[str] = Field(default_factory=list)
    connected_at: datetime
    last_seen_at: datetime
    online: bool = False
    running: int = 0
    heartbeat_s: float = 10.0
    allow_danger: bool = False
    runtime: Runtime | None = None
    cannot_run: str | None = None


class PairingCode(_Model):
    """Answer to ``POST /api/pairing-codes``: a one-time code and the command that uses it.

    The code is shown once; the server keeps only its hash. It expires at ``expires_at``
    (10 minutes) and works once.
    """

    code: str
    expires_at: datetime
    command: str
    #: The server's configured public URL (``CODEX_TUI_SERVER_PUBLIC_URL``), which
    #: ``command`` names; None when unset (``command`` then names the address the request
    #: reached the server at).
    public_url: str | None = None


class PairRequest(_Model):
    """Body of ``POST /api/pair``: redeem a pairing code for a worker token."""

    code: NulFree = Field(min_length=1, max_length=64)
    name: NulFree = Field(min_length=1, max_length=100)
    hostname: NulFree = Field(default="", max_length=255)
    labels: list[Label] = Field(default_factory=list, max_length=50)


class PairResult(_Model):
    """Answer to a successful pairing: the new worker and its token (shown once)."""

    worker: Worker
    token: str


class Claim(_Model):
    """Answer to a successful claim: the task and the lease that fences the worker's writes.

    ``replies`` are the task's replies not yet handed to codex, oldest first: for a
    conversation claimed again after a reply (its thread is resumed, the replies start the
    next turn) or a reply sent before the first claim (added to the first turn). The worker
    acknowledges them (:class:`Acks`) once codex has them.
    """

    task: Task
    lease_id: str
    replies: list[Reply] = Field(default_factory=list)


class EventIn(_Model):
    """One event as a worker uploads it; the server assigns the seq.

    ``ts`` must carry a UTC offset and is kept in UTC (422 for a naive time or one that is out
    of range once in UTC).
    """

    ts: AwareDatetime
    kind: Literal[EventKind.CODEX, EventKind.STDOUT, EventKind.STDERR]
    data: Any

    @field_validator("ts")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None


def reject_non_finite(batch: EventBatch) -> EventBatch:
    """Refuse a batch whose event data holds NaN or an infinite number.

    JSON has no such numbers, but Python's parser reads ``NaN`` and ``1e400`` and its encoder
    would write them back as ``NaN``/``Infinity``, which strict JSON clients cannot read. The
    server validates uploads with it (route parameter); the worker's own models do not, so a
    stray line never stops a worker.

    Raises:
        ValueError: a non-finite number was found (the request gets a 422).
    """
    stack: list[Any] = [event.data for event in batch.events]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("event data must not contain NaN or infinite numbers")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return batch


class EventBatch(_Model):
    """Body of ``POST /api/workers/{wid}/tasks/{tid}/events``.

    ``first_index`` is the 0-based index of ``events[0]`` among all events the worker has
    produced for this task under this lease (a conversation's every claim starts again at
    0), which makes uploads idempotent: events the server already has are
    skipped; a batch that starts past the server's next index is refused with 409 and the
    problem body's ``next_index`` says where to resume.
    """

    lease_id: NulFree = Field(max_length=64)
    first_index: int = Field(ge=0, le=MAX_INT32)
    events: list[EventIn] = Field(max_length=10_000)
    thread_id: NulFree | None = Field(default=None, max_length=200)


class TaskEvents(EventBatch):
    """One task's part of a worker's upload (:class:`WorkerUpload`): an :class:`EventBatch`
    for ``task_id``, optionally ending the task's lease or turn after its events
    (``finish``, applied only once every event it counts is stored)."""

    task_id: NulFree = Field(max_length=64)
    finish: TurnEnd | None = None


class WorkerUpload(_Model):
    """Body of ``POST /api/workers/{wid}/events``: the events of every task the worker runs
    that has something new, in one request and one store transaction (issue 14: a worker
    streams through one upload, not one per task). Each part is judged on its own: a refused
    part never refuses the others. At most :data:`MAX_UPLOAD_EVENTS` events in all."""

    tasks: list[TaskEvents] = Field(max_length=1000)

    @field_validator("tasks")
    @classmethod
    def _bounded(cls, value: list[TaskEvents]) -> list[TaskEvents]:
        if sum(len(part.events) for part in value) > MAX_UPLOAD_EVENTS:
            raise ValueError(f"at most {MAX_UPLOAD_EVENTS} events per upload")
        if len({part.task_id for part in value}) != len(value):
            raise ValueError("each task at most once per upload")
        return value


#: Most events in one :class:`WorkerUpload` (all tasks together).
MAX_UPLOAD_EVENTS = 10_000


def reject_non_finite_upload(upload: WorkerUpload) -> WorkerUpload:
    """:func:`reject_non_finite` for every part of a :class:`WorkerUpload`.

    Raises:
        ValueError: a non-finite number was found (the request gets a 422).
    """
    for part in upload.tasks:
        reject_non_finite(part)
    return upload


class PartProblem(_Model):
    """Why one part of a :class:`WorkerUpload` was refused, as the per-task routes would say
    it: ``status`` 404 (no such task of the owner), 409 with ``next_index`` (a gap: resend
    from there), 409 without (the lease is lost or the turn already ended; final)."""

    status: int
    detail: str
    next_index: int | None = None


class TaskUploadResult(_Model):
    """The answer for one part of a :class:`WorkerUpload`.

    ``next_index`` is the index the server expects next (when the part was accepted);
    ``finished`` is the task's status once the part's ``finish`` was applied (or had been
    already); ``problem`` says why the part, or its finish, was refused.
    """

    task_id: str
    next_index: int | None = None
    cancel_requested: bool = False
    finished: TaskStatus | None = None
    problem: PartProblem | None = None


class WorkerUploadResult(_Model):
    """Answer to ``POST /api/workers/{wid}/events``: one result per part, in order."""

    tasks: list[TaskUploadResult]


class UploadResult(_Model):
    """Answer to an event upload: the next index the server expects and the cancel flag."""

    next_index: int
    cancel_requested: bool


class TurnEnd(_Model):
    """How a worker ends a lease: the task's end, or (``idle``) the end of a conversation's
    turn. The body of a finish without the lease (:class:`FinishRequest` adds it; a
    :class:`TaskEvents` part has its own)."""

    status: Literal[TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.IDLE]
    event_count: int = Field(ge=0, le=MAX_INT32)
    exit_code: int | None = Field(default=None, ge=-MAX_INT32 - 1, le=MAX_INT32)
    error: NulFree | None = Field(default=None, max_length=10_000)
    thread_id: NulFree | None = Field(default=None, max_length=200)


class FinishRequest(TurnEnd):
    """Body of ``POST /api/workers/{wid}/tasks/{tid}/finish``; idempotent.

    ``event_count`` is how many events the worker produced under this lease (for this turn,
    in a conversation); the server refuses (409, with
    ``next_index``) to finish before it has them all, so the terminal event is always last.

    ``idle`` ends a conversation's turn: the lease ends, the task keeps its worker (which
    holds the thread) and waits for a reply; replies that arrived and were not delivered
    queue it again at once. ``error`` with ``idle`` explains a turn that ended early.
    """

    lease_id: NulFree = Field(max_length=64)


class SignalsRequest(_Model):
    """Body of ``POST /api/workers/{wid}/signals``: the tasks the worker is running."""

    task_ids: list[Annotated[NulFree, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )


class Signals(_Model):
    """Answer to a signals long poll, for the running tasks the worker named.

    ``cancel``: tasks whose cancel was requested; ``interrupt``: tasks whose running turn
    the owner interrupted (repeated until the turn ends); ``replies``: replies not yet
    acknowledged (steer the running turn); ``answers``: answered approvals not yet
    acknowledged. Replies and answers repeat in every answer until acknowledged with
    ``POST /api/workers/{wid}/acks`` (:class:`Acks`), so none is lost to a dropped link.
    ``workspaces`` is set while one of the worker's workspaces awaits removal.
    """

    cancel: list[str] = Field(default_factory=list)
    interrupt: list[str] = Field(default_factory=list)
    replies: list[Reply] = Field(default_factory=list)
    answers: list[Approval] = Field(default_factory=list)
    #: A workspace of this worker's awaits removal: sync workspaces now (:class:`WorkspaceSync`).
    workspaces: bool = False


class Acks(_Model):
    """Body of ``POST /api/workers/{wid}/acks``: replies handed to codex and approval
    answers passed on to it. Idempotent; ids of other workers' tasks are ignored."""

    replies: list[Annotated[NulFree, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )
    approvals: list[Annotated[NulFree, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )


#: Largest patch a worker uploads and the server keeps (bytes); a larger diff is kept as its
#: per-file counts only (``truncated``), and the patch is read on the worker.
MAX_PATCH_BYTES = 8 * 1024 * 1024


class FileChange(_Model):
    """One changed file of a task's diff: lines ``added`` and ``removed`` (None for a binary
    file), as ``git diff --numstat`` counts them."""

    path: str = Field(min_length=1, max_length=4096)
    added: int | None = Field(default=None, ge=0)
    removed: int | None = Field(default=None, ge=0)


class WorkspaceReport(_Model):
    """Body of ``PUT /api/workers/{wid}/tasks/{tid}/workspace``: the workspace the worker
    made (or reused) for the task it holds under ``lease_id``, before codex starts in it.

    ``path`` is absolute on the worker; ``base_commit`` the commit it was made at."""

    lease_id: str = Field(min_length=1, max_length=64)
    path: NulFree = Field(min_length=1, max_length=4096)
    base_commit: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class DiffUpload(_Model):
    """Body of ``PUT /api/workers/{wid}/tasks/{tid}/diff``: the task's whole diff against its
    base commit, as the worker just computed it, for the task it holds under ``lease_id``.

    ``patch`` (base64 on the wire) is ``git diff --binary`` output, at most
    :data:`MAX_PATCH_BYTES`; ``truncated`` says the diff was larger and ``patch`` is empty
    (the counts in ``files`` are still whole). The server keeps the latest upload only.

    Note pydantic's ``Base64Bytes``: the model is built from the *encoded* patch
    (``patch=base64.b64encode(raw)``) and ``.patch`` reads back the raw bytes."""

    lease_id: str = Field(min_length=1, max_length=64)
    base_commit: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    files: list[FileChange] = Field(default_factory=list, max_length=100_000)
    patch: Base64Bytes = b""
    truncated: bool = False

    @field_validator("patch")
    @classmethod
    def _patch_fits(cls, value: bytes) -> bytes:
        # After decoding: a length limit on the field would apply to the base64 text.
        if len(value) > MAX_PATCH_BYTES:
            raise ValueError(
                f"the patch is {len(value)} bytes, over {MAX_PATCH_BYTES}: send the counts "
                "with truncated set instead"
            )
        return value


class TaskDiff(_Model):
    """Answer of ``GET /api/tasks/{id}/diff``: the latest diff of the task's workspace
    against ``base_commit``, without the patch (``GET /api/tasks/{id}/patch`` has it).

    ``files`` are the changed files with their line counts, ``added``/``removed`` their
    sums (binary files count 0), ``patch_bytes`` the patch's size (bytes), ``truncated``
    that the patch was over :data:`MAX_PATCH_BYTES` and only the counts were kept, and
    ``updated_at`` when the worker computed it; ``final`` is True once the task is no longer
    running a turn (the diff will not change until the next one)."""

    task_id: str
    base_commit: str
    files: list[FileChange]
    added: int
    removed: int
    patch_bytes: int
    truncated: bool = False
    updated_at: datetime
    final: bool = False


class WorkspaceHeld(_Model):
    """One workspace a worker holds, in :class:`WorkspaceSync`: its task, path and disk use
    (bytes)."""

    task_id: NulFree = Field(min_length=1, max_length=64)
    path: NulFree = Field(min_length=1, max_length=4096)
    bytes: int = Field(ge=0)


class WorkspaceSync(_Model):
    """Body of ``POST /api/workers/{wid}/workspaces``: every workspace the worker holds.
    The server records their sizes and marks those it no longer holds ``removed``."""

    workspaces: list[WorkspaceHeld] = Field(default_factory=list, max_length=10_000)


class WorkspaceOrders(_Model):
    """Answer to :class:`WorkspaceSync`: the tasks whose workspaces the worker is to remove
    (their owner asked, or the task ended longer ago than the server keeps workspaces)."""

    remove: list[str] = Field(default_factory=list)
