"""Provides the tests of the worker's one configuration (server_client.worker.settings): the
flags fill it, its ``CODEX_TUI_WORKER_*`` variables stand in for flags not given, the local
worker reads it back from its environment, and bad values are refused naming the flag or
variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from codex_tui.cli import main, serve
from server_client.models import Runtime
from server_client.worker.settings import WorkerSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CODEX_TUI_WORKER_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("CODEX_TUI_TOKEN", raising=False)


def test_the_spelled_out_defaults_match_the_settings() -> None:
    fields = WorkerSettings.model_fields
    assert serve.DEFAULT_MAX_TASKS == fields["max_tasks"].default
    assert serve.DEFAULT_GRACE_S == fields["grace_s"].default
    assert set(serve.WORKER_FLAGS) <= set(fields)


def test_the_environment_carries_every_setting_to_the_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = WorkerSettings(
        server="http://127.0.0.1:8765",
        token=SecretStr("secret-token"),
        name="local",
        workdir_roots=["~/src", "/srv"],
        codex_bin="/opt/codex",
        max_tasks=7,
        pass_env=["OPENAI_BASE_URL"],
        grace_s=3.5,
        labels=["gpu", "os:linux"],
        runtime=Runtime.EXEC,
    )
    assert settings.workdir_roots == [os.path.expanduser("~/src"), "/srv"]
    assert "secret-token" not in repr(settings)
    environ = settings.environ()
    assert environ["CODEX_TUI_TOKEN"] == "secret-token"
    assert "secret-token" not in " ".join(v for k, v in environ.items() if k != "CODEX_TUI_TOKEN")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert WorkerSettings() == settings  # type: ignore[call-arg]


def test_arguments_win_over_the_environment_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEX_TUI_WORKER_MAX_TASKS", "9")
    monkeypatch.setenv("CODEX_TUI_WORKER_LABELS", '["gpu"]')
    monkeypatch.setenv("CODEX_TUI_TOKEN", "from-env")
    from_env = WorkerSettings(server="http://s")  # type: ignore[call-arg]
    assert (from_env.max_tasks, from_env.labels, from_env.grace_s) == (9, ["gpu"], 2.0)
    assert from_env.token.get_secret_value() == "from-env"
    given = WorkerSettings(server="http://s", token=SecretStr("flag"), max_tasks=2)
    assert (given.max_tasks, given.token.get_secret_value()) == (2, "flag")


@pytest.mark.parametrize(
    ("args", "env", "problem"),
    [
        (["--max-tasks", "0"], {}, "--max-tasks: max_tasks: Input should be greater than"),
        (["--cancel-grace", "61"], {}, "--cancel-grace: grace_s: Input should be less than"),
        (["--label", "two words"], {}, "--label: labels.0: String should match pattern"),
        (
            [],
            {"CODEX_TUI_WORKER_GRACE_S": "-1"},
            "environment variable CODEX_TUI_WORKER_GRACE_S: grace_s:",
        ),
        ([], {"CODEX_TUI_WORKER_LABELS": "gpu"}, "CODEX_TUI_WORKER_LABELS: not JSON"),
    ],
)
def test_bad_worker_values_name_the_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(
        main, ["worker", "--server", "http://127.0.0.1:9", "--token", "t", *args]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("codex-tui: invalid worker settings: ")
    assert problem in result.stderr
    assert "Traceback" not in result.output


def test_the_worker_process_refuses_a_missing_setting_clearly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_TUI_")}
    env["CODEX_TUI_WORKER_SERVER"] = "http://127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-m", "server_client.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "CODEX_TUI_TOKEN: Field required" in done.stderr
    assert "Traceback" not in done.stderr
