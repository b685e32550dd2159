"""Provides ``WorkerSettings``: the one declaration of how a worker runs (pydantic-settings).

``codex-tui worker`` fills it from its flags, and so does ``codex-tui server`` for the worker
it starts beside itself (codex_tui.cli); that worker, a child process
(``python -m server_client.worker``), gets the settings as environment variables
(:meth:`WorkerSettings.environ`) and reads them back with ``WorkerSettings()``.
"""

from __future__ import annotations

import json
import os
import socket

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server_client.models import Label, Runtime

__all__ = ["ENV_PREFIX", "TOKEN_ENV", "WorkerSettings"]

#: Prefix of the worker's environment settings: ``CODEX_TUI_WORKER_MAX_TASKS=8``.
ENV_PREFIX = "CODEX_TUI_WORKER_"
#: The variable the token is read from (the same as the client's).
TOKEN_ENV = "CODEX_TUI_TOKEN"


class WorkerSettings(BaseSettings):
    """How a worker runs.

    Precedence, highest first: arguments (the command's flags), environment variables,
    defaults. Each field ``x`` is read from ``CODEX_TUI_WORKER_X`` (lists as JSON, e.g.
    ``CODEX_TUI_WORKER_LABELS='["gpu"]'``), the token from ``CODEX_TUI_TOKEN``.

    Attributes:
        server: Server URL.
        token: The owner's user token or this worker's own (never logged, never passed to
            codex).
        name: Worker name, unique per owner (default: this host's name).
        workdir_roots: Allowed workdir roots, made absolute (``~`` expanded); default: the
            home folder.
        codex_bin: Explicit codex binary (else ``CODEX_TUI_CODEX_BIN``, else ``codex`` on
            PATH; server_client.worker.codex_bin).
        max_tasks: Tasks run at once, 1..1000.
        pass_env: Extra environment variable names passed through to codex.
        grace_s: SIGINT → SIGKILL grace when a task is cancelled (s), 0..60.
        batch_interval_s: How long an upload waits for more events (s; 0: at once, the
            one-upload-in-flight rule batches under load).
        poll_wait_s: Longest claim long poll (s), up to the server's 60; the signals poll,
            which is also the heartbeat, uses the server's ``heartbeat_s``.
        labels: Labels this worker carries, for routing (``--label``).
        runtime: How it runs a task that does not ask for a runtime: ``app-server`` (a
            conversation: replies, live deltas, approvals) or ``exec`` (one ``codex exec``
            run); announced to the server, which gives an ``exec`` worker no task that needs
            ``app-server`` (``--runtime``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, populate_by_name=True
    )

    server: str = Field(min_length=1)
    token: SecretStr = Field(validation_alias=TOKEN_ENV, min_length=1)
    name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100)
    workdir_roots: list[str] = Field(
        default_factory=lambda: [os.path.expanduser("~")], min_length=1, max_length=64
    )
    codex_bin: str | None = None
    max_tasks: int = Field(default=4, ge=1, le=1000)
    pass_env: list[str] = Field(default_factory=list)
    grace_s: float = Field(default=2.0, ge=0, le=60)
    batch_interval_s: float = Field(default=0.0, ge=0, le=60)
    poll_wait_s: float = Field(default=25.0, gt=0, le=60)
    labels: list[Label] = Field(default_factory=list, max_length=50)
    runtime: Runtime = Runtime.APP_SERVER

    @field_validator("workdir_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[str]) -> list[str]:
        return [os.path.abspath(os.path.expanduser(root)) for root in roots]

    def environ(self) -> dict[str, str]:
        """These settings as the environment variables ``WorkerSettings()`` reads back.

        For a worker started as a child process: the token goes through the environment,
        never the command line. A field that is None is left out (its variable is then
        unset in this process too, or the field would not be None).
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json", exclude={"token"}).items():
            if value is not None:
                env[ENV_PREFIX + name.upper()] = (
                    value if isinstance(value, str) else json.dumps(value)
                )
        env[TOKEN_ENV] = self.token.get_secret_value()
        return env
