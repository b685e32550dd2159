"""Provides task admission: every rule a new task must pass before it is stored, and the
routing rule that decides which worker may claim it (docs/reliability.md S5, S6, S8).

A create request meets them in this order:

1. **Limits** (:func:`check_limits`, a dependency of the route, so they apply before the body
   is read): at most ``max_active_tasks`` queued or running tasks per user, counted in the
   store so replicas agree (429), then one creation from the user's ``rate_task_creations``
   window (429, server_client.server.ratelimit).
2. **Policy** (:func:`check_policy`): the prompt at most ``max_prompt_bytes`` (413); the sandbox
   mode in ``allowed_sandboxes``, the approval policy in ``allowed_approval_policies`` and the
   model in a non-empty ``allowed_models`` (403); an approval policy other than ``never`` not
   with the ``exec`` runtime (400).
3. **Routing** (:func:`admit`): a task routed to a worker by name needs the caller to have a
   worker of that name (400); a ``danger-full-access`` task needs a worker an admin marked:
   the named one, or any of the caller's (403).
4. **Workdir** (:func:`admit`): absolute and inside a root: the named worker's roots when it
   reported some, else the server's ``workdir_roots`` and every root the caller's workers
   reported (400, naming the settings that set those roots). Workers check the real path
   again at spawn. A ``repo`` path meets the same rule; a ``repo`` URL the server's
   ``repo_url_schemes``/``repo_url_hosts`` (400, naming the setting), and the worker's own
   policy again before it clones.

**Routing** (which worker may claim a queued task, applied by the claim,
server_client.server.store.leases): a worker may run a task routed to it by name or to no
worker, whose labels it all carries, and a ``danger-full-access`` task only when an admin
marked it. :func:`routing_clauses` and :func:`labels_fit` state this rule; nothing else does.

Users never pass codex flags: a task carries a prompt, a sandbox mode, a model name and a
workdir, and the worker builds codex's argv from them (server_client.worker.runner).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastapi import HTTPException
from sqlalchemy import ColumnElement, or_

from server_client.models import ApprovalPolicy, Runtime, Sandbox, TaskCreate, Worker
from server_client.paths import WorkdirError, check_workdir_lexically
from server_client.server.db import tasks
from server_client.server.ratelimit import Limiter, RateLimited
from server_client.server.settings import ServerSettings
from server_client.workspaces import (
    RemotePolicy,
    WorkspaceError,
    check_remote_url,
    url_scheme_and_host,
)

if TYPE_CHECKING:
    from server_client.server.store import Store, User

#: Retry-After (s) of a task refused for too many active tasks.
ACTIVE_RETRY_AFTER_S = 10


async def check_limits(
    user: User, store: Store, limiter: Limiter, settings: ServerSettings
) -> None:
    """Admit one task creation by ``user`` under the rate limits, or refuse it.

    The active-task limit is checked first (it takes nothing), then one creation is taken
    from the user's moving window. Two creations racing at the last free active slot may
    both pass (the count is read, not reserved).

    Raises:
        RateLimited: the user has ``max_active_tasks`` queued or running tasks, or made
            ``rate_task_creations`` already.
    """
    active = await store.count_active_tasks(user)
    if active >= settings.max_active_tasks:
        raise RateLimited(
            f"too many active tasks: you have {active} queued or running, at most "
            f"{settings.max_active_tasks} per user (server setting max_active_tasks, "
            "CODEX_TUI_SERVER_MAX_ACTIVE_TASKS); wait for some to end or cancel them",
            ACTIVE_RETRY_AFTER_S,
            "max_active_tasks",
        )
    await limiter.take_task_creation(user.id)


def check_prompt_size(prompt: str, settings: ServerSettings) -> None:
    """Refuse a prompt (a task's or a reply's) over ``max_prompt_bytes``.

    Raises:
        HTTPException: 413, naming the setting.
    """
    size = len(prompt.encode("utf-8"))
    if size > settings.max_prompt_bytes:
        raise HTTPException(
            413,
            f"the prompt is {size} bytes; this server takes at most "
            f"{settings.max_prompt_bytes} (CODEX_TUI_SERVER_MAX_PROMPT_BYTES)",
        )


def check_policy(body: TaskCreate, settings: ServerSettings) -> None:
    """Refuse a task the server's policy forbids.

    Raises:
        HTTPException: 413 when the prompt is longer than ``max_prompt_bytes`` (UTF-8);
            403 when the sandbox mode is not in ``allowed_sandboxes``, the approval policy not
            in ``allowed_approval_policies`` or the model not in a non-empty
            ``allowed_models``; 400 for an approval policy other than ``never`` with the
            ``exec`` runtime (it cannot ask). Each detail names the setting or the fix.
    """
    check_prompt_size(body.prompt, settings)
    if body.sandbox not in settings.allowed_sandboxes:
        allowed = ", ".join(s.value for s in settings.allowed_sandboxes) or "none"
        raise HTTPException(
            403,
            f"sandbox {body.sandbox.value} is not allowed on this server (allowed: {allowed}; "
            "CODEX_TUI_SERVER_ALLOWED_SANDBOXES)",
        )
    if body.approval_policy not in settings.allowed_approval_policies:
        allowed = ", ".join(p.value for p in settings.allowed_approval_policies) or "none"
        raise HTTPException(
            403,
            f"approval policy {body.approval_policy.value} is not allowed on this server "
            f"(allowed: {allowed}; CODEX_TUI_SERVER_ALLOWED_APPROVAL_POLICIES)",
        )
    if body.approval_policy is not ApprovalPolicy.NEVER and body.runtime is Runtime.EXEC:
        raise HTTPException(
            400,
            f"approval policy {body.approval_policy.value} needs the app-server runtime: "
            "codex exec cannot ask for approval (drop --runtime exec, or use -a never)",
        )
    if body.model is not None and settings.allowed_models:
        if body.model not in settings.allowed_models:
            raise HTTPException(
                403,
                f"model {body.model!r} is not allowed on this server (allowed: "
                f"{', '.join(settings.allowed_models)}; CODEX_TUI_SERVER_ALLOWED_MODELS)",
            )


async def admit(
    body: TaskCreate, user: User, store: Store, settings: ServerSettings
) -> tuple[str | None, str | None]:
    """Check ``body`` against the policy, routing and workdir rules (the module docstring's
    2-4) and return the task's workdir and repository as they will be stored (a None
    workdir: the worker's default, unless the task has a repository).

    A ``repo`` that is an absolute path is checked like a workdir (inside the roots); any
    other ``repo`` is a URL, checked against the server's policy (:func:`check_repo_url`).

    Raises:
        HTTPException: 413 or 403 (:func:`check_policy`); 400 for an unknown worker name, a
            workdir or repository outside the roots, or a repository URL the policy refuses;
            403 for ``danger-full-access`` without a marked worker.
    """
    check_policy(body, settings)
    target = None
    if body.worker is not None:
        target = await store.worker_by_name(user, body.worker)
        if target is None:
            names = ", ".join(w.name for w in await store.list_workers(user)) or "none yet"
            raise HTTPException(400, f"you have no worker named {body.worker!r} (yours: {names})")
    if body.sandbox is Sandbox.DANGER_FULL_ACCESS:
        marked = [target] if target is not None else await store.list_workers(user)
        if not any(w.allow_danger for w in marked):
            raise HTTPException(
                403,
                "danger-full-access runs only on a worker an admin allowed it "
                "(`codex-tui admin worker allow-danger USER WORKER`); "
                + (f"worker {target.name} is not" if target else "none of yours is"),
            )
    if body.workdir is None and body.repo is None:
        return None, None
    if body.repo is not None and not os.path.isabs(body.repo):
        return None, check_repo_url(body.repo, settings)
    if target is not None and target.workdir_roots:
        roots = list(target.workdir_roots)
        set_by = (
            f"worker {target.name}'s --workdir-root, or CODEX_TUI_WORKER_WORKDIR_ROOTS "
            "where it runs"
        )
    else:
        roots = list(settings.workdir_roots)
        roots += [r for r in await store.workdir_roots(user) if r not in roots]
        set_by = (
            "the server's --workdir-root or CODEX_TUI_SERVER_WORKDIR_ROOTS, and each of your "
            "workers' --workdir-root"
        )
    try:
        if body.repo is not None:
            return None, check_workdir_lexically(
                body.repo, roots, label="repo", roots_set_by=set_by
            )
        return check_workdir_lexically(body.workdir or "", roots, roots_set_by=set_by), None
    except WorkdirError as exc:
        raise HTTPException(400, str(exc)) from exc


def check_repo_url(url: str, settings: ServerSettings) -> str:
    """``url`` when the server's policy lets a task name it as its ``repo``: the form git
    must never take is refused (command transports, credentials in the URL, a leading
    ``-``), then the scheme must be in ``repo_url_schemes`` and the host in a non-empty
    ``repo_url_hosts``. A ``file://`` URL's folder is checked by the worker, against its
    roots.

    Raises:
        HTTPException: 400, naming the setting that would allow it (or the fix).
    """
    everything = RemotePolicy(schemes=frozenset({"https", "http", "ssh", "git"}), file_roots=("/",))
    try:
        check_remote_url(url, everything)
    except WorkspaceError as exc:
        raise HTTPException(400, f"repo: {exc}") from None
    scheme, host = url_scheme_and_host(url)
    if scheme not in settings.repo_url_schemes:
        allowed = ", ".join(settings.repo_url_schemes) or "none"
        raise HTTPException(
            400,
            f"repo: URL scheme {scheme!r} is not allowed on this server (allowed: {allowed}; "
            "server setting repo_url_schemes, CODEX_TUI_SERVER_REPO_URL_SCHEMES)",
        )
    hosts = [h.lower() for h in settings.repo_url_hosts]
    if hosts and scheme != "file" and host not in hosts:
        raise HTTPException(
            400,
            f"repo: host {host!r} is not allowed on this server (allowed: {', '.join(hosts)}; "
            "server setting repo_url_hosts, CODEX_TUI_SERVER_REPO_URL_HOSTS)",
        )
    return url


def routing_clauses(worker: Worker) -> list[ColumnElement[bool]]:
    """The routing rule's conditions on a ``tasks`` row that SQL can test: routed to
    ``worker`` by name or to no worker, and not ``danger-full-access`` unless ``worker`` is
    marked for it. With :func:`labels_fit`, the whole rule."""
    clauses = [or_(tasks.c.target_worker.is_(None), tasks.c.target_worker == worker.name)]
    if not worker.allow_danger:
        clauses.append(tasks.c.sandbox != Sandbox.DANGER_FULL_ACCESS.value)
    return clauses


def labels_fit(task_labels: Iterable[str], worker: Worker) -> bool:
    """The rest of the routing rule: ``worker`` carries every one of the task's labels."""
    return set(task_labels) <= set(worker.labels)
