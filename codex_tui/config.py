"""Provides the client and TUI settings and how a command finds its server and token.

Precedence, lowest first: defaults → ``<config>/config.toml`` → environment
(``CODEX_TUI_SERVER``, ``CODEX_TUI_TOKEN``, ``CODEX_TUI_THEME``, ...) → command-line flags.
The server last logged in to (``codex-tui login``, server_client.credentials) comes after
the environment and before config.toml. When none names a server, the connection the local
server stored is used, and failing that ``http://127.0.0.1:<local_port>`` (8765). A token
stored for the chosen server (by ``login``, or the local server's) is used when no flag,
variable or config.toml gives one. Tokens never appear in logs; keep them out of
config.toml where the keyring works.

The theme has one more layer, the theme last chosen in the app (remembered in the state
folder by :mod:`codex_tui.state`, since the app never rewrites config.toml). Highest first:
``--theme`` flag > ``CODEX_TUI_THEME`` > remembered choice > ``theme`` in config.toml >
``codex-dark``.

config.toml (every key optional)::

    server = "http://devbox:8765"    # token: keep it in the keyring (stored by `codex-tui server`)
    local_port = 8765
    theme = "codex-light"            # codex-dark, codex-light, codex-high-contrast

    [keymap]                         # binding id = comma-separated keys (see `?` in the TUI)
    new-task = "ctrl+n"
    cancel-task = "x,delete"

    [notify]                         # when a task finishes
    toast = true                     # a toast in the TUI
    bell = true                      # the terminal bell
    desktop = "auto"                 # OSC 9 desktop notification: true, false or "auto"

Nested settings come from the environment with ``__``: ``CODEX_TUI_NOTIFY__BELL=0``,
``CODEX_TUI_KEYMAP__NEW_TASK=ctrl+n`` (``_`` in a keymap id reads as ``-``). ``desktop =
"auto"`` sends OSC 9 only to terminals known to show it (:func:`desktop_supported`).

``CODEX_TUI_HOME``, when set, puts all config, data and state folders under it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from codex_tui.startup import config_path
from codex_tui.state import default_state_path, load_state
from server_client.credentials import load_connection, load_current_server, load_token

__all__ = [
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "ClientSettings",
    "ConfigError",
    "NotifySettings",
    "ResolvedConnection",
    "TuiSettings",
    "config_path",
    "describe_settings_error",
    "desktop_supported",
    "load_tui_settings",
    "resolve_connection",
]

DEFAULT_PORT = 8765
#: Prefix of every environment setting.
ENV_PREFIX = "CODEX_TUI_"

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ConfigError(ValueError):
    """config.toml (or a ``CODEX_TUI_*`` variable) cannot be read or holds an invalid value.

    The message names the file or variable and the problem.
    """


class ClientSettings(BaseSettings):
    """Client settings from config.toml and the environment (flags are applied on top).

    Attributes:
        server: The server URL (``CODEX_TUI_SERVER``).
        token: A user token (``CODEX_TUI_TOKEN``).
        local_port: Port of the local server the TUI starts when no server is configured
            (``CODEX_TUI_LOCAL_PORT``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    server: str | None = None
    token: str | None = None
    local_port: int = DEFAULT_PORT

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) over environment over config.toml."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)


class NotifySettings(BaseModel):
    """How the TUI announces a finished task (the ``[notify]`` table).

    Attributes:
        toast: A toast in the TUI (``CODEX_TUI_NOTIFY__TOAST``).
        bell: The terminal bell (``CODEX_TUI_NOTIFY__BELL``; flag ``--no-bell``).
        desktop: An OSC 9 desktop notification: True, False, or ``"auto"`` for only the
            terminals :func:`desktop_supported` knows (``CODEX_TUI_NOTIFY__DESKTOP``; flag
            ``--no-desktop-notify``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    toast: bool = True
    bell: bool = True
    desktop: bool | Literal["auto"] = "auto"


class TuiSettings(BaseSettings):
    """The TUI's settings: theme, keymap and notifications (same config.toml as the client).

    Attributes:
        theme: Theme name (``theme``, ``CODEX_TUI_THEME``, ``--theme``); None: the default.
            Between the environment and config.toml sits the theme last chosen in the app.
        keymap: Binding id → comma-separated keys (``[keymap]``), given to
            :meth:`textual.app.App.set_keymap`.
        notify: The ``[notify]`` switches.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    theme: str | None = None
    keymap: dict[str, str] = Field(default_factory=dict)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("theme", mode="before")
    @classmethod
    def _blank_theme_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("keymap", mode="before")
    @classmethod
    def _normalise_keymap(cls, value: object) -> object:
        """Ids in kebab-case (``new_task`` from the environment reads ``new-task``); a list
        of keys may stand for a comma-separated string."""
        if not isinstance(value, Mapping):
            return value
        keymap: dict[object, object] = {}
        for binding_id, keys in value.items():
            name = binding_id
            if isinstance(binding_id, str):
                name = binding_id.strip().replace("_", "-")
            if isinstance(keys, list) and all(isinstance(key, str) for key in keys):
                keys = ",".join(keys)
            if isinstance(keys, str):
                keys = ",".join(key.strip() for key in keys.split(",") if key.strip())
            keymap[name] = keys
        return keymap

    @classmethod
    def defaults(cls) -> TuiSettings:
        """The built-in defaults, reading neither config.toml, the environment nor state."""
        return cls.model_construct()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) over environment over the remembered theme over config.toml."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, _RememberedThemeSource(settings_cls), toml)


class _RememberedThemeSource(PydanticBaseSettingsSource):
    """The theme last chosen in the app (codex_tui.state), as a settings layer."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002
        if field_name == "theme":
            return load_state(default_state_path()).theme, field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        theme = load_state(default_state_path()).theme
        return {"theme": theme} if theme else {}


#: How pydantic-settings names a variable it could not parse (JSON expected).
_UNPARSED = re.compile(r'field "(\w+)" from source "EnvSettingsSource"')


def _env_name(prefix: str, loc: Sequence[int | str]) -> str:
    return prefix + "__".join(str(part) for part in loc).upper().replace("-", "_")


def describe_settings_error(
    error: ValueError,
    *,
    env_prefix: str = ENV_PREFIX,
    flags: Mapping[str, str] | None = None,
    file: Path | None = None,
    what: str = "settings",
    secret: Collection[str] = ("token",),
) -> str:
    """One message for settings that failed to build, naming where each bad value came from.

    The one wording of the command's settings errors (the client's and TUI's, the server's,
    the worker's). Each problem reads ``WHERE: FIELD: PROBLEM (got VALUE)``, where WHERE is
    the flag that set the field (``flags``), else the environment variable that did, else
    ``file``, else the field's environment variable (where it can be set).

    Args:
        error: pydantic's ``ValidationError``, or pydantic-settings' ``SettingsError`` (an
            environment value that is not the JSON a list or table needs).
        env_prefix: The settings' environment prefix (nested keys joined with ``__``).
        flags: Field name → the flag given for it (only the flags given).
        file: The settings file, when the settings read one.
        what: What the settings are, for the message's start (``invalid {what}: ...``).
        secret: Words of field names whose value is never quoted (``token``: also
            ``metrics_token``).
    """
    flags = flags or {}
    if not isinstance(error, ValidationError):  # SettingsError: no field errors, a message
        items: list[Mapping[str, Any]] = [{"loc": (), "msg": str(error)}]
    else:
        items = list(error.errors())
    problems = []
    for item in items:
        loc = tuple(item["loc"])
        if not loc:  # a source failed, e.g. CODEX_TUI_KEYMAP that is not JSON
            message = str(item["msg"]).removeprefix("Value error, ")
            found = _UNPARSED.search(message)
            if found:
                message = (
                    f"environment variable {_env_name(env_prefix, (found[1],))}: not JSON "
                    """(lists and tables are written as JSON, e.g. '["a", "b"]')"""
                )
            problems.append(message)
            continue
        name = str(loc[0])
        if name in flags:
            where = flags[name]
        else:
            where = str(file) if file is not None else _env_name(env_prefix, loc[:1])
            for depth in range(len(loc), 0, -1):
                env_name = _env_name(env_prefix, loc[:depth])
                if env_name in os.environ:
                    where = f"environment variable {env_name}"
                    break
        dotted = ".".join(str(part) for part in loc)
        problem = f"{where}: {dotted}: {item['msg']}"
        if item.get("type") != "missing" and not any(word in name.lower() for word in secret):
            problem += f" (got {item.get('input')!r})"
        problems.append(problem)
    return f"invalid {what}: " + "; ".join(problems)


def _load(cls: type[SettingsT], overrides: Mapping[str, Any]) -> SettingsT:
    """Build settings from every layer; any problem becomes a :class:`ConfigError`."""
    path = config_path()
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return cls.model_validate(dict(overrides))
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc, file=path)) from None


def load_tui_settings(
    *,
    theme: str | None = None,
    toast: bool | None = None,
    bell: bool | None = None,
    desktop: bool | None = None,
) -> TuiSettings:
    """The TUI settings, with the TUI's flags (None: not given) applied on top.

    Raises:
        ConfigError: config.toml is unreadable or invalid, or an environment value is.
    """
    notify = {
        name: value
        for name, value in (("toast", toast), ("bell", bell), ("desktop", desktop))
        if value is not None
    }
    overrides: dict[str, Any] = {}
    if theme:
        overrides["theme"] = theme
    if notify:
        overrides["notify"] = notify
    return _load(TuiSettings, overrides)


#: TERM_PROGRAM values of terminals that show OSC 9 notifications.
DESKTOP_TERM_PROGRAMS = frozenset({"iTerm.app", "WezTerm", "ghostty"})
#: TERM prefixes of such terminals (TERM survives SSH, TERM_PROGRAM usually does not).
DESKTOP_TERM_PREFIXES = ("xterm-kitty", "foot", "wezterm", "xterm-ghostty")


def desktop_supported(environ: Mapping[str, str]) -> bool:
    """True when the terminal is known to show OSC 9 desktop notifications.

    The rule: ``TERM_PROGRAM`` is iTerm.app, WezTerm or ghostty; or ``LC_TERMINAL`` is
    iTerm2 (it is forwarded over SSH); or ``TERM`` starts with xterm-kitty, foot, wezterm or
    xterm-ghostty; or ``KITTY_WINDOW_ID`` is set. Windows Terminal (``WT_SESSION``) is left
    out on purpose: it shows no OSC 9 notification (it reads ``OSC 9;4`` as progress).
    """
    term = environ.get("TERM", "")
    return (
        environ.get("TERM_PROGRAM", "") in DESKTOP_TERM_PROGRAMS
        or environ.get("LC_TERMINAL", "") == "iTerm2"
        or term.startswith(DESKTOP_TERM_PREFIXES)
        or bool(environ.get("KITTY_WINDOW_ID"))
    )


@dataclass(frozen=True)
class ResolvedConnection:
    """Where a client connects and with which token (None: none known yet).

    Attributes:
        explicit: True when a flag, the environment or config.toml named the server.
        server_from: What named the server: ``--server``, ``CODEX_TUI_SERVER``,
            ``config.toml``, ``login`` (the server last logged in to), ``local server``
            (the one this machine's server stored) or ``default``.
        token_from: Where the token came from: ``--token``, ``CODEX_TUI_TOKEN``,
            ``config.toml``, ``keyring`` or ``file`` (stored); None without a token.
    """

    server: str
    token: str | None
    explicit: bool
    server_from: str = "default"
    token_from: str | None = None


def check_server_url(url: str, named_by: str) -> str:
    """``url`` without trailing slashes when it is an ``http(s)://host`` URL.

    Raises:
        ConfigError: it is not; the message names where it came from and the fix
            (``--server localhost:8765 has no scheme: use http://localhost:8765``).
    """
    from urllib.parse import urlsplit

    shown = url if len(url) <= 200 else url[:200] + "…"
    if "://" not in url:
        raise ConfigError(f"{named_by} {shown} has no scheme: use http://{shown.lstrip('/')}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{named_by} {shown} has the scheme {parts.scheme!r}: use http:// or https://"
        )
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise ConfigError(f"{named_by} {shown} has an invalid port") from None
    if not parts.hostname:
        raise ConfigError(f"{named_by} {shown} has no host: use http://HOST:PORT")
    return url.rstrip("/")


def resolve_connection(
    server: str | None = None,
    token: str | None = None,
    *,
    server_from: str = "--server",
    token_from: str = "--token",
) -> ResolvedConnection:
    """Apply the precedence rules of this module to the ``--server``/``--token`` flags.

    ``server_from``/``token_from`` name where those values came from (a flag, or the variable
    click read them from). After the flags and the environment, the server last logged in
    to (``codex-tui login``) comes before config.toml's; its token is the one stored for it.

    Raises:
        ConfigError: config.toml is unreadable or invalid, or an environment value is, or
            the server URL is malformed.
    """
    overrides: dict[str, object] = {"server": server, "token": token}
    settings = _load(ClientSettings, {k: v for k, v in overrides.items() if v})
    if server:
        url, named_by = server, server_from
    elif settings.server and os.environ.get(f"{ENV_PREFIX}SERVER"):
        url, named_by = settings.server, f"{ENV_PREFIX}SERVER"
    elif current := load_current_server():
        url, named_by = current, "login"
    elif settings.server:
        url, named_by = settings.server, "config.toml"
    elif stored := load_connection():
        url, named_by = stored.server, "local server"
    else:
        url, named_by = f"http://127.0.0.1:{settings.local_port}", "default"
    shown_as = {"config.toml": f"server in {config_path()}", "login": "the logged-in server"}
    url = check_server_url(url, shown_as.get(named_by, named_by))
    found: str | None = settings.token
    where: str | None = None
    if token:
        where = token_from
    elif found is not None:
        where = f"{ENV_PREFIX}TOKEN" if os.environ.get(f"{ENV_PREFIX}TOKEN") else "config.toml"
    elif (stored_token := load_token(url)) is not None:
        found, where = stored_token
    explicit = named_by not in ("login", "local server", "default")
    return ResolvedConnection(
        server=url, token=found, explicit=explicit, server_from=named_by, token_from=where
    )
