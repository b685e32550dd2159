"""Provides the client settings and how a command finds its server and token.

Precedence, lowest first: defaults → ``<config>/config.toml`` → environment
(``CODEX_TUI_SERVER``, ``CODEX_TUI_TOKEN``, ...) → command-line flags. When neither names a
server, the connection the local server stored (server_client.credentials) is used, and
failing that ``http://127.0.0.1:<local_port>`` (8765). Tokens never appear in logs; keep them out of
config.toml where the keyring works.

``CODEX_TUI_HOME``, when set, puts all config, data and state folders under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from server_client.credentials import load_connection
from server_client.paths import AppDirs

DEFAULT_PORT = 8765


class ClientSettings(BaseSettings):
    """Client settings from config.toml and the environment (flags are applied on top).

    Attributes:
        server: The server URL (``CODEX_TUI_SERVER``).
        token: A user token (``CODEX_TUI_TOKEN``).
        local_port: Port of the local server the TUI starts when no server is configured
            (``CODEX_TUI_LOCAL_PORT``).
    """

    model_config = SettingsConfigDict(env_prefix="CODEX_TUI_", extra="ignore")

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
        toml = TomlConfigSettingsSource(
            settings_cls, toml_file=AppDirs.resolve().config / "config.toml"
        )
        return (init_settings, env_settings, toml)


@dataclass(frozen=True)
class ResolvedConnection:
    """Where a client connects and with which token (None: none known yet).

    Attributes:
        explicit: True when a flag, the environment or config.toml named the server.
    """

    server: str
    token: str | None
    explicit: bool


def resolve_connection(server: str | None = None, token: str | None = None) -> ResolvedConnection:
    """Apply the precedence rules of this module to the ``--server``/``--token`` flags."""
    overrides: dict[str, object] = {"server": server, "token": token}
    settings = ClientSettings.model_validate({k: v for k, v in overrides.items() if v})
    stored = load_connection()
    default = f"http://127.0.0.1:{settings.local_port}"
    url = settings.server or (stored.server if stored else None) or default
    url = url.rstrip("/")
    found = settings.token
    if found is None and stored is not None and stored.server.rstrip("/") == url:
        found = stored.token
    return ResolvedConnection(server=url, token=found, explicit=settings.server is not None)
