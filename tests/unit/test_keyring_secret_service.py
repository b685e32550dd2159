"""The token's keyring path against a real Secret Service (issue 16): a private D-Bus session
bus with gnome-keyring-daemon on it, a throwaway HOME, and the project's own credential
functions (server_client.credentials) run in a subprocess with that environment, exactly as
``codex-tui`` would run them for a user without ``CODEX_TUI_HOME``. When no Secret Service
can be reached the token goes to the 0600 file instead.

It needs ``dbus-daemon`` and ``gnome-keyring-daemon`` (Debian: ``apt-get install
gnome-keyring dbus-x11``; .ci/run installs them). Without them it skips with that message,
except in CI (the ``CI`` variable set), where it fails: CI must never skip it silently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

TOOLS = ("dbus-daemon", "gnome-keyring-daemon")
INSTALL = "apt-get install gnome-keyring dbus-x11"
URL = "http://127.0.0.1:8765"

#: What the subprocess does with the credential functions; prints one JSON object.
SCRIPT = """
import json, os, stat
from server_client import credentials
from server_client.paths import AppDirs

dirs = AppDirs.resolve()
out = {"config": str(dirs.config), "isolated": dirs.isolated}
out["saved_in"] = credentials.save_connection(URL, "ctu_local_secret", dirs)
out["token_file"] = (dirs.config / credentials.TOKEN_FILE).exists()
loaded = credentials.load_connection(dirs)
out["loaded"] = loaded.token if loaded else None
try:
    import keyring
    out["in_keyring"] = keyring.get_password(credentials.KEYRING_SERVICE, URL)
    out["backend"] = type(keyring.get_keyring()).__module__
except Exception as exc:
    out["in_keyring"] = None
    out["backend"] = repr(exc)
out["login_saved_in"] = credentials.save_token("http://devbox:8765/", "ctu_login_secret", dirs)
out["login_loaded"] = credentials.load_token("http://devbox:8765", dirs)
out["tokens_file"] = (dirs.config / credentials.TOKENS_FILE).exists()
out["deleted"] = credentials.delete_token("http://devbox:8765", dirs)
out["after_delete"] = credentials.load_token("http://devbox:8765", dirs)
if out["token_file"]:
    out["token_mode"] = stat.S_IMODE(os.stat(dirs.config / credentials.TOKEN_FILE).st_mode)
print(json.dumps(out))
""".replace("URL", repr(URL))


def _require_tools() -> None:
    """Skip without the tools (fail in CI), naming the packages to install."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    message = f"the Secret Service test needs {', '.join(missing)}: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: this test must not be skipped)", pytrace=False)
    pytest.skip(message)


def _user_env(home: Path) -> dict[str, str]:
    """A user's environment with every per-user folder under ``home`` (no CODEX_TUI_*)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CODEX_TUI_", "XDG_", "DBUS_", "GNOME_KEYRING", "PYTHON_KEYRING"))
    }
    runtime = home / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(runtime),
    )
    return env


def _kill_processes_of(home: Path) -> None:
    """Kill what this test started: every process whose HOME is ``home``."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HOME") == str(home) and proc.pid != os.getpid():
                proc.kill()
        except (psutil.Error, OSError):
            continue


@dataclass
class Session:
    """A private D-Bus session with an unlocked gnome-keyring on it."""

    home: Path
    env: dict[str, str]


@pytest.fixture
def secret_service(tmp_path: Path) -> Iterator[Session]:
    """Start ``dbus-daemon --session`` and ``gnome-keyring-daemon --unlock`` (its password
    from stdin) for a throwaway HOME; both are killed afterwards."""
    _require_tools()
    home = tmp_path / "home"
    env = _user_env(home)
    bus = subprocess.run(
        ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    address, pid = bus.stdout.split()[:2]
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    try:
        # It forks a daemon and returns once the daemon serves the secrets component.
        keyring_daemon = subprocess.run(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets"],
            env=env,
            input="test-keyring-password",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert keyring_daemon.returncode == 0, keyring_daemon.stderr
        yield Session(home=home, env=env)
    finally:
        os.kill(int(pid), signal.SIGTERM)
        _kill_processes_of(home)


def _credentials(env: dict[str, str]) -> dict[str, object]:
    """Run :data:`SCRIPT` with ``env``; its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    return out


def test_the_token_is_stored_read_and_deleted_in_the_secret_service(
    secret_service: Session,
) -> None:
    out = _credentials(secret_service.env)
    assert out["isolated"] is False
    assert out["backend"] == "keyring.backends.SecretService", out
    assert out["saved_in"] == "keyring", out
    assert out["token_file"] is False, "no file copy of a token kept in the keyring"
    assert out["loaded"] == "ctu_local_secret"
    assert out["in_keyring"] == "ctu_local_secret"
    assert out["login_saved_in"] == "keyring"
    assert out["login_loaded"] == ["ctu_login_secret", "keyring"]
    assert out["tokens_file"] is False
    assert out["deleted"] is True and out["after_delete"] is None
    # Nothing secret was written under the config folder.
    config = Path(str(out["config"]))
    for path in config.rglob("*"):
        if path.is_file():
            assert "ctu_" not in path.read_text(errors="replace"), path


def test_without_a_reachable_secret_service_the_token_goes_to_a_0600_file(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env = _user_env(home)
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={tmp_path / 'no-bus'}"
    try:
        out = _credentials(env)
    finally:
        _kill_processes_of(home)
    assert out["saved_in"] == "file", out
    assert out["token_file"] is True
    assert out["token_mode"] == stat.S_IRUSR | stat.S_IWUSR
    assert out["loaded"] == "ctu_local_secret"
    assert out["in_keyring"] is None
    assert out["login_saved_in"] == "file" and out["tokens_file"] is True
    assert out["login_loaded"] == ["ctu_login_secret", "file"]
    assert out["deleted"] is True and out["after_delete"] is None
