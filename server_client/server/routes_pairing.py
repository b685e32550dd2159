"""Provides the pairing routes: a user creates a one-time code; a new worker redeems it for
a worker token bound to that user (like a CI runner's registration token)."""

from __future__ import annotations

import shlex

from fastapi import APIRouter, Request

from server_client.models import PairingCode, PairRequest, PairResult
from server_client.server.deps import CurrentUser, SettingsDep, StoreDep

router = APIRouter(prefix="/api", tags=["pairing"])


def public_url(request: Request) -> str:
    """The server's address as the client reached it (what another machine should use)."""
    return str(request.base_url).rstrip("/")


@router.post("/pairing-codes", status_code=201)
async def create_pairing_code(
    request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> PairingCode:
    """A single-use code, valid for 10 minutes, and the command to run on the new machine."""
    code, expires = await store.create_pairing_code(user, settings.pairing_ttl_s)
    command = f"codex-tui worker --server {shlex.quote(public_url(request))} --pair {code}"
    return PairingCode(code=code, expires_at=expires, command=command)


@router.post("/pair")
async def pair(body: PairRequest, store: StoreDep) -> PairResult:
    """Redeem a pairing code (no bearer token: the code is the credential). Exactly one of
    several concurrent redemptions of a code succeeds; the others get 400."""
    _owner, worker, token = await store.redeem_pairing_code(body)
    return PairResult(worker=worker, token=token)
