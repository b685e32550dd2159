"""Provides the tests of how the ``codex-tui`` command is assembled: every subcommand of the
group resolves to its module's command, and opening the TUI imports none of them."""

from __future__ import annotations

from pathlib import Path

import click

from codex_tui.cli import main
from codex_tui.cli.tui import SUBCOMMANDS
from tests.tui.test_tui_startup import imported, run_python

VERB_MODULES = (
    "codex_tui.cli.tasks",
    "codex_tui.cli.conversations",
    "codex_tui.cli.serve",
    "codex_tui.cli.admin",
    "codex_tui.cli.review",
    "codex_tui.cli.account",
    "codex_tui.cli.web",
)


def test_every_subcommand_resolves_to_a_command_of_its_name() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(ctx, "no-such-verb") is None


def test_the_group_alone_imports_no_verb_module(tmp_path: Path) -> None:
    modules = run_python(
        """
        import json, sys
        import codex_tui.cli
        print(json.dumps(sorted(sys.modules)))
        """,
        tmp_path,
    )
    assert imported(modules, VERB_MODULES) == []
    assert "codex_tui.cli.tui" in modules
