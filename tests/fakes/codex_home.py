"""Provides an isolated CODEX_HOME for the real codex binary and the rule for finding it in tests.

``write_codex_home`` writes the offline ``config.toml`` from ``docs/codex-facts.md`` (model provider
``mock`` pointing at a :class:`tests.fakes.mock_model_server.MockModel`), so codex needs no login
and makes no other network connection. ``find_test_codex_bin`` resolves the pinned codex binary from
``CODEX_TUI_TEST_CODEX_BIN`` or the CI cache, and fails (never skips) with install instructions when
it is missing. ``codex_env`` builds the minimal child environment.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CODEX_BIN_ENV",
    "CODEX_VERSION",
    "CODEX_CACHE",
    "CodexBinaryNotFound",
    "codex_env",
    "find_test_codex_bin",
    "write_codex_home",
]

CODEX_VERSION = "0.169.0"
CODEX_BIN_ENV = "CODEX_TUI_TEST_CODEX_BIN"
#: Where the tests install the pinned npm package when no binary is configured.
CODEX_CACHE = Path.home() / ".cache" / "codex-tui-ci" / f"codex-{CODEX_VERSION}"
LAUNCHER = CODEX_CACHE / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"

INSTALL_HINT = (
    f"The real codex binary (codex-cli {CODEX_VERSION}) is required for these tests.\n"
    f"They install it themselves when npm is on PATH; otherwise install Node.js 20+ and npm,\n"
    f"or run:  npm install --prefix {CODEX_CACHE} @openai/codex@{CODEX_VERSION}\n"
    f"or point {CODEX_BIN_ENV} at a codex {CODEX_VERSION} binary."
)


class CodexBinaryNotFound(RuntimeError):
    """The codex binary for tests could not be found."""


def find_test_codex_bin() -> str:
    """Return the path of the codex binary to test against.

    ``$CODEX_TUI_TEST_CODEX_BIN`` wins when set (it must then exist and be executable);
    otherwise the pinned npm package in :data:`CODEX_CACHE` (installed on first use).

    Raises:
        CodexBinaryNotFound: with instructions (``npm install @openai/codex@0.169.0``).
    """
    configured = os.environ.get(CODEX_BIN_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise CodexBinaryNotFound(
                f"{CODEX_BIN_ENV}={configured!r} is not an executable file.\n{INSTALL_HINT}"
            )
        return str(path)
    return _installed_codex_bin()


def _installed_codex_bin() -> str:
    """The native binary of the pinned npm package in :data:`CODEX_CACHE`, installing it with
    npm on first use (under a file lock, so concurrent test runs install it once)."""
    from server_client.worker.codex_bin import CodexBinError, native_from_launcher

    CODEX_CACHE.mkdir(parents=True, exist_ok=True)
    with open(CODEX_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not LAUNCHER.is_file():
            npm = shutil.which("npm")
            if npm is None:
                raise CodexBinaryNotFound(f"npm is not on PATH.\n{INSTALL_HINT}")
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(CODEX_CACHE),
                    "--no-audit",
                    "--no-fund",
                    f"@openai/codex@{CODEX_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise CodexBinaryNotFound(
                    f"npm install failed ({done.returncode}):\n"
                    f"{done.stderr[-2000:]}\n{INSTALL_HINT}"
                )
    try:
        return native_from_launcher(LAUNCHER)
    except CodexBinError as exc:
        raise CodexBinaryNotFound(f"{exc}\n{INSTALL_HINT}") from exc


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_codex_home(
    path: Path | str,
    base_url: str,
    *,
    model: str = "gpt-5.5",
    stream_idle_timeout_ms: int = 120_000,
    extra_toml: str = "",
) -> Path:
    """Create ``path`` (if needed) and write an offline ``config.toml`` into it.

    Args:
        path: the directory to use as ``CODEX_HOME``.
        base_url: the mock provider's base URL, e.g. ``MockModel.base_url``
            (``http://127.0.0.1:PORT/v1``).
        model: a model codex knows, so it offers its full tool set.
        stream_idle_timeout_ms: how long codex waits on a silent model stream.
        extra_toml: appended verbatim (top-level keys must not come after a table here).

    Returns:
        The ``CODEX_HOME`` directory.
    """
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = f"""\
model = {_toml_str(model)}
model_provider = "mock"
approval_policy = "never"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.mock]
name = "Mock"
base_url = {_toml_str(base_url)}
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = {int(stream_idle_timeout_ms)}
"""
    if extra_toml:
        config += "\n" + extra_toml.strip() + "\n"
    (home / "config.toml").write_text(config, encoding="utf-8")
    return home


def codex_env(
    codex_home: Path | str,
    home: Path | str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The minimal environment for a codex child: ``HOME``, ``PATH``, ``CODEX_HOME`` (+ extra).

    ``home`` defaults to ``<codex_home>/../home`` (created), so codex never touches the real
    home directory.
    """
    codex_home = Path(codex_home)
    home_dir = Path(home) if home is not None else codex_home.parent / "home"
    home_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home_dir),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "CODEX_HOME": str(codex_home),
    }
    if extra:
        env.update(extra)
    return env
