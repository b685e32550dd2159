"""Provides ComposeScreen: write a prompt, pick workdir, sandbox and model, and submit a task."""

from __future__ import annotations

from typing import ClassVar

import httpx
from pydantic import ValidationError
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static, TextArea

from server_client.client import ApiError, CodexTuiClient
from server_client.models import Problem, Sandbox, Task, TaskCreate

__all__ = ["ComposeScreen", "describe_problem"]


def describe_problem(problem: Problem) -> str:
    """One readable paragraph for a server problem body (title, detail, field errors)."""
    text = problem.title
    if problem.detail:
        text = f"{text}: {problem.detail}"
    for error in (problem.errors or [])[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg") or error.get("message") or ""
        text += f"\n• {where}: {message}" if where else f"\n• {message}"
    return text


class ComposeScreen(Screen[Task | None]):
    """A form for a new task; submits it itself.

    ``ctrl+s`` validates the form and calls ``client.create_task`` in a worker; on success the
    screen dismisses with the created :class:`~server_client.models.Task`, on failure it shows
    the server's problem inline and keeps everything typed. Escape dismisses with None.

    Args:
        client: The SDK client.
        default_workdir: Prefills the workdir field (empty: the worker's first root).
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
    ComposeScreen #model-label {
        margin-left: 1;
        width: 7;
    }
    ComposeScreen #workdir-input {
        width: 1fr;
    }
    ComposeScreen #sandbox-select {
        width: 26;
    }
    ComposeScreen #model-input {
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
                yield Label("Sandbox", classes="compose-label")
                yield Select(
                    [(sandbox.value, sandbox) for sandbox in Sandbox],
                    value=Sandbox.WORKSPACE_WRITE,
                    allow_blank=False,
                    id="sandbox-select",
                )
                yield Label("Model", classes="compose-label", id="model-label")
                yield Input(placeholder="codex default", id="model-input")
            yield Static(id="compose-error")
            yield Static("Submitting…", id="compose-busy")
        yield Footer()

    def on_mount(self) -> None:
        """Start in the prompt."""
        self.query_one("#prompt-input", TextArea).focus()

    # -- public API -------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        """The error shown, if any."""
        return self._error if self.has_class("-error") else None

    def build_request(self) -> TaskCreate:
        """The form as a request body.

        Raises:
            ValueError: the form is not valid (pydantic's ValidationError is one).
        """
        prompt = self.query_one("#prompt-input", TextArea).text.strip()
        if not prompt:
            raise ValueError("Write a prompt first.")
        workdir = self.query_one("#workdir-input", Input).value.strip()
        model = self.query_one("#model-input", Input).value.strip()
        sandbox = self.query_one("#sandbox-select", Select).value
        return TaskCreate(
            prompt=prompt,
            workdir=workdir or None,
            model=model or None,
            sandbox=Sandbox(sandbox) if isinstance(sandbox, str) else Sandbox.WORKSPACE_WRITE,
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
        """Go back without submitting."""
        self.dismiss(None)

    # -- internals --------------------------------------------------------------------------

    async def _submit(self, request: TaskCreate) -> None:
        try:
            task = await self.client.create_task(
                request.prompt,
                workdir=request.workdir,
                model=request.model,
                sandbox=request.sandbox,
            )
        except ApiError as error:
            self._show_error(describe_problem(error.problem))
        except httpx.HTTPError as error:
            self._show_error(f"Cannot reach the server: {error or type(error).__name__}")
        else:
            self.dismiss(task)
        finally:
            self._submitting = False
            self.remove_class("-submitting")

    def _show_error(self, message: str) -> None:
        self._error = message
        self.query_one("#compose-error", Static).update(Content(message))
        self.add_class("-error")
