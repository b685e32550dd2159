"""Provides how each typed codex event is shown: the rules (:mod:`~codex_tui.events.view`),
Rich renderables for panes and the plain printer (:mod:`~codex_tui.events.pane`,
:mod:`~codex_tui.events.plain`), agent messages as Markdown
(:mod:`~codex_tui.events.markdown`) and transcript export (:mod:`~codex_tui.events.export`).

Nothing in this package imports Textual; import the submodule you need (importing this
package imports none of them, so the CLI stays quick to start).
"""
