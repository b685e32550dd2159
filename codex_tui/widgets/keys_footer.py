"""Provides KeysFooter: Textual's Footer with the keys screen's binding (``?``) always shown."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.dom import NoScreen
from textual.widget import Widget
from textual.widgets import Footer

from codex_tui.textual_internals import class_bindings, footer_key

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
        yield from self._in_declared_order(list(super().compose()))
        if hint is not None:  # the Footer sized its grid for its own keys
            self.styles.grid_size_columns = (self.styles.grid_size_columns or 0) + 1

    def _in_declared_order(self, keys: list[Widget]) -> list[Widget]:
        """``keys`` (the Footer's) in the order their bindings are declared, namespace by
        namespace as the Footer lays them out.

        Textual's keymap moves a remapped binding to the end of its namespace's bindings
        (``BindingsMap.apply_keymap``), and with it to the end of the footer, where 80
        columns cut it off: with ``new-task = "f2"`` the dashboard's "New" was gone. Keys
        the Footer grouped (a binding group) are left as they are."""
        try:
            active = self.screen.active_bindings
        except (NoScreen, NoMatches):
            return keys
        rank: dict[str, tuple[int, int]] = {}
        namespaces: dict[int, int] = {}
        declared: dict[int, list[str]] = {}
        for namespace, binding, _enabled, _tooltip in active.values():
            place = namespaces.setdefault(id(namespace), len(namespaces))
            if id(namespace) not in declared:
                declared[id(namespace)] = [
                    bound.action
                    for bindings in class_bindings(type(namespace)).key_to_bindings.values()
                    for bound in bindings
                ]
            actions = declared[id(namespace)]
            order = actions.index(binding.action) if binding.action in actions else len(actions)
            rank.setdefault(binding.action, (place, order))
        if any(not isinstance(getattr(key, "action", None), str) for key in keys):
            return keys
        last = (len(namespaces), 0)
        return sorted(keys, key=lambda key: rank.get(getattr(key, "action", ""), last))

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
