"""Provides the lookup of the native codex binary a worker runs, and its version.

Order of precedence (first hit wins, a named binary that is missing is an error and never
falls through to the next source):

1. the ``--codex-bin`` flag (``explicit``),
2. the environment variable ``CODEX_TUI_CODEX_BIN``,
3. ``codex`` on ``PATH``.

The npm package ``@openai/codex`` installs ``bin/codex.js``, a Node launcher that execs the
native binary shipped in a platform package (``@openai/codex-linux-x64`` and friends). The
worker must spawn the native binary itself so that signals reach codex directly
(docs/reliability.md C2), so a launcher found by any of the three sources is replaced by the native
binary it would run. The search mirrors the launcher's own ``findCodexExecutable`` (codex
0.169.0, ``bin/codex.js``): the platform package is resolved like Node's ``require.resolve``
from the codex package (``node_modules`` folders of the package and of each ancestor), then
``<codex package>/vendor``; the binary is ``<vendor>/<target triple>/bin/codex``.

Exceptions::

    CodexBinError (RuntimeError)
    └── CodexNotFoundError
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "CODEX_BIN_ENV",
    "INSTALL_HINT",
    "CodexBinError",
    "CodexNotFoundError",
    "codex_version",
    "codex_version_async",
    "is_npm_launcher",
    "native_from_launcher",
    "resolve_codex_bin",
    "target_triple",
]

#: Environment variable that names the codex binary when ``--codex-bin`` is not given.
CODEX_BIN_ENV = "CODEX_TUI_CODEX_BIN"

#: How to get a working codex; part of every :class:`CodexNotFoundError` message.
INSTALL_HINT = (
    "Install the Codex CLI with `npm install -g @openai/codex` (it ships the native binary), "
    f"or select a binary with --codex-bin PATH or {CODEX_BIN_ENV}=PATH; "
    "then log in once with `codex login`."
)

#: Target triple → npm platform package, as in ``bin/codex.js`` of ``@openai/codex@0.169.0``.
PLATFORM_PACKAGE_BY_TARGET: Mapping[str, str] = {
    "x86_64-unknown-linux-musl": "@openai/codex-linux-x64",
    "aarch64-unknown-linux-musl": "@openai/codex-linux-arm64",
    "x86_64-apple-darwin": "@openai/codex-darwin-x64",
    "aarch64-apple-darwin": "@openai/codex-darwin-arm64",
    "x86_64-pc-windows-msvc": "@openai/codex-win32-x64",
    "aarch64-pc-windows-msvc": "@openai/codex-win32-arm64",
}

_ARCH_ALIASES: Mapping[str, str] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}

_VERSION_TIMEOUT_S = 10.0


class CodexBinError(RuntimeError):
    """Base class of the errors raised while locating the codex binary."""


class CodexNotFoundError(CodexBinError):
    """No usable codex binary was found; the message ends with :data:`INSTALL_HINT`."""


def target_triple(system: str | None = None, machine: str | None = None) -> str | None:
    """Map an OS and CPU to codex's Rust target triple, as the npm launcher does.

    Args:
        system: ``sys.platform`` style name (``linux``, ``darwin``, ``win32``); default: this host.
        machine: ``platform.machine()`` style name (``x86_64``, ``arm64``...); default: this host.

    Returns:
        e.g. ``"x86_64-unknown-linux-musl"``, or None for a platform codex does not ship.
    """
    system = sys.platform if system is None else system
    arch = _ARCH_ALIASES.get((platform.machine() if machine is None else machine).lower())
    if arch is None:
        return None
    if system.startswith("linux") or system == "android":
        return f"{arch}-unknown-linux-musl"
    if system == "darwin":
        return f"{arch}-apple-darwin"
    if system in ("win32", "cygwin"):
        return f"{arch}-pc-windows-msvc"
    return None


def is_npm_launcher(path: str | os.PathLike[str]) -> bool:
    """Tell whether ``path`` is a JavaScript launcher rather than a native executable.

    True when the real path ends with ``.js``/``.mjs``/``.cjs`` or the file starts with a
    ``#!`` line that mentions ``node``. Unreadable files count as not a launcher.
    """
    real = os.path.realpath(path)
    if real.endswith((".js", ".mjs", ".cjs")):
        return True
    try:
        with open(real, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return False
    first_line = head.split(b"\n", 1)[0]
    return b"node" in first_line


def _node_module_dirs(start: Path) -> Iterator[Path]:
    """The ``node_modules`` folders Node's ``require.resolve`` searches from ``start``."""
    for folder in (start, *start.parents):
        if folder.name != "node_modules":
            yield folder / "node_modules"


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def native_from_launcher(
    launcher: str | os.PathLike[str],
    *,
    system: str | None = None,
    machine: str | None = None,
) -> str:
    """Find the native binary that the npm launcher ``launcher`` (``bin/codex.js``) would exec.

    Args:
        launcher: path of ``codex.js`` or of a symlink to it (e.g. ``/usr/bin/codex``).
        system: see :func:`target_triple`.
        machine: see :func:`target_triple`.

    Returns:
        The absolute path of the native binary, e.g. ``<node_modules>/@openai/codex-linux-x64/
        vendor/x86_64-unknown-linux-musl/bin/codex``.

    Raises:
        CodexNotFoundError: the platform is not supported or its package is not installed.
    """
    package_root = Path(os.path.realpath(launcher)).parent.parent
    triple = target_triple(system, machine)
    if triple is None:
        raise CodexNotFoundError(
            f"codex has no native binary for this platform ({system or sys.platform}, "
            f"{machine or platform.machine()}). {INSTALL_HINT}"
        )
    package = PLATFORM_PACKAGE_BY_TARGET[triple]
    exe = "codex.exe" if triple.endswith("windows-msvc") else "codex"
    vendor_roots = [
        nm / package / "vendor"
        for nm in _node_module_dirs(package_root)
        if (nm / package / "package.json").is_file()
    ]
    vendor_roots.append(package_root / "vendor")
    for vendor in vendor_roots:
        candidate = vendor / triple / "bin" / exe
        if _is_executable_file(candidate):
            return str(candidate.resolve())
    raise CodexNotFoundError(
        f"{os.fspath(launcher)} is the npm launcher of codex, but its native binary "
        f"(optional dependency {package}, {triple}/bin/{exe}) is missing. "
        f"Reinstall: {INSTALL_HINT}"
    )


def _lookup(name: str, path_env: str | None) -> str | None:
    """Resolve ``name`` as a path (when it has a separator) or as a command on ``path_env``."""
    expanded = os.path.expanduser(name)
    if os.sep in expanded or (os.altsep and os.altsep in expanded):
        return os.path.abspath(expanded) if _is_executable_file(Path(expanded)) else None
    return shutil.which(expanded, path=path_env)


def resolve_codex_bin(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system: str | None = None,
    machine: str | None = None,
) -> str:
    """Return the absolute path of the native codex binary to spawn.

    Precedence: ``explicit`` (``--codex-bin``), then ``$CODEX_TUI_CODEX_BIN``, then ``codex``
    on ``$PATH``. An npm launcher is replaced by its native binary (see the module docstring).

    Args:
        explicit: the ``--codex-bin`` value: a path, or a command name looked up on ``PATH``.
        environ: the environment to read ``CODEX_TUI_CODEX_BIN`` and ``PATH`` from
            (default ``os.environ``).
        system: override of ``sys.platform`` for the launcher's target triple (tests).
        machine: override of ``platform.machine()`` for the launcher's target triple (tests).

    Returns:
        An absolute path to an executable file.

    Raises:
        CodexNotFoundError: nothing usable was found; the message says how to install codex.
    """
    env = os.environ if environ is None else environ
    path_env = env.get("PATH")
    configured = env.get(CODEX_BIN_ENV, "").strip()
    if explicit:
        source, name = "--codex-bin", explicit
    elif configured:
        source, name = CODEX_BIN_ENV, configured
    else:
        source, name = "PATH", "codex"
    found = _lookup(name, path_env)
    if found is None:
        if source == "PATH":
            raise CodexNotFoundError(f"codex was not found on PATH. {INSTALL_HINT}")
        raise CodexNotFoundError(
            f"the codex binary named by {source} ({name!r}) does not exist or is not "
            f"executable. {INSTALL_HINT}"
        )
    if is_npm_launcher(found):
        return native_from_launcher(found, system=system, machine=machine)
    return found


def _first_line(raw: bytes) -> str | None:
    text = raw.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0].strip() if text else None


def codex_version(bin: str, *, timeout_s: float = _VERSION_TIMEOUT_S) -> str | None:  # noqa: A002
    """Run ``<bin> --version`` and return its first line, e.g. ``"codex-cli 0.169.0"``.

    Args:
        bin: path of the codex binary.
        timeout_s: how long to wait, in seconds.

    Returns:
        The version line, or None when the binary cannot run, times out or exits non-zero.
    """
    try:
        done = subprocess.run(
            [bin, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return _first_line(done.stdout) if done.returncode == 0 else None


async def codex_version_async(
    bin: str,  # noqa: A002
    *,
    timeout_s: float = _VERSION_TIMEOUT_S,
) -> str | None:
    """Async variant of :func:`codex_version` (same arguments and result)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            bin,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except (OSError, ValueError):
        return None
    try:
        async with asyncio.timeout(timeout_s):
            stdout, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return _first_line(stdout) if proc.returncode == 0 else None
