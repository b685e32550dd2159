"""Provides ``codex-tui admin``: users, tokens, workers and the audit log, directly in the
server's store (run on the server's machine)."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from codex_tui.cli.common import default_db_url, fail

__all__ = ["admin"]

T = TypeVar("T")


def _admin_run(work: Coroutine[Any, Any, T]) -> T:
    """Run one store operation; a refusal (no such user, ...) exits 1 with its message."""
    import asyncio

    from server_client.server.store import StoreError

    try:
        return asyncio.run(work)
    except StoreError as exc:
        fail(str(exc), 1)


db_option = click.option(
    "--db",
    "db_url",
    default=None,
    envvar="CODEX_TUI_SERVER_DB_URL",
    help="Database URL (default: the local server's SQLite file).",
)


@click.group()
def admin() -> None:
    """Manage users, tokens and workers and read the audit log (on the server's machine,
    directly in its store)."""


@admin.group(name="user")
def admin_user() -> None:
    """Users."""


@admin_user.command(name="add")
@db_option
@click.argument("name")
def admin_user_add(db_url: str | None, name: str) -> None:
    """Create user NAME and print their token (shown only this once)."""
    from server_client.server import admin as ops

    user, token = _admin_run(ops.add_user(db_url or default_db_url(), name))
    click.echo(f"created user {user.name}; their token (shown once):", err=True)
    click.echo(token)


@admin_user.command(name="list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def admin_user_list(db_url: str | None, as_json: bool) -> None:
    """List users."""
    import json

    from server_client.server import admin as ops

    for user, created, live in _admin_run(ops.list_users(db_url or default_db_url())):
        if as_json:
            row = {"id": user.id, "name": user.name, "created_at": created.isoformat()}
            click.echo(json.dumps({**row, "tokens": live}))
        else:
            click.echo(
                f"{user.name:<20} {user.id}  created {created:%Y-%m-%d %H:%M}  tokens {live}"
            )


@admin.group(name="token")
def admin_token() -> None:
    """Tokens (stored only as hashes: a lost token is revoked and replaced, never shown)."""


@admin_token.command(name="add")
@db_option
@click.argument("user")
def admin_token_add(db_url: str | None, user: str) -> None:
    """Create a new token for USER and print it (shown only this once)."""
    from server_client.server import admin as ops

    click.echo(_admin_run(ops.add_token(db_url or default_db_url(), user)))


@admin_token.command(name="list")
@db_option
@click.option("--user", "user_name", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def admin_token_list(db_url: str | None, user_name: str | None, as_json: bool) -> None:
    """List tokens: id, user, kind (user or worker), worker, created, revoked."""
    import dataclasses
    import json

    from server_client.server import admin as ops

    for info in _admin_run(ops.list_tokens(db_url or default_db_url(), user_name)):
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(info), default=str))
            continue
        revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        worker = f" worker {info.worker}" if info.worker else ""
        click.echo(f"{info.id:>5}  {info.user:<16} {info.kind:<6}{worker}  {revoked}")


@admin_token.command(name="revoke")
@db_option
@click.option("--user", "user_name", help="Revoke every token of this user.")
@click.argument("token_ids", nargs=-1, type=int)
def admin_token_revoke(
    db_url: str | None, user_name: str | None, token_ids: tuple[int, ...]
) -> None:
    """Revoke tokens by id (see `admin token list`) or all of --user's; they fail at once."""
    from server_client.server import admin as ops

    if bool(token_ids) == bool(user_name):
        fail("give token ids or --user NAME (one of the two)")
    count = _admin_run(ops.revoke_tokens(db_url or default_db_url(), token_ids, user_name))
    click.echo(f"revoked {count} token(s)")
    if count == 0:
        raise SystemExit(1)


@admin.group(name="worker")
def admin_worker() -> None:
    """Workers: what they may run."""


@admin_worker.command(name="allow-danger")
@db_option
@click.option("--revoke", is_flag=True, help="Take the permission away again.")
@click.argument("user")
@click.argument("worker")
def admin_worker_allow_danger(db_url: str | None, revoke: bool, user: str, worker: str) -> None:
    """Let USER's worker WORKER run danger-full-access tasks (no sandbox at all).

    The server must also allow the mode: CODEX_TUI_SERVER_ALLOWED_SANDBOXES.
    """
    from server_client.server import admin as ops

    got = _admin_run(ops.set_worker_danger(db_url or default_db_url(), user, worker, not revoke))
    verb = "may" if got.allow_danger else "may no longer"
    click.echo(f"worker {got.name} of {user} {verb} run danger-full-access tasks")


def _since(value: str | None) -> datetime | None:
    """``--since``: an ISO 8601 time (UTC when no zone) or an age such as 30m, 2h, 7d."""
    from server_client.models import utcnow

    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return utcnow() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r}: give an ISO time (2026-11-21T09:00) or an age (30m, 2h, 7d)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@admin.command(name="audit")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--user", "user_name", help="Only rows of this user.")
@click.option("--action", help="Only this action, e.g. task.create, task.cancel, pairing.redeem.")
@click.option("--task", "task_id", help="Only rows about this task.")
@click.option("--since", help="Only rows since an ISO time or an age (30m, 2h, 7d).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def admin_audit(
    db_url: str | None,
    as_json: bool,
    user_name: str | None,
    action: str | None,
    task_id: str | None,
    since: str | None,
    limit: int,
) -> None:
    """Print the audit log: one row per state-changing call, oldest of the newest LIMIT first.

    Columns: time, actor, owner, action, target, request id, client address, detail.
    """
    import json

    from server_client.server import admin as ops

    rows = _admin_run(
        ops.read_audit(
            db_url or default_db_url(),
            user_name=user_name,
            action=action,
            target=f"task:{task_id}" if task_id else None,
            since=_since(since),
            limit=limit,
        )
    )
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.as_dict()))
            continue
        detail = " ".join(f"{k}={v}" for k, v in row.detail.items() if v is not None)
        click.echo(
            f"{row.at:%Y-%m-%d %H:%M:%S} {row.actor:<22} {row.owner or '-':<12} "
            f"{row.action:<18} {row.target or '-':<26} {row.request_id or '-':<16} "
            f"{row.client_addr or '-':<15} {detail}".rstrip()
        )
