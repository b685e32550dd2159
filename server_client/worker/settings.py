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
from server_client.paths import AppDirs
from server_client.workspaces import RemotePolicy

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
        upload_socket: Send the uploads over one WebSocket to the server (its
            ``/api/workers/<id>/events/socket``), falling back to requests where it cannot be
            opened (e.g. a proxy without WebSockets); False: requests only.
        poll_wait_s: Longest claim long poll (s), up to the server's 60; the signals poll,
            which is also the heartbeat, uses the server's ``heartbeat_s``.
        labels: Labels this worker carries, for routing (``--label``).
        runtime: How it runs a task that does not ask for a runtime: ``app-server`` (a
            conversation: replies, live deltas, approvals) or ``exec`` (one ``codex exec``
            run); announced to the server, which gives an ``exec`` worker no task that needs
            ``app-server`` (``--runtime``).
        workspace_root: Where the workspaces of tasks with a repository go, one folder per
            task (default: the data folder's ``workspaces``).
        repo_url_schemes: URL schemes of the repositories it clones (``file``: only inside
            its workdir roots); ext::/fd:: transports and URLs with credentials never.
        repo_url_hosts: Hosts it clones from (lower case); empty: any.
        workspace_sync_s: Longest time (s) between two reports of its workspaces and their
            disk use to the server, whose answer names those to remove (by age, or asked).
        local_give_up_s: A local worker (the one ``codex-tui server`` starts beside itself:
            its state folder's ``local-worker.pid`` names it) exits once its server has been
            unreachable this long (s) while no server runs on its state folder (its
            ``server.json`` is gone or names a process that is gone); a server restart
            (seconds) never ends it (docs/reliability.md R10, T3).
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
    upload_socket: bool = True
    poll_wait_s: float = Field(default=25.0, gt=0, le=60)
    labels: list[Label] = Field(default_factory=list, max_length=50)
    runtime: Runtime = Runtime.APP_SERVER
    workspace_root: str = Field(
        default_factory=lambda: str(AppDirs.resolve().data / "workspaces"), min_length=1
    )
    repo_url_schemes: list[str] = Field(default_factory=lambda: ["https", "ssh"])
    repo_url_hosts: list[str] = Field(default_factory=list)
    workspace_sync_s: float = Field(default=60.0, gt=0, le=3600)
    local_give_up_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)

    @field_validator("workdir_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[str]) -> list[str]:
        return [os.path.abspath(os.path.expanduser(root)) for root in roots]

    @field_validator("workspace_root")
    @classmethod
    def _absolute_root(cls, root: str) -> str:
        return os.path.abspath(os.path.expanduser(root))

    def remote_policy(self) -> RemotePolicy:
        """Which remote repositories this worker clones for a task: its
        ``repo_url_schemes`` and ``repo_url_hosts`` (empty: any host), and ``file://`` URLs
        only inside its workdir roots."""
        return RemotePolicy(
            schemes=frozenset(s.lower() for s in self.repo_url_schemes if s.lower() != "file"),
            hosts=frozenset(h.lower() for h in self.repo_url_hosts) or None,
            file_roots=tuple(self.workdir_roots) if "file" in self.repo_url_schemes else (),
        )

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
