"""Provides the checks that docs/deployment.md only says what is true of this version.

Every ``codex-tui`` command line in it (code blocks, systemd ``ExecStart=`` lines and inline
code) must name real subcommands and options of the click command; every
``CODEX_TUI_SERVER_*`` variable must be a :class:`ServerSettings` field, and every field must
be documented; the example environment file must validate; the systemd units must pass
``systemd-analyze verify`` (where the binary exists) and the nginx file ``nginx -t`` (where
nginx is installed). Commands under "Not there yet" (a ``proposed`` block) must really be
missing, so that a command added later moves into the documented setup. The claims about
client addresses and request ids behind a proxy are checked against a real server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from codex_tui.cli import main as cli_main
from server_client.server.settings import ServerSettings
from server_client.worker.uploader import MAX_BATCH_BYTES
from tests.conftest import ServerFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
ENV_PREFIX = "CODEX_TUI_SERVER_"
#: Where the documented units expect the command; tests substitute the installed one.
DOC_BINARY = "/opt/codex-tui/bin/codex-tui"

_FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
_ENV_NAME = re.compile(ENV_PREFIX + r"[A-Z0-9_]+")
_SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", "<<"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of the document."""

    info: str
    text: str

    @property
    def proposed(self) -> bool:
        """True for the blocks of things that do not exist yet (info string ``... proposed``)."""
        return "proposed" in self.info.split()

    @property
    def title(self) -> str | None:
        """The path the block's first line names (``# /etc/...``), if any."""
        first = self.text.split("\n", 1)[0].strip()
        match = re.match(r"#\s+(/\S+)", first)
        return match.group(1) if match else None


def _doc() -> str:
    return DOC.read_text()


def _blocks() -> list[Block]:
    return [Block(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(_doc())]


def _prose() -> str:
    """The document without its fenced blocks."""
    return _FENCE.sub("", _doc())


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with shell ``\\`` continuations joined."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: split on blanks instead
        return line.split()


def _is_codex_tui(token: str) -> bool:
    word = token.split("=", 1)[1] if re.match(r"^[A-Za-z]+=", token) else token
    return word == "codex-tui" or word.endswith("/bin/codex-tui")


def command_lines(text: str) -> Iterator[list[str]]:
    """The argument lists of the ``codex-tui`` commands in ``text`` (shell or unit syntax).

    ``codex-tui`` counts as a command where it is one: not where it is an option's value
    (``useradd -g codex-tui``, ``sudo -u codex-tui``). Quoted shell scripts (``sh -c '...'``)
    are searched too.
    """
    for line in _logical_lines(text):
        tokens = _tokens(line)
        for index, token in enumerate(tokens):
            if " " in token:
                yield from command_lines(token)
                continue
            if not _is_codex_tui(token):
                continue
            previous = tokens[index - 1] if index else ""
            if token == "codex-tui" and re.match(r"^-{1,2}[A-Za-z][\w-]*$", previous):
                continue  # a user or group name, not the command
            args = []
            for arg in tokens[index + 1 :]:
                if arg in _SHELL_OPERATORS or arg.startswith("#"):
                    break
                args.append(arg)
            yield args


def problems(args: list[str]) -> list[str]:
    """What is wrong with ``codex-tui ARGS`` against the real click command (empty if fine)."""
    command: click.Command = cli_main
    path = ["codex-tui"]
    rest = list(args)
    found: list[str] = []
    while True:
        options = {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        positional = [p for p in command.params if isinstance(p, click.Argument)]
        subcommand = None
        while rest:
            arg = rest.pop(0)
            if arg.startswith("-") and arg != "-":
                name, _, value = arg.partition("=")
                param = options.get(name)
                if param is None:
                    found.append(f"{' '.join(path)}: no option {name}")
                    continue
                takes_value = isinstance(param, click.Option) and not (param.is_flag or param.count)
                if takes_value and not value and rest:
                    value = rest.pop(0)
                if isinstance(param.type, click.Choice) and value:
                    if value not in param.type.choices:
                        found.append(f"{' '.join(path)}: {name} {value!r} is not a choice")
                continue
            if isinstance(command, click.Group) and subcommand is None:
                subcommand = command.get_command(click.Context(command), arg)
                if subcommand is None:
                    found.append(f"{' '.join(path)}: no command {arg!r}")
                    return found
                path.append(arg)
                break
            if not positional:
                found.append(f"{' '.join(path)}: takes no argument {arg!r}")
        if subcommand is None:
            return found
        command = subcommand


def _documented_commands() -> Iterator[list[str]]:
    for block in _blocks():
        if block.proposed:
            continue
        if block.info == "ini":  # a unit: only its command lines run codex-tui
            lines = block.text.splitlines()
            yield from command_lines("\n".join(x for x in lines if x.startswith("Exec")))
        else:
            yield from command_lines(block.text)
    for span in _INLINE.findall(_prose()):
        yield from command_lines(span)


def test_doc_commands_exist() -> None:
    """Every documented ``codex-tui`` command line uses real subcommands, options and
    choices; the core ones of the setup are all there."""
    seen = list(_documented_commands())
    joined = [" ".join(args) for args in seen]
    for needed in ("server", "worker", "admin user add", "admin token revoke", "pair"):
        assert any(line.startswith(needed) for line in joined), f"no `codex-tui {needed}`"
    wrong = {
        line: found for line, args in zip(joined, seen, strict=True) if (found := problems(args))
    }
    assert not wrong, wrong


def test_checker_catches_mistakes() -> None:
    """The command checker itself: a misspelt subcommand, an unknown option and a bad choice
    are caught; option values and shell syntax are not mistaken for arguments."""
    assert problems(["servr"])
    assert problems(["server", "--no-such-flag"])
    assert problems(["ls", "--status", "sleeping"])
    assert problems(["admin", "token", "revoke", "--usr", "alice"])
    assert not problems(["server", "--host", "127.0.0.1", "--port", "%i", "--no-local-worker"])
    assert not problems(["ls", "--status=running", "--worker", "gpu-box"])
    lines = list(command_lines("sudo -u codex-tui sh -c 'exec /x/bin/codex-tui pair --json'"))
    assert lines == [["pair", "--json"]]
    assert list(command_lines("ExecStart=/opt/codex-tui/bin/codex-tui worker | tee log")) == [
        ["worker"]
    ]


def test_proposed_commands_do_not_exist_yet() -> None:
    """What "Not there yet" proposes is really missing (once it exists, document it)."""
    proposed = [block for block in _blocks() if block.proposed]
    assert proposed, "the document lost its proposed block"
    for block in proposed:
        for line in block.text.splitlines():
            if not line.strip():
                continue
            names = _ENV_NAME.findall(line)
            for name in names:
                field = name.removeprefix(ENV_PREFIX).lower()
                assert field not in ServerSettings.model_fields, f"{name} exists now"
            for args in command_lines(line):
                assert problems(args), f"`codex-tui {' '.join(args)}` exists now: document it"
            assert names or list(command_lines(line)), f"nothing proposed in {line!r}"


def _documented_env_names() -> set[str]:
    text = _prose() + "".join(block.text for block in _blocks() if not block.proposed)
    return set(_ENV_NAME.findall(text))


def test_env_names_are_settings_and_all_documented() -> None:
    """Every ``CODEX_TUI_SERVER_*`` name is a ServerSettings field, and every field is
    documented (so a new setting cannot go unmentioned)."""
    named = {name.removeprefix(ENV_PREFIX).lower() for name in _documented_env_names()}
    fields = set(ServerSettings.model_fields)
    assert named - fields == set(), f"not settings: {sorted(named - fields)}"
    assert fields - named == set(), f"undocumented settings: {sorted(fields - named)}"


def test_env_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example ``server.env`` parses as the units read it and validates as settings."""
    (block,) = [b for b in _blocks() if b.title == "/etc/codex-tui/server.env"]
    values: dict[str, str] = {}
    for line in block.text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, raw = line.partition("=")
            (value,) = shlex.split(raw)  # systemd strips one level of quotes, like sh
            values[name] = value
    assert values
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = ServerSettings()  # type: ignore[call-arg]  # db_url comes from the environment
    assert settings.db_url.startswith("postgresql://")
    assert settings.redis_url is not None and settings.metrics_token
    assert settings.log_json is True


def _units() -> dict[str, str]:
    units = {}
    for block in _blocks():
        title = block.title
        if title and title.startswith("/etc/systemd/system/"):
            units[Path(title).name] = block.text
    return units


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def test_units_are_separate_and_stop_gracefully() -> None:
    """The server replicas run without a local worker; the worker's unit is its own, stops
    with SIGTERM to its main process only, and waits longer than its cancel grace."""
    units = _units()
    assert set(units) == {"codex-tui-server@.service", "codex-tui-worker.service"}
    server = _directives(units["codex-tui-server@.service"])
    worker = _directives(units["codex-tui-worker.service"])
    assert "--no-local-worker" in server["ExecStart"][0]
    assert server["EnvironmentFile"] == ["/etc/codex-tui/server.env"]
    assert server["ProtectSystem"] == ["strict"] and server["NoNewPrivileges"] == ["yes"]
    for unit in (server, worker):
        assert unit["Restart"] == ["on-failure"]
        assert unit["User"] and unit["User"] != ["root"]
        for tie in ("BindsTo", "PartOf", "Requires", "Requisite"):
            assert tie not in unit
    assert worker["KillMode"] == ["mixed"] and worker["KillSignal"] == ["SIGTERM"]
    grace = re.search(r"--cancel-grace\s+(\S+)", worker["ExecStart"][0])
    assert grace is not None
    assert float(worker["TimeoutStopSec"][0]) > float(grace.group(1)) + 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts both units (the template as instance 8001), with
    no warning, once ``ExecStart`` points at the installed ``codex-tui``."""
    binary = Path(sys.executable).with_name("codex-tui")
    assert binary.exists(), binary
    for name, text in _units().items():
        (tmp_path / name).write_text(text.replace(DOC_BINARY, str(binary)))
        target = tmp_path / name.replace("@.", "@8001.")
        run = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = (run.stdout + run.stderr).strip()
        assert run.returncode == 0, f"{name}: {output}"
        assert name not in output and target.name not in output, f"{name}: {output}"


def _nginx_conf() -> str:
    (block,) = [b for b in _blocks() if (b.title or "").startswith("/etc/nginx/")]
    return block.text


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


def _size(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, value
    return (
        int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    )


def _location(conf: str, pattern: str) -> str:
    match = re.search(r"location\s+" + pattern + r"\s*\{(.*?)\n\s*\}", conf, re.DOTALL)
    assert match, f"no location {pattern}"
    return match.group(1)


def test_nginx_settings_fit_the_server() -> None:
    """The nginx file streams SSE unbuffered with a read timeout above two heartbeats, keeps
    worker long polls and upload batches within its limits, and passes the headers the
    server reads."""
    conf = _nginx_conf()
    for needed in (
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Request-ID",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Host $host;",
        "keepalive",
    ):
        assert needed in conf, needed
    assert len(re.findall(r"^\s*server 127\.0\.0\.1:\d+", conf, re.MULTILINE)) >= 2
    fields = ServerSettings.model_fields
    heartbeat = float(fields["heartbeat_s"].default)
    max_wait = float(fields["max_wait_s"].default)
    sse = _location(conf, r"~ \^/api/\(tasks/\[\^/\]\+/\)\?events\$")  # both stream kinds
    assert "proxy_buffering off;" in sse and "proxy_cache off;" in sse
    timeout = re.search(r"proxy_read_timeout (\S+);", sse)
    assert timeout and _seconds(timeout.group(1)) > 2 * heartbeat
    workers = _location(conf, r"/api/workers/")
    timeout = re.search(r"proxy_read_timeout (\S+);", workers)
    assert timeout and _seconds(timeout.group(1)) > max_wait
    body = re.search(r"client_max_body_size (\S+);", workers)
    assert body and _size(body.group(1)) >= 2 * MAX_BATCH_BYTES


def throwaway_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for codex.example.com and 127.0.0.1 valid one day:
    ``(cert, key)`` PEM files in ``folder`` (made by openssl); a client that trusts it can
    verify a server on loopback."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=codex.example.com"]
        + ["-addext", "subjectAltName=DNS:codex.example.com,IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here")
def test_nginx_config_tests(tmp_path: Path) -> None:
    """``nginx -t`` accepts the file inside a minimal ``nginx.conf`` (with a throwaway
    certificate and logs in a temporary folder)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed for a throwaway certificate")
    cert, key = throwaway_certificate(tmp_path)
    conf = _nginx_conf()
    conf = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", conf)
    conf = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", conf)
    conf = conf.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "codex-tui.conf").write_text(conf)
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n{temp}\naccess_log off;\ninclude {tmp_path}/codex-tui.conf;\n}}\n"
    )
    run = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _audit_of_task_creation(
    server_factory: ServerFactory, extra_env: dict[str, str]
) -> dict[str, Any]:
    """Start a server, create a task through a "proxy" on 127.0.0.1 that forwards a client's
    address and request id, and return that creation's audit row."""
    server = server_factory(local_worker=False, extra_env=extra_env)
    headers = {
        "Authorization": f"Bearer {server.token}",
        "X-Forwarded-For": "203.0.113.7",
        "X-Request-ID": "nginx-3f2a9c",
    }
    response = httpx.post(f"{server.url}/api/tasks", json={"prompt": "via proxy"}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "nginx-3f2a9c"
    audit = server.cli("admin", "audit", "--json", "--action", "task.create")
    assert audit.returncode == 0, audit.stderr
    (row,) = [json.loads(line) for line in audit.stdout.splitlines()]
    return dict(row)


def test_forwarded_client_address_as_documented(server_factory: ServerFactory) -> None:
    """As the document says: behind a proxy on 127.0.0.1 named by
    ``CODEX_TUI_SERVER_TRUSTED_PROXIES`` the server records the forwarded client address (and
    the proxy's request id); with the setting naming another proxy, a request from 127.0.0.1
    is not trusted and its own address is recorded."""
    trusted = _audit_of_task_creation(
        server_factory, {"CODEX_TUI_SERVER_TRUSTED_PROXIES": "127.0.0.1"}
    )
    assert trusted["client_addr"] == "203.0.113.7"
    assert trusted["request_id"] == "nginx-3f2a9c"
    untrusted = _audit_of_task_creation(
        server_factory, {"CODEX_TUI_SERVER_TRUSTED_PROXIES": "10.0.0.5"}
    )
    assert untrusted["client_addr"] == "127.0.0.1"
