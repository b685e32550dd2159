"""Provides the local client's stored connection: the server URL and its user token.

The server writes it on its first start (so the same OS user's ``codex-tui`` commands connect
with no flags) and clients read it. The URL sits in ``<config>/connection.json``. The token
goes to the OS keyring when a usable backend exists (service ``codex-tui``, user = URL);
otherwise, or when ``CODEX_TUI_HOME`` isolates the install, or ``CODEX_TUI_KEYRING=0``, into
``<config>/token`` with mode 0600. Tokens are never logged.

``codex-tui login`` stores a token per server URL the same way (the keyring, user = URL, else
``<config>/tokens.json``, 0600, URL → token) and remembers the server last logged in to in
``<config>/current-server.json``; ``logout`` removes both for its URL.
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


TOKENS_FILE = "tokens.json"
CURRENT_FILE = "current-server.json"


def normalise_url(server: str) -> str:
    """``server`` as tokens are stored under it: without trailing slashes."""
    return server.rstrip("/")


def _read_json_object(path: Path) -> dict[str, object]:
    """The JSON object in ``path``, or an empty one when it is missing or unreadable."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def save_token(server: str, token: str, dirs: AppDirs | None = None) -> str:
    """Store ``token`` for ``server`` (``codex-tui login``); returns where it went: "keyring",
    or "file" (``<config>/tokens.json``, mode 0600)."""
    dirs = (dirs or AppDirs.resolve()).ensure()
    server = normalise_url(server)
    if _keyring_usable(dirs):
        try:
            import keyring

            keyring.set_password(KEYRING_SERVICE, server, token)
        except Exception as exc:  # noqa: BLE001 - any backend failure falls back to the file
            log.warning("keyring unavailable (%s); storing the token in a 0600 file", type(exc))
        else:
            _write_tokens(dirs, server, None)
            return "keyring"
    _write_tokens(dirs, server, token)
    return "file"


def _write_tokens(dirs: AppDirs, server: str, token: str | None) -> None:
    """Set (or, with None, remove) ``server``'s entry of ``tokens.json``."""
    path = dirs.config / TOKENS_FILE
    tokens = _read_json_object(path)
    if token is None:
        if tokens.pop(server, None) is None:
            return
    else:
        tokens[server] = token
    write_private(path, json.dumps(tokens) + "\n")


def load_token(server: str, dirs: AppDirs | None = None) -> tuple[str, str] | None:
    """The stored token for ``server`` and where it was found ("file" or "keyring"): one
    ``login`` stored, else the local server's own (:func:`load_connection`); None if none."""
    dirs = dirs or AppDirs.resolve()
    server = normalise_url(server)
    token = _read_json_object(dirs.config / TOKENS_FILE).get(server)
    if isinstance(token, str) and token:
        return token, "file"
    if _keyring_usable(dirs):
        try:
            import keyring

            found = keyring.get_password(KEYRING_SERVICE, server)
        except Exception:  # noqa: BLE001 - an unusable keyring means no stored token
            found = None
        if found:
            return found, "keyring"
    local = load_connection(dirs)
    if local is not None and normalise_url(local.server) == server:
        return local.token, "file" if (dirs.config / TOKEN_FILE).exists() else "keyring"
    return None


def delete_token(server: str, dirs: AppDirs | None = None) -> bool:
    """Forget every stored token for ``server`` (``codex-tui logout``), the local server's
    own included, and stop using it as the current server. True if there was one."""
    dirs = dirs or AppDirs.resolve()
    server = normalise_url(server)
    had = load_token(server, dirs) is not None
    _write_tokens(dirs, server, None)
    if _keyring_usable(dirs):
        try:
            import keyring

            keyring.delete_password(KEYRING_SERVICE, server)
        except Exception:  # noqa: BLE001 - nothing stored there (or no usable keyring)
            pass
    local = load_connection(dirs)
    if local is not None and normalise_url(local.server) == server:
        (dirs.config / TOKEN_FILE).unlink(missing_ok=True)
    if load_current_server(dirs) == server:
        (dirs.config / CURRENT_FILE).unlink(missing_ok=True)
    return had


def save_current_server(server: str, dirs: AppDirs | None = None) -> None:
    """Remember ``server`` as the one to use when no flag or environment names one."""
    dirs = (dirs or AppDirs.resolve()).ensure()
    body = json.dumps({"server": normalise_url(server)}) + "\n"
    write_private(dirs.config / CURRENT_FILE, body)


def load_current_server(dirs: AppDirs | None = None) -> str | None:
    """The server last logged in to (:func:`save_current_server`), or None."""
    dirs = dirs or AppDirs.resolve()
    server = _read_json_object(dirs.config / CURRENT_FILE).get("server")
    return server if isinstance(server, str) and server else None


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
