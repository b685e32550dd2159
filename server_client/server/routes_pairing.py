"""Provides the pairing routes: a user creates a one-time code; a new worker redeems it for
a worker token bound to that user (like a CI runner's registration token)."""

from __future__ import annotations

import shlex

from fastapi import APIRouter, Request

from server_client.models import PairingCode, PairRequest, PairResult
from server_client.server.deps import CurrentUser, SettingsDep, StoreDep
from server_client.server.problems import PROBLEM_RESPONSES
from server_client.server.ratelimit import PairingLimit
from server_client.server.store import PairingError

router = APIRouter(prefix="/api", tags=["pairing"], responses=PROBLEM_RESPONSES)


def public_url(request: Request) -> str:
    """The server's address as the client reached it (what another machine should use)."""
    return str(request.base_url).rstrip("/")


@router.post("/pairing-codes", status_code=201)
async def create_pairing_code(
    request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> PairingCode:
    """A single-use code, valid for 10 minutes, and the command to run on the new machine,
    which names the server's ``public_url`` when one is set."""
    code, expires = await store.create_pairing_code(user, settings.pairing_ttl_s)
    configured = settings.public_url.rstrip("/") if settings.public_url else None
    server = configured or public_url(request)
    command = f"codex-tui worker --server {shlex.quote(server)} --pair {code}"
    return PairingCode(code=code, expires_at=expires, command=command, public_url=configured)


@router.post("/pair", dependencies=[PairingLimit])  # 429 over rate_pairing per address
async def pair(body: PairRequest, store: StoreDep) -> PairResult:
    """Redeem a pairing code (no bearer token: the code is the credential). Exactly one of
    several concurrent redemptions of a code succeeds; the others get 400."""
    try:
        _owner, worker, token = await store.redeem_pairing_code(body)
    except PairingError:
        await store.record_audit("pairing.refused", None, None, {"worker": body.name})
        raise
    return PairResult(worker=worker, token=token)
