"""Provides KeysFooter: Textual's Footer with the keys screen's binding (``?``) always shown."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.dom import NoScreen
from textual.widget import Widget
from textual.widgets import Footer

from codex_tui.textual_internals import footer_key

__all__ = ["SHOW_KEYS_ID", "KeysFooter"]

#: The binding id of the keys screen (:meth:`codex_tui.app.CodexTuiApp.action_show_keys`).
SHOW_KEYS_ID = "show-keys"


class KeysFooter(Footer):
    """A Footer whose first key is the keys screen's (``?``, binding id :data:`SHOW_KEYS_ID`),
    so that it never drops out of sight.

    Textual's Footer lays the bindings out in the order of the focus chain (the focused
    widget's first, the app's last) and cuts what does not fit: at 80 columns the app's ``?``
    was the first to go. Here it comes first; the binding itself is declared with
    ``show=False`` so that it is not listed twice. Whatever key ``[keymap]`` gives it is what
    shows.
    """

    def compose(self) -> ComposeResult:
        """The keys screen's key, then the Footer's keys."""
        hint = self._keys_hint()
        if hint is not None:
            yield hint
        yield from super().compose()
        if hint is not None:  # the Footer sized its grid for its own keys
            self.styles.grid_size_columns = (self.styles.grid_size_columns or 0) + 1

    def _keys_hint(self) -> Widget | None:
        try:
            active = self.screen.active_bindings
        except (NoScreen, NoMatches):  # composed before it is on a screen
            return None
        for _namespace, binding, enabled, tooltip in active.values():
            if binding.id == SHOW_KEYS_ID:
                tip = tooltip or binding.description
                return footer_key(self.app, binding, enabled=enabled, tooltip=tip, classes="")
        return None
