"""The script verbs of ``codex-tui`` as a shell script uses them (issue 16), against a real
server and its local worker (the fake codex): ``--json`` keeps stdout JSON lines only, a
malformed task id is a usage error, a closed pipe ends a command quietly with 0, a bad
server URL says what to fix, and ``login``/``logout``/``status``."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ServerFactory


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
