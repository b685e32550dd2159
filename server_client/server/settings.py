"""Provides the server's settings."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field


class ServerSettings(BaseModel):
    """How a server runs.

    Attributes:
        db_url: ``sqlite:///path`` or ``postgresql://...``.
        workdir_roots: Roots a task's workdir must lie in, besides those its owner's workers
            report (default: the home folder).
        heartbeat_s: SSE heartbeat interval (s); at most 15 (design.md).
        max_wait_s: Longest long poll a worker may ask for (s).
        lease_ttl_s: A worker not heard from for this long (s) loses its leases: its running
            tasks end ``lost`` at the next sweep (reliability.md R2).
        sweep_interval_s: How often lost leases are looked for (s).
        pairing_ttl_s: Lifetime of a pairing code (s).
    """

    db_url: str
    workdir_roots: list[str] = Field(default_factory=lambda: [os.path.expanduser("~")])
    heartbeat_s: float = Field(default=15.0, gt=0, le=15.0)
    max_wait_s: float = Field(default=30.0, gt=0)
    lease_ttl_s: float = Field(default=30.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    pairing_ttl_s: float = Field(default=600.0, gt=0)
