"""The script verbs of ``codex-tui`` as a shell script uses them (issue 16), against a real
server and its local worker (the fake codex): ``--json`` keeps stdout JSON lines only, a
malformed task id is a usage error, a closed pipe ends a command quietly with 0, a bad
server URL says what to fix, and ``login``/``logout``/``status``; a token comes from a file,
stdin or the environment as well as ``--token``, whose help says ``ps`` shows it (issue 17
item 10)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import click
import httpx
import psutil
import pytest

from server_client.models import WorkerHello
from server_client.worker.api import WorkerApi
from tests.conftest import FAKE_CODEX, ServerFactory, free_port, wait_until


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have exited 0."""
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def test_submit_follow_json_prints_only_event_envelopes_and_the_id_on_stderr(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    done = server.cli("submit", "--follow", "--json", "say hi")
    lines = ok(done).splitlines()
    envelopes = [json.loads(line) for line in lines]
    assert all(set(e) == {"seq", "ts", "kind", "data"} for e in envelopes)
    assert envelopes[-1]["data"]["status"] == "completed"
    task_id = done.stderr.strip().rsplit(" ", 1)[-1]
    assert json.loads(ok(server.cli("ls", "--json")).splitlines()[0])["id"] == task_id

    as_task = json.loads(ok(server.cli("submit", "--json", "again")))
    assert as_task["status"] in {"queued", "running", "completed"} and as_task["id"]
    rerun = ok(server.cli("rerun", "--follow", "--json", task_id)).splitlines()
    assert all("kind" in json.loads(line) for line in rerun)


def test_an_empty_or_malformed_task_id_is_a_usage_error_naming_the_argument(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    for argv in (
        ("logs", ""),
        ("cancel", "../tasks"),
        ("rerun", " "),
        ("reply", "", "hi"),
        ("diff", ""),
        ("apply", "../x"),
        ("branch", " "),
        ("workspaces", "rm", "a", ""),
    ):
        done = server.cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "TASK_ID" in done.stderr and "404" not in done.stderr, (argv, done.stderr)
    missing = server.cli("logs", "0123456789ab")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_a_closed_stdout_pipe_ends_a_printing_command_quietly_with_0(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)

    async def seed() -> None:
        async with server.client() as client:
            for n in range(60):  # some 180 kB of `ls --json`: more than a pipe's buffer holds
                await client.create_task(f"task {n} " + "x" * 3000, workdir=str(server.workdir))

    asyncio.run(seed())
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_tui", "ls", "--json", "--limit", "200"],
        env=server.env,
        cwd=server.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # A hung `ls` is killed after 60 s, which ends the blocking reads below with a message.
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        first = proc.stdout.readline()  # `| head -1`
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
    finally:
        watchdog.cancel()
    assert first, f"`ls --json` printed no line within 60 s: {stderr}"
    assert proc.wait(timeout=60) == 0, stderr
    assert json.loads(first)["prompt"].startswith("task 59") and stderr == "", stderr


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``codex-tui ARGS`` with ``env`` (stdin a pipe, so ``login`` reads the token from it)."""
    return subprocess.run(
        [sys.executable, "-m", "codex_tui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_a_malformed_or_unreachable_server_url_says_what_to_fix(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    env = {**server.env, "CODEX_TUI_HOME": str(tmp_path / "elsewhere")}
    env.pop("CODEX_TUI_TOKEN", None)
    env.pop("CODEX_TUI_SERVER", None)
    bare = _run(env, "ls", "--server", "localhost:8765")
    assert bare.returncode == 2
    assert "--server localhost:8765 has no scheme: use http://localhost:8765" in bare.stderr
    from_env = _run({**env, "CODEX_TUI_SERVER": "localhost:8765"}, "ls")
    assert "CODEX_TUI_SERVER localhost:8765 has no scheme" in from_env.stderr
    assert "Traceback" not in bare.stderr + from_env.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = _run(env, "ls", "--server", nowhere)
    assert unreachable.returncode == 2
    assert f"cannot connect to {nowhere}" in unreachable.stderr
    assert "token" not in unreachable.stderr
    with_token = _run({**env, "CODEX_TUI_TOKEN": "ctu_x"}, "ls", "--server", nowhere)
    assert f"cannot connect to {nowhere}" in with_token.stderr
    no_token = _run(env, "ls", "--server", server.url)
    assert no_token.returncode == 2
    assert f"no token for {server.url}: run `codex-tui login --server {server.url}`" in (
        no_token.stderr
    )


def test_login_status_logout(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(local_worker=False)
    env = {**server.env, "CODEX_TUI_HOME": str(tmp_path / "laptop")}
    env.pop("CODEX_TUI_TOKEN", None)
    env.pop("CODEX_TUI_SERVER", None)

    refused = _run(env, "login", "--server", server.url, stdin="ctu_wrong\n")
    assert refused.returncode == 2 and "refused the token" in refused.stderr
    assert "ctu_wrong" not in refused.stdout + refused.stderr

    logged = _run(env, "login", "--server", server.url + "/", stdin=server.token + "\n")
    assert ok(logged).startswith(f"logged in to {server.url} as ")
    assert server.token not in logged.stdout + logged.stderr
    stored = (tmp_path / "laptop" / "config" / "tokens.json").stat().st_mode & 0o777
    assert stored == 0o600

    said = ok(_run(env, "status"))  # no --server: the server logged in to
    assert f"server: {server.url} (from login)" in said
    assert "token:  from file" in said and "user:   " in said
    assert server.token not in said
    flagged = ok(_run({**env, "CODEX_TUI_TOKEN": server.token}, "status"))
    assert "token:  from CODEX_TUI_TOKEN" in flagged
    assert ok(_run(env, "ls")) == ""  # the default server and its token, no flags

    assert ok(_run(env, "logout")).startswith(f"logged out of {server.url}")
    after = _run(env, "status")
    assert after.returncode == 2 and "not logged in" in after.stderr
    assert "(from default)" in after.stdout


def test_pair_names_the_public_url_when_set_else_the_url_used_with_a_note(
    server_factory: ServerFactory,
) -> None:
    public = "https://codex.example.net:8443"
    exposed = server_factory(
        local_worker=False, extra_env={"CODEX_TUI_SERVER_PUBLIC_URL": public + "/"}
    )
    printed = exposed.cli("pair")
    command = next(line.strip() for line in ok(printed).splitlines() if "--pair" in line)
    assert command.startswith(f"codex-tui worker --server {public} --pair ")
    assert printed.stderr == ""
    as_json = json.loads(ok(exposed.cli("pair", "--json")))
    assert as_json["public_url"] == public
    assert as_json["command"].startswith(f"codex-tui worker --server {public} --pair ")

    local = server_factory(local_worker=False)
    printed = local.cli("pair")
    command = next(line.strip() for line in ok(printed).splitlines() if "--pair" in line)
    assert command.startswith(f"codex-tui worker --server {local.url} --pair ")
    assert "CODEX_TUI_SERVER_PUBLIC_URL" in printed.stderr
    assert json.loads(ok(local.cli("pair", "--json")))["public_url"] is None


async def test_a_task_for_a_label_no_online_worker_has_is_flagged_at_submit_and_in_ls(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(server.cli, *args)

    waiting = await cli("submit", "--label", "gpu", "train it")
    task_id = ok(waiting).strip()
    assert waiting.stderr == "codex-tui: no online worker has label gpu; the task waits for one\n"
    row = next(line for line in ok(await cli("ls")).splitlines() if line.startswith(task_id))
    assert row.endswith("(waiting for a worker with label gpu)")

    api = WorkerApi(server.url, server.token)
    try:
        await api.connect(WorkerHello(name="gpu-box", workdir_roots=["/"], labels=["gpu"]))
        routed = await cli("submit", "--label", "gpu", "train it again")
        assert ok(routed) and routed.stderr == ""
        listed = ok(await cli("ls", "--status", "queued"))
        assert "waiting for" not in listed
    finally:
        await api.aclose()


async def test_a_routed_task_gets_its_workers_folder_and_a_folder_no_worker_holds_is_flagged(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The current folder names a folder here: a task routed to another machine's worker
    gets that worker's first root instead, and a folder no online worker's roots hold is
    flagged at submit and in ls (the task would otherwise wait without a word)."""
    server = server_factory(local_worker=False)
    here = tmp_path / "here"
    here.mkdir()

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(server.cli, *args)

    api = WorkerApi(server.url, server.token)
    try:
        elsewhere = str(tmp_path / "gpu-box-home")
        await api.connect(WorkerHello(name="gpu-box", workdir_roots=[elsewhere], labels=["gpu"]))
        routed = await cli("submit", "--json", "--label", "gpu", "train it")
        assert json.loads(ok(routed))["workdir"] is None and routed.stderr == ""
        named = await cli("submit", "--json", "--worker", "gpu-box", "train it")
        assert json.loads(ok(named))["workdir"] is None and named.stderr == ""

        pinned = await cli("submit", "--workdir", str(here), "--label", "gpu", "here")
        task_id = ok(pinned).strip()
        assert pinned.stderr == (
            f"codex-tui: no online worker with label gpu allows {here} "
            f"(their roots: gpu-box: {elsewhere}); the task waits for one\n"
        )
        row = next(line for line in ok(await cli("ls")).splitlines() if line.startswith(task_id))
        assert row.endswith(f"(waiting for a worker with label gpu whose roots hold {here})")
        anywhere = await cli("submit", "--workdir", str(here), "unrouted")
        assert f"no online worker allows {here}" in anywhere.stderr
    finally:
        await api.aclose()


async def test_a_worker_that_cannot_run_is_listed_so_and_handed_no_task(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(local_worker=False)
    api = WorkerApi(server.url, server.token)
    why = "codex not found: install it: npm install -g @openai/codex"
    hello = WorkerHello(name="gpu-box", workdir_roots=["/"], labels=["gpu"], cannot_run=why)
    try:
        worker = await api.connect(hello)
        async with server.client() as client:
            listed = await client.list_workers()
            assert [w.cannot_run for w in listed] == [why]
        submitted = await asyncio.to_thread(server.cli, "submit", "--label", "gpu", "train")
        assert "no online worker has label gpu; the task waits for one" in submitted.stderr
        assert await api.claim(worker.id, 0.5) is None  # the task is queued, not for it
        await api.connect(hello.model_copy(update={"cannot_run": None}))  # codex installed
        claim = await api.claim(worker.id, 10)
        assert claim is not None and claim.task.id == ok(submitted).strip()
    finally:
        await api.aclose()


def _commands_taking_a_token() -> list[tuple[str, click.Command]]:
    """Every ``codex-tui`` command (the group included) with a ``--token`` option, by name."""
    from codex_tui.cli import main

    found: list[tuple[str, click.Command]] = []

    def walk(name: str, command: click.Command) -> None:
        if any(p.name == "token" for p in command.params):
            found.append((name, command))
        if isinstance(command, click.Group):
            with click.Context(command) as ctx:
                for sub in command.list_commands(ctx):
                    sub_command = command.get_command(ctx, sub)
                    assert sub_command is not None
                    walk(f"{name} {sub}", sub_command)

    walk("codex-tui", main)
    return found


def test_every_token_flag_says_it_shows_in_ps_and_offers_a_file() -> None:
    commands = _commands_taking_a_token()
    names = [name for name, _ in commands]
    assert {"codex-tui", "codex-tui ls", "codex-tui pair", "codex-tui worker"} <= set(names)
    for name, command in commands:
        options = {opt for p in command.params for opt in getattr(p, "opts", ())}
        assert "--token-file" in options, name
        token = next(p for p in command.params if p.name == "token")
        assert isinstance(token, click.Option) and token.envvar == "CODEX_TUI_TOKEN", name
        assert "`ps`" in (token.help or ""), name


def test_the_token_comes_from_a_file_stdin_or_the_environment_never_a_flag(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    env = {**server.env, "CODEX_TUI_HOME": str(tmp_path / "laptop"), "CODEX_TUI_SERVER": server.url}
    env.pop("CODEX_TUI_TOKEN", None)
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    token_file.chmod(0o600)

    missing = _run(env, "ls")
    assert missing.returncode == 2 and "no token" in missing.stderr
    assert ok(_run(env, "ls", "--token-file", str(token_file))) == ""
    assert "token:  from --token-file" in ok(_run(env, "status", "--token-file", str(token_file)))
    assert ok(_run(env, "ls", "--token-file", "-", stdin=server.token + "\n")) == ""
    from_env = ok(_run({**env, "CODEX_TUI_TOKEN_FILE": str(token_file)}, "status"))
    assert "token:  from CODEX_TUI_TOKEN_FILE" in from_env
    # On the group, for every verb under it.
    assert ok(_run(env, "--token-file", str(token_file), "ls")) == ""
    # A file wins over CODEX_TUI_TOKEN; a flag and a file at once is a usage error.
    over_env = _run({**env, "CODEX_TUI_TOKEN": "ctu_stale"}, "ls", "--token-file", str(token_file))
    assert ok(over_env) == ""
    filed = {**env, "CODEX_TUI_TOKEN_FILE": str(token_file)}
    assert "token:  from --token\n" in ok(_run(filed, "status", "--token", server.token))
    # The variable's file is read only when it gives the token: a flag beside a variable
    # naming an unreadable file works, and without the flag the error names the variable.
    unreadable = {**env, "CODEX_TUI_TOKEN_FILE": str(tmp_path / "gone")}
    assert "token:  from --token\n" in ok(_run(unreadable, "status", "--token", server.token))
    gone = _run(unreadable, "ls")
    assert gone.returncode == 2 and "CODEX_TUI_TOKEN_FILE: cannot read the token" in gone.stderr
    both = _run(env, "ls", "--token", server.token, "--token-file", str(token_file))
    assert both.returncode == 2 and "give the token once" in both.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    refused = _run(env, "ls", "--token-file", str(empty))
    assert refused.returncode == 2 and str(empty) in refused.stderr
    absent = _run(env, "ls", "--token-file", str(tmp_path / "nowhere"))
    assert absent.returncode == 2 and "cannot read the token" in absent.stderr
    for done in (missing, both, refused, absent):
        assert server.token not in done.stdout + done.stderr


@pytest.mark.parametrize("given_to", ["worker", "group"])
def test_a_worker_takes_its_token_from_a_file_and_it_stays_out_of_its_command_line(
    server_factory: ServerFactory, tmp_path: Path, given_to: str
) -> None:
    # The worker reads its token by the rules of every other command: a --token-file given to
    # the group (`codex-tui --token-file F worker`) counts too.
    server = server_factory(local_worker=False)
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    env = {**server.env, "CODEX_TUI_HOME": str(tmp_path / "gpu-box")}
    env.pop("CODEX_TUI_TOKEN", None)
    filed = ["--token-file", str(token_file)]
    argv = [sys.executable, "-m", "codex_tui", *(filed if given_to == "group" else [])]
    argv += ["worker", "--server", server.url, *(filed if given_to == "worker" else [])]
    argv += ["--name", "filed", "--codex-bin", str(FAKE_CODEX)]
    argv += ["--workdir-root", str(tmp_path)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:

        def online() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            listed = httpx.get(
                f"{server.url}/api/workers", headers={"Authorization": f"Bearer {server.token}"}
            ).json()
            return any(w["name"] == "filed" and w["online"] for w in listed)

        wait_until(online, 30, "the worker started with --token-file to connect")
        assert server.token not in " ".join(psutil.Process(proc.pid).cmdline())
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_worker_refuses_two_tokens_and_names_an_unreadable_token_file(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(local_worker=False)
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    env = {**server.env, "CODEX_TUI_HOME": str(tmp_path / "gpu-box")}
    env.pop("CODEX_TUI_TOKEN", None)
    worker = ["worker", "--server", server.url, "--name", "filed"]
    both = _run(env, *worker, "--token", server.token, "--token-file", str(token_file))
    assert both.returncode == 2 and "give the token once" in both.stderr
    gone = _run({**env, "CODEX_TUI_TOKEN_FILE": str(tmp_path / "gone")}, *worker)
    assert gone.returncode == 2 and "CODEX_TUI_TOKEN_FILE: cannot read the token" in gone.stderr
    assert server.token not in both.stderr + gone.stderr
