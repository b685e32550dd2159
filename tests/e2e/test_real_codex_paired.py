"""The real Codex CLI (pinned 0.169.0) on a paired worker process: its own CODEX_TUI_HOME, its
CODEX_HOME pointing at the mock model, a task routed to it by name with ``codex-tui submit
--worker NAME --follow`` that runs a shell command (issue 3, routing and capabilities)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, ServerFactory
from tests.fakes.mock_model_server import MockModel, call_shell, say
from tests.support.worker_procs import WorkerPool

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Paired worker processes of this test (killed at the end)."""
    with WorkerPool(tmp_path) as pool:
        yield pool


def test_real_codex_on_a_paired_worker_runs_a_task_routed_to_it_by_name(
    server_factory: ServerFactory,
    workers: WorkerPool,
    codex_bin: str,
    codex_home: Path,
    mock_model: MockModel,
) -> None:
    server: LiveServer = server_factory(local_worker=False, codex_bin=None, fake_mode=None)
    remote = workers.start(
        server,
        "far-box",
        labels=("linux",),
        fake_mode=None,
        codex_bin=codex_bin,
        extra_env={"CODEX_HOME": str(codex_home)},
    )
    listed = remote.wait_connected()
    assert listed.codex_version == "codex-cli 0.169.0" and listed.labels == ["linux"]

    marker = f"paired-{uuid.uuid4().hex[:12]}"
    mock_model.script([call_shell(f"echo {marker}"), say(f"Echoed {marker}.")])
    result = server.cli(
        "submit",
        "--worker",
        "far-box",
        "--workdir",
        str(remote.workroot),
        "--follow",
        "echo the marker",
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr + remote.describe()
    task_id = result.stdout.splitlines()[0]
    assert f"echo {marker}" in result.stdout and f"Echoed {marker}." in result.stdout
    assert "on far-box" in result.stdout
    assert any(marker in out for out in mock_model.function_call_outputs())

    listed_tasks = server.cli("ls", "--json")
    assert listed_tasks.returncode == 0, listed_tasks.stderr
    task = next(
        json.loads(line)
        for line in listed_tasks.stdout.splitlines()
        if json.loads(line)["id"] == task_id
    )
    assert task["worker_name"] == "far-box" and task["worker_id"] == listed.id
    assert task["status"] == "completed" and task["target_worker"] == "far-box"
    plain = server.cli("ls")
    assert f"{task_id}  completed" in plain.stdout and "far-box" in plain.stdout
