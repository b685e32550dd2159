"""Provides the routes' dependencies: the store, the hub, settings and the bearer-token user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server_client.server import context
from server_client.server.hub import Hub
from server_client.server.settings import ServerSettings
from server_client.server.store import Principal, Store, User

_bearer = HTTPBearer(auto_error=False, description="A user token (`ctu_...`).")


async def get_store(request: Request) -> Store:
    """The app's store."""
    store: Store = request.app.state.store
    return store


async def get_hub(request: Request) -> Hub:
    """The app's wake-up hub."""
    hub: Hub = request.app.state.hub
    return hub


async def get_settings(request: Request) -> ServerSettings:
    """The app's settings."""
    settings: ServerSettings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]

#: What a task or worker id in a path may look like; anything else is a 422 before the store is
#: asked (ids are hex; this also keeps NUL and other bytes PostgreSQL refuses out of queries).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

TaskIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A task id.")]
WorkerIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A worker id.")]


#: The 401 detail for a request or socket that carries no bearer token.
MISSING_TOKEN = (
    "missing bearer token: send 'Authorization: Bearer <token>' "
    "(codex-tui --token or CODEX_TUI_TOKEN)"
)


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The request's bearer token, not yet checked (routes that check it themselves).

    Raises:
        HTTPException: 401 when there is none.
    """
    if credentials is None:
        raise HTTPException(401, MISSING_TOKEN)
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def set_principal(principal: Principal | None) -> Principal:
    """Record who the request acts for (logs, audit rows) and return them.

    Raises:
        HTTPException: 401 for None (an unknown or revoked token, never echoed back).
    """
    if principal is None:
        raise HTTPException(401, "invalid or revoked token")
    if principal.kind == "worker":
        context.set_actor(f"worker:{principal.worker_id}")
    else:
        context.set_actor(f"user:{principal.user.name}")
    return principal


async def upload_principal(store: StoreDep, token: BearerToken) -> Principal:
    """:func:`current_principal` for the routes whose store call checks the token again in its
    own statement, the event upload and the finish (:meth:`Store.authenticate_known`: no
    query for a token valid a moment ago).

    Raises:
        HTTPException: 401 when the token is missing or unknown.
    """
    return set_principal(await store.authenticate_known(token))


async def current_principal(store: StoreDep, token: BearerToken) -> Principal:
    """Who the request's bearer token speaks for (a user or one of their workers).

    Raises:
        HTTPException: 401 when the token is missing, unknown or revoked (never echoed back).
    """
    return set_principal(await store.authenticate(token))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_user(principal: CurrentPrincipal) -> User:
    """The user of a *user* token.

    Raises:
        HTTPException: 403 for a worker token, which may only use the worker routes.
    """
    if principal.kind != "user":
        raise HTTPException(403, "a worker token can only be used by its worker")
    return principal.user


CurrentUser = Annotated[User, Depends(current_user)]
