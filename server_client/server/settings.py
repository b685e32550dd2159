"""Provides the server's settings: flags of ``codex-tui server``, else ``CODEX_TUI_SERVER_*``
environment variables, else the defaults below."""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server_client.models import ApprovalPolicy, Sandbox

#: Sandbox modes allowed unless configured otherwise (danger-full-access needs an admin's say).
DEFAULT_SANDBOXES = [Sandbox.READ_ONLY, Sandbox.WORKSPACE_WRITE]


class ServerSettings(BaseSettings):
    """How a server runs. Each field can be set by ``CODEX_TUI_SERVER_<FIELD>`` (lists as JSON,
    e.g. ``CODEX_TUI_SERVER_ALLOWED_MODELS='["gpt-5-codex"]'``).

    Attributes:
        db_url: ``sqlite:///path`` or ``postgresql://user@host/db``.
        redis_url: ``redis://host:port/db``; when set, rate-limit counters live there so that
            every replica shares them (else in this process's memory).
        workdir_roots: Roots a task's workdir must lie in, besides those its owner's workers
            report (default: the home folder).
        heartbeat_s: SSE heartbeat interval (s); at most 15 (docs/reliability.md E3).
        max_wait_s: Longest long poll a worker may ask for (s).
        lease_ttl_s: A worker not heard from for this long (s) loses its leases: its running
            tasks end ``lost`` at the next sweep (docs/reliability.md R2).
        sweep_interval_s: How often lost leases are looked for (s).
        pairing_ttl_s: Lifetime of a pairing code (s).
        public_url: The address other machines reach this server at (``https://host``,
            ``CODEX_TUI_SERVER_PUBLIC_URL``): the pairing command a new worker runs names it.
            Unset, the command names the address the client reached the server at, which
            is loopback for a local server.
        allowed_sandboxes: Sandbox modes a task may ask for (docs/reliability.md S6); a
            ``danger-full-access`` task is further only claimed by workers an admin marked.
        allowed_approval_policies: Approval policies (codex's ``-a``) a task may ask for
            (default: all); a policy other than ``never`` makes codex ask its owner before
            it runs commands or applies changes.
        allowed_models: Models a task may name; empty means any (``null`` model is always
            allowed: codex's configured default).
        max_prompt_bytes: Largest prompt (UTF-8 bytes); larger ones are refused with 413.
        max_event_bytes: Largest stored event (encoded JSON bytes); longer strings inside
            are cut and marked ``[… truncated N bytes …]`` (docs/reliability.md E6).
        max_body_bytes: Largest request body (bytes); larger ones are refused with 413 before
            they are read into memory. Must stay above the worker's largest batch (4 MiB of
            events, which JSON escaping can grow several-fold).
        max_events_per_task: Events stored per task; past it the task is cancelled and
            further events are dropped, with one marker event.
        rate_task_creations: Task creations per user, in ``limits`` notation.
        max_active_tasks: Queued plus running tasks a user may have at once.
        max_streams: Open event streams per user.
        stream_epoch_s: Epoch of the shared open-stream counters (s): the streams of a
            replica that crashed fade from its users' counts within two epochs
            (server_client.server.ratelimit).
        rate_pairing: Pairing-code redemptions per client address, in ``limits`` notation.
        metrics_token: When set, ``GET /metrics`` needs ``Authorization: Bearer <it>``.
            Unset, ``/metrics`` is open to whoever reaches the server (it shows counts:
            tasks by state, workers online, requests by route; no prompt, name or secret).
            That is the choice on loopback (``--host 127.0.0.1``, the default, reached only
            from this machine and a proxy in front, which can keep ``/metrics`` to its
            monitoring network, docs/deployment.md); bound to any other address without
            one, the server warns at start that ``/metrics`` is open.
        trusted_proxies: Addresses (``10.0.0.5``, ``::1``) and networks (``10.0.0.0/8``) of
            the reverse proxies in front of the server (``CODEX_TUI_SERVER_TRUSTED_PROXIES``,
            comma-separated or a JSON list). Only a request whose direct peer is one of them
            has its ``X-Forwarded-For`` (client address: rate limits per address, audit rows)
            and ``X-Forwarded-Proto`` believed; every other request's own peer address
            counts. Default: none, not even loopback (docs/reliability.md S11).
        request_read_timeout_s: A request's headers must arrive within this many seconds of
            its first byte (or of the connection, for its first request), and its body may
            stall no longer than this between two reads; else the connection is closed, a
            stalled body with a 408 problem first (docs/reliability.md S12). Responses (event
            streams, long polls) are not bounded by it.
        log_json: Write structured JSON log lines (one object per line) instead of text.
        repo_url_schemes: URL schemes a task's ``repo`` may use (``https``, ``ssh``, ``git``,
            ``http``, ``file``; an scp-like ``git@host:path`` counts as ``ssh``). Git's
            command transports (``ext::``, ``fd::``) and URLs carrying credentials are always
            refused. Each worker applies its own policy again before it clones.
        repo_url_hosts: Hosts a task's ``repo`` URL may name (lower case); empty means any.
        workspace_retention_s: How long (s) a finished task's workspace is kept on its
            worker before the worker removes it (0: until removed by hand).
    """

    model_config = SettingsConfigDict(env_prefix="CODEX_TUI_SERVER_", extra="ignore")

    db_url: str
    redis_url: str | None = None
    workdir_roots: list[str] = Field(default_factory=lambda: [os.path.expanduser("~")])
    heartbeat_s: float = Field(default=15.0, gt=0, le=15.0)
    max_wait_s: float = Field(default=30.0, gt=0)
    lease_ttl_s: float = Field(default=30.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    pairing_ttl_s: float = Field(default=600.0, gt=0)
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+(/\S*)?$")
    allowed_sandboxes: list[Sandbox] = Field(default_factory=lambda: list(DEFAULT_SANDBOXES))
    allowed_approval_policies: list[ApprovalPolicy] = Field(
        default_factory=lambda: list(ApprovalPolicy)
    )
    allowed_models: list[str] = Field(default_factory=list)
    max_prompt_bytes: int = Field(default=256 * 1024, gt=0)
    max_event_bytes: int = Field(default=256 * 1024, ge=4096)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    max_events_per_task: int = Field(default=200_000, gt=0)
    rate_task_creations: str = "60/minute"
    max_active_tasks: int = Field(default=50, gt=0)
    max_streams: int = Field(default=64, gt=0)
    stream_epoch_s: float = Field(default=30.0, gt=0)
    rate_pairing: str = "10/minute"
    metrics_token: str | None = None
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    request_read_timeout_s: float = Field(default=10.0, gt=0, le=600)
    log_json: bool = False
    repo_url_schemes: list[str] = Field(default_factory=lambda: ["https", "ssh"])
    repo_url_hosts: list[str] = Field(default_factory=list)
    workspace_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        """Accept ``"10.0.0.5, 10.1.0.0/16"`` or a JSON list; each entry must be an IP
        address or network (uvicorn would take a malformed one as a literal that matches
        nothing, silently)."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if not isinstance(value, list | tuple):
            return value
        proxies = []
        for item in value:
            text = str(item).strip()
            if not text:
                continue
            try:
                if "/" in text:
                    proxies.append(str(ipaddress.ip_network(text, strict=False)))
                else:
                    proxies.append(str(ipaddress.ip_address(text)))
            except ValueError:
                raise ValueError(
                    f"{text!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)"
                ) from None
        return proxies
