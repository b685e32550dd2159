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
    """

    db_url: str
    workdir_roots: list[str] = Field(default_factory=lambda: [os.path.expanduser("~")])
    heartbeat_s: float = Field(default=15.0, gt=0, le=15.0)
    max_wait_s: float = Field(default=30.0, gt=0)
