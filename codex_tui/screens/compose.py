"""Provides ComposeScreen: write a prompt, pick a workdir or a repository (and its ref),
sandbox, model, the worker to run it on, when codex asks for approval (codex's ``-a``) and the
runtime, and submit a task."""

from __future__ import annotations

import re
from typing import ClassVar

import httpx
from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Select, Static, TextArea

from codex_tui.failures import REQUEST_ERRORS, describe_action_failure
from codex_tui.widgets.keys_footer import KeysFooter
from server_client.client import ApiError, CodexTuiClient
from server_client.models import ApprovalPolicy, Runtime, Sandbox, Task, TaskCreate
from server_client.paths import is_within
from server_client.text import truncate

__all__ = ["ComposeScreen", "parse_labels"]

#: Most worker names offered as suggestions.
MAX_WORKER_SUGGESTIONS = 200
#: Longest placeholder of the worker field (it names the first workers), in characters.
PLACEHOLDER_CHARS = 20

#: How the approval policies read in the form (codex's own values, explained).
_POLICY_TEXT: dict[ApprovalPolicy, str] = {
    ApprovalPolicy.NEVER: "never ask",
    ApprovalPolicy.ON_REQUEST: "on-request",
    ApprovalPolicy.UNTRUSTED: "untrusted (ask all)",
}
#: The runtime choice that leaves it to the worker.
_WORKER_DEFAULT = "default"
_RUNTIME_TEXT: dict[Runtime | str, str] = {
    _WORKER_DEFAULT: "worker's default",
    Runtime.APP_SERVER: "app-server (replies)",
    Runtime.EXEC: "exec (one run)",
}


def parse_labels(text: str) -> list[str]:
    """Labels typed as ``gpu, linux`` or ``gpu linux``: split, blanks dropped, each once."""
    return list(dict.fromkeys(part for part in re.split(r"[,\s]+", text) if part))


class ComposeScreen(Screen[Task | None]):
    """A form for a new task; submits it itself.

    ``Repo`` gives the task a workspace of its own (docs/design.md, "Workspaces"): an
    absolute path of a git repository on the worker, or a URL, and ``Ref`` the branch, tag or
    commit to start from (empty: the repository's HEAD). With a repository the workdir is not
    sent (a task runs in one or the other): the workdir field is greyed out while ``Repo``
    holds text.

    Besides the prompt, workdir, sandbox and model, the task can be routed: ``Worker`` names
    one of the user's workers (suggested as you type, from ``client.list_workers()``;
    right arrow accepts a suggestion) and ``Labels`` lists labels the worker must carry
    (comma or space separated). Both are optional; a routed task waits queued until a
    matching worker is online.

    ``ctrl+s`` validates the form and calls ``client.create_task`` in a worker; on success the
    screen dismisses with the created :class:`~server_client.models.Task`, on failure it shows
    the server's problem inline and keeps everything typed. Escape dismisses with None (after
    a confirmation when the prompt holds text).

    The workdir is prefilled with ``default_workdir`` while it lies inside a root one of the
    user's workers reports; otherwise, once the workers are listed, with their first root
    (kept when no worker reports a root: the server checks it).

    Args:
        client: The SDK client.
        default_workdir: Prefills the workdir field when a worker allows it.
        prompt: Prefills the prompt.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Submit", id="submit", priority=True),
        Binding("escape", "back", "Back", id="back"),
        # Outside the text fields, the app's `q` must not throw the form away.
        Binding("q", "ignore", show=False, id="compose-no-quit"),
    ]

    DEFAULT_CSS = """
    ComposeScreen {
        layout: vertical;
    }
    ComposeScreen > #compose-form {
        height: 1fr;
        padding: 0 1;
    }
    ComposeScreen #compose-title {
        height: 1;
        text-style: bold;
        color: $primary;
    }
    ComposeScreen #prompt-input {
        height: 1fr;
        min-height: 5;
    }
    ComposeScreen .compose-row {
        height: auto;
    }
    ComposeScreen .compose-label {
        width: 9;
        padding: 1 1 0 0;
        color: $foreground-muted;
    }
    ComposeScreen #model-label, ComposeScreen #labels-label {
        margin-left: 1;
        width: 7;
    }
    ComposeScreen #workdir-input, ComposeScreen #repo-input {
        width: 1fr;
    }
    ComposeScreen #ref-label {
        margin-left: 1;
        width: 5;
    }
    ComposeScreen #ref-input {
        width: 22;
    }
    ComposeScreen #sandbox-select, ComposeScreen #worker-input,
    ComposeScreen #approval-select {
        width: 26;
    }
    ComposeScreen #runtime-label {
        margin-left: 1;
        width: 7;
    }
    ComposeScreen #runtime-select {
        width: 1fr;
    }
    ComposeScreen #model-input, ComposeScreen #labels-input {
        width: 1fr;
    }
    ComposeScreen #compose-error {
        display: none;
        height: auto;
        max-height: 6;
        color: $error;
    }
    ComposeScreen.-error #compose-error {
        display: block;
    }
    ComposeScreen #compose-busy {
        display: none;
        height: 1;
        color: $foreground-muted;
    }
    ComposeScreen.-submitting #compose-busy {
        display: block;
    }
    """

    def __init__(
        self,
        client: CodexTuiClient,
        *,
        default_workdir: str | None = None,
        prompt: str = "",
    ) -> None:
        super().__init__()
        self.client = client
        self.default_workdir = default_workdir
        self.initial_prompt = prompt
        self._submitting = False
        self._error = ""
        self._worker_names: list[str] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="compose-form"):
            yield Static("New task", id="compose-title")
            prompt = TextArea(
                self.initial_prompt,
                id="prompt-input",
                soft_wrap=True,
                tab_behavior="focus",
                placeholder="What should codex do?",
            )
            prompt.border_title = "Prompt"
            yield prompt
            with Horizontal(classes="compose-row"):
                yield Label("Workdir", classes="compose-label")
                yield Input(
                    self.default_workdir or "",
                    placeholder="worker's first root",
                    id="workdir-input",
                )
            with Horizontal(classes="compose-row"):
                yield Label("Repo", classes="compose-label")
                yield Input(placeholder="optional: git path or URL", id="repo-input")
                yield Label("Ref", classes="compose-label", id="ref-label")
                yield Input(placeholder="HEAD", id="ref-input")
            with Horizontal(classes="compose-row"):
                yield Label("Sandbox", classes="compose-label")
                yield Select(
                    [(sandbox.value, sandbox) for sandbox in Sandbox],
                    value=Sandbox.WORKSPACE_WRITE,
                    allow_blank=False,
                    id="sandbox-select",
                )
                yield Label("Model", classes="compose-label", id="model-label")
                yield Input(placeholder="codex default", id="model-input")
            with Horizontal(classes="compose-row"):
                yield Label("Worker", classes="compose-label")
                yield Input(placeholder="any worker", id="worker-input")
                yield Label("Labels", classes="compose-label", id="labels-label")
                yield Input(placeholder="none (e.g. gpu, linux)", id="labels-input")
            with Horizontal(classes="compose-row"):
                yield Label("Approval", classes="compose-label")
                yield Select(
                    [(text, policy) for policy, text in _POLICY_TEXT.items()],
                    value=ApprovalPolicy.NEVER,
                    allow_blank=False,
                    id="approval-select",
                )
                yield Label("Runs", classes="compose-label", id="runtime-label")
                yield Select(
                    [(text, runtime) for runtime, text in _RUNTIME_TEXT.items()],
                    value=_WORKER_DEFAULT,
                    allow_blank=False,
                    id="runtime-select",
                )
            yield Static(id="compose-error")
            yield Static("Submitting…", id="compose-busy")
        yield KeysFooter()

    def on_mount(self) -> None:
        """Start in the prompt; fetch worker names for the worker field's suggestions."""
        self.query_one("#prompt-input", TextArea).focus()
        self.run_worker(
            self._load_worker_names(),
            name="compose-worker-names",
            group="compose-worker-names",
            exclusive=True,
            exit_on_error=False,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        """The error shown, if any."""
        return self._error if self.has_class("-error") else None

    @property
    def worker_names(self) -> list[str] | None:
        """The worker names offered as suggestions, or None until they are loaded."""
        return self._worker_names

    def build_request(self) -> TaskCreate:
        """The form as a request body.

        Raises:
            ValueError: the form is not valid (pydantic's ValidationError is one).
        """
        prompt = self.query_one("#prompt-input", TextArea).text.strip()
        if not prompt:
            raise ValueError("Write a prompt first.")
        workdir = self.query_one("#workdir-input", Input).value.strip()
        repo = self.query_one("#repo-input", Input).value.strip()
        ref = self.query_one("#ref-input", Input).value.strip()
        if ref and not repo:
            raise ValueError("A ref names a commit of the task's repository: fill in Repo too.")
        model = self.query_one("#model-input", Input).value.strip()
        sandbox = self.query_one("#sandbox-select", Select).value
        worker = self.query_one("#worker-input", Input).value.strip()
        labels = parse_labels(self.query_one("#labels-input", Input).value)
        policy = self.query_one("#approval-select", Select).value
        runtime = self.query_one("#runtime-select", Select).value
        return TaskCreate(
            prompt=prompt,
            workdir=None if repo else workdir or None,
            model=model or None,
            sandbox=Sandbox(sandbox) if isinstance(sandbox, str) else Sandbox.WORKSPACE_WRITE,
            worker=worker or None,
            labels=labels,
            approval_policy=(
                ApprovalPolicy(policy) if isinstance(policy, str) else ApprovalPolicy.NEVER
            ),
            runtime=Runtime(runtime) if isinstance(runtime, Runtime) else None,
            repo=repo or None,
            ref=ref or None,
        )

    def action_submit(self) -> None:
        """Validate and submit the form (in a worker)."""
        if self._submitting:
            return
        try:
            request = self.build_request()
        except ValidationError as error:
            self._show_error(
                "\n".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
                )
            )
            return
        except ValueError as error:
            self._show_error(str(error))
            return
        self._submitting = True
        self.add_class("-submitting")
        self.run_worker(
            self._submit(request),
            name="submit-task",
            group="submit",
            exclusive=True,
            exit_on_error=False,
        )

    def action_ignore(self) -> None:
        """Do nothing (shadows the app's ``q``)."""

    def action_back(self) -> None:
        """Go back without submitting; a prompt with text is thrown away only after a
        confirmation."""
        if not self.query_one("#prompt-input", TextArea).text.strip():
            self.dismiss(None)
            return
        from codex_tui.screens.confirm import ConfirmModal

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.dismiss(None)

        self.app.push_screen(
            ConfirmModal(
                "Throw this prompt away?",
                confirm_label="Discard",
                cancel_label="Keep writing",
            ),
            answered,
        )

    # -- internals --------------------------------------------------------------------------

    async def _submit(self, request: TaskCreate) -> None:
        try:
            task = await self.client.create_task(
                request.prompt,
                workdir=request.workdir,
                model=request.model,
                sandbox=request.sandbox,
                worker=request.worker,
                labels=request.labels,
                approval_policy=request.approval_policy,
                runtime=request.runtime,
                repo=request.repo,
                ref=request.ref,
            )
        except (ApiError, httpx.HTTPError) as error:
            self._show_error(describe_action_failure(error))
        else:
            self.dismiss(task)
        finally:
            self._submitting = False
            self.remove_class("-submitting")

    async def _load_worker_names(self) -> None:
        try:
            workers = await self.client.list_workers()
        except REQUEST_ERRORS:
            return  # no suggestions; the field still takes any name
        self._prefill_workdir([root for worker in workers for root in worker.workdir_roots])
        names = [worker.name for worker in workers][:MAX_WORKER_SUGGESTIONS]
        self._worker_names = names
        field = self.query_one("#worker-input", Input)
        field.suggester = SuggestFromList(names, case_sensitive=False)
        if names:
            shown = "any: " + ", ".join(names[:5])
            limit = PLACEHOLDER_CHARS
            field.placeholder = truncate(shown, limit)

    def _prefill_workdir(self, roots: list[str]) -> None:
        """Keep the prefilled workdir only when it lies inside a root the user's workers
        allow; else prefill their first root. Without a reported root (no worker yet) the
        prefill stays, and a workdir the user typed meanwhile stays too."""
        field = self.query_one("#workdir-input", Input)
        if not roots or field.value != (self.default_workdir or ""):
            return
        value = field.value.strip()
        if not any(is_within(value, root) for root in roots):
            field.value = roots[0]

    @on(Input.Changed, "#repo-input")
    def _repo_changed(self, event: Input.Changed) -> None:
        """Grey the workdir out while a repository is given (it is not sent then)."""
        self.query_one("#workdir-input", Input).disabled = bool(event.value.strip())

    def _show_error(self, message: str) -> None:
        self._error = message
        self.query_one("#compose-error", Static).update(Content(message))
        self.add_class("-error")
