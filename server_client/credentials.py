"""Provides the local client's stored connection: the server URL and its user token.

The server writes it on its first start (so the same OS user's ``codex-tui`` commands connect
with no flags) and clients read it. The URL sits in ``<config>/connection.json``. The token
goes to the OS keyring when a usable backend exists (service ``codex-tui``, user = URL);
otherwise, or when ``CODEX_TUI_HOME`` isolates the install, or ``CODEX_TUI_KEYRING=0``, into
``<config>/token`` with mode 0600. Tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from server_client.paths import AppDirs

log = logging.getLogger(__name__)

KEYRING_SERVICE = "codex-tui"
CONNECTION_FILE = "connection.json"
TOKEN_FILE = "token"


@dataclass(frozen=True)
class Connection:
    """A server address and the token to use with it."""

    server: str
    token: str


def _keyring_usable(dirs: AppDirs) -> bool:
    if dirs.isolated or os.environ.get("CODEX_TUI_KEYRING", "1") == "0":
        return False
    try:
        import keyring
        from keyring.backends import chainer, fail
    except ImportError:  # pragma: no cover - keyring is a dependency
        return False
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return False
    priority = getattr(backend, "priority", 0)
    return isinstance(priority, int | float) and priority >= 1


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_connection(server: str, token: str, dirs: AppDirs | None = None) -> str:
    """Store the local client's connection; returns where the token went ("keyring"/"file")."""
    dirs = (dirs or AppDirs.resolve()).ensure()
    where = "file"
    if _keyring_usable(dirs):
        try:
            import keyring

            keyring.set_password(KEYRING_SERVICE, server, token)
            where = "keyring"
        except Exception as exc:  # noqa: BLE001 - any backend failure falls back to the file
            log.warning("keyring unavailable (%s); storing the token in a 0600 file", type(exc))
    if where == "file":
        write_private(dirs.config / TOKEN_FILE, token + "\n")
    else:
        (dirs.config / TOKEN_FILE).unlink(missing_ok=True)
    write_private(dirs.config / CONNECTION_FILE, json.dumps({"server": server}) + "\n")
    return where


def load_connection(dirs: AppDirs | None = None) -> Connection | None:
    """The stored connection, or None when there is none (or its token is missing)."""
    dirs = dirs or AppDirs.resolve()
    try:
        server = json.loads((dirs.config / CONNECTION_FILE).read_text())["server"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(server, str):
        return None
    token_path = dirs.config / TOKEN_FILE
    token: str | None = None
    if token_path.exists():
        token = token_path.read_text().strip() or None
    elif _keyring_usable(dirs):
        try:
            import keyring

            token = keyring.get_password(KEYRING_SERVICE, server)
        except Exception:  # noqa: BLE001 - an unusable keyring means no stored token
            token = None
    return Connection(server=server, token=token) if token else None


WORKER_FILE = "worker.json"


@dataclass(frozen=True)
class WorkerCredentials:
    """What a paired worker keeps so it reconnects after a reboot without a new code."""

    server: str
    token: str
    name: str
    labels: tuple[str, ...] = ()


def save_worker_credentials(creds: WorkerCredentials, dirs: AppDirs | None = None) -> Path:
    """Store a paired worker's server, token, name and labels in ``<config>/worker.json``
    (mode 0600)."""
    dirs = (dirs or AppDirs.resolve()).ensure()
    path = dirs.config / WORKER_FILE
    body = {
        "server": creds.server,
        "token": creds.token,
        "name": creds.name,
        "labels": list(creds.labels),
    }
    write_private(path, json.dumps(body) + "\n")
    return path


def load_worker_credentials(dirs: AppDirs | None = None) -> WorkerCredentials | None:
    """The paired worker's stored credentials, or None."""
    dirs = dirs or AppDirs.resolve()
    try:
        body = json.loads((dirs.config / WORKER_FILE).read_text())
        return WorkerCredentials(
            server=str(body["server"]),
            token=str(body["token"]),
            name=str(body["name"]),
            labels=tuple(str(label) for label in body.get("labels", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
