"""Provides the binding registry: every key binding of the app by section, for the keys screen
(``?``), the command palette (``ctrl+p``) and the check of config.toml's ``[keymap]``.

Bindings are collected from the app, the current screen, its focused widget chain and every
widget on it, and from every codex-tui screen and widget class (:func:`binding_registry`),
each class once. Keys are shown as they are after the keymap
(:meth:`textual.app.App.set_keymap`). Palette commands run a binding's action in the
binding's namespace (``app.run_action(action, namespace)``), exactly as its key would.
The binding maps and the keymap are read through :mod:`codex_tui.textual_internals` (Textual
has no public API for them).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingsMap
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget

from codex_tui.textual_internals import class_bindings, keymap, node_bindings

__all__ = [
    "GLOBAL_SECTION",
    "binding_commands",
    "binding_registry",
    "binding_sections",
    "current_keys",
    "known_binding_ids",
    "section_title",
    "without_titles",
]

#: Title of the app-wide bindings' section.
GLOBAL_SECTION = "Global"


def _subclasses(node_class: type[DOMNode]) -> Iterator[type[DOMNode]]:
    for subclass in node_class.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def section_title(node_class: type[DOMNode]) -> str:
    """A class's section title: its ``BINDING_GROUP_TITLE``, else its name in words without
    a ``Screen``/``Modal`` suffix (``HistoryScreen`` → "History", ``PaneGrid`` → "Pane grid")."""
    if node_class.BINDING_GROUP_TITLE:
        return node_class.BINDING_GROUP_TITLE
    name = node_class.__name__
    for suffix in ("Screen", "Modal"):
        if name.endswith(suffix) and name != suffix:
            name = name.removesuffix(suffix)
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", name) or [name]
    return " ".join([words[0], *(word.lower() for word in words[1:])])


def _import_views() -> None:
    """Import every module of ``codex_tui.screens`` and ``codex_tui.widgets`` (the app imports
    a screen only when it first opens)."""
    import codex_tui.screens
    import codex_tui.widgets

    for package in (codex_tui.screens, codex_tui.widgets):
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)


def binding_registry() -> list[tuple[str, type[DOMNode]]]:
    """codex-tui's screens and widgets that declare bindings, with their section titles.

    Found, not listed by hand: every class of a ``codex_tui`` module that declares
    ``BINDINGS`` (apps aside), screens first, then by title. Every module of
    ``codex_tui.screens`` and ``codex_tui.widgets`` is imported first, so screens not opened
    yet are listed too.
    """
    _import_views()
    found = {
        node_class
        for node_class in _subclasses(DOMNode)
        if _ours(node_class)
        and "BINDINGS" in node_class.__dict__
        and not issubclass(node_class, App)
    }
    ordered = sorted(
        found, key=lambda c: (not issubclass(c, Screen), section_title(c), c.__qualname__)
    )
    return [(section_title(node_class), node_class) for node_class in ordered]


def current_keys(app: App[Any], binding: Binding) -> list[str]:
    """The keys that trigger ``binding`` now: the keymap's, when it names the binding's id."""
    mapped = keymap(app).get(binding.id) if binding.id else None
    keys = mapped.split(",") if mapped else binding.key.split(",")
    return [key.strip() for key in keys if key.strip()]


@cache
def _own_bindings(node_class: type[DOMNode]) -> frozenset[Binding]:
    """The bindings ``node_class`` itself declares (not those it inherits)."""
    own = node_class.__dict__.get("BINDINGS", [])
    return frozenset(binding for _key, binding in BindingsMap(own))


def _owner(node_class: type[DOMNode], binding: Binding) -> type[DOMNode]:
    """The class in ``node_class``'s MRO that declares ``binding`` (itself when none does)."""
    for base in node_class.__mro__:
        if isinstance(base, type) and issubclass(base, DOMNode) and binding in _own_bindings(base):
            return base
    return node_class


def _grouped(
    app: App[Any],
    node_class: type[DOMNode],
    bindings: BindingsMap,
    seen: set[tuple[type[DOMNode], Binding]],
) -> list[Binding]:
    """One binding per (action, description, id), its ``key`` the comma-joined current keys.

    System bindings, and bindings whose declaring class an earlier section already listed
    them for (e.g. the scroll keys every scrolling widget inherits), are left out.
    """
    groups: dict[tuple[str, str, str | None], list[str]] = {}
    firsts: dict[tuple[str, str, str | None], Binding] = {}
    for _key, binding in bindings:
        source = (_owner(node_class, binding), binding)
        if binding.system or source in seen:
            continue
        seen.add(source)
        group = (binding.action, binding.description, binding.id)
        firsts.setdefault(group, binding)
        keys = groups.setdefault(group, [])
        for key in current_keys(app, binding):
            if key not in keys:
                keys.append(key)
    return [firsts[group].with_key(",".join(keys)) for group, keys in groups.items()]


def _ours(node_class: type[DOMNode]) -> bool:
    return node_class.__module__.startswith("codex_tui.")


def _on_screen(screen: Screen[Any]) -> tuple[list[DOMNode], list[DOMNode]]:
    """The nodes of ``screen`` whose bindings work now (the screen, then its focused widget
    chain innermost first) and its other widgets."""
    active: list[DOMNode] = [screen]
    focused = screen.focused
    if focused is not None:
        chain = [node for node in focused.ancestors_with_self if isinstance(node, Widget)]
        active += [node for node in chain if node is not screen]
    others: list[DOMNode] = [w for w in screen.walk_children(Widget) if w not in active]
    return active, others


def binding_sections(app: App[Any]) -> list[tuple[str, list[Binding]]]:
    """Every binding by section, each class once.

    Order: the app's; the current screen's and its focused widget chain's; codex-tui's other
    widgets on screen; the screens and widgets of :func:`binding_registry` not on screen;
    Textual's other widgets on screen. A binding inherited from a class whose bindings an
    earlier section listed is left out. Each binding's ``key`` holds its current keys (after
    the keymap), comma-separated.
    """
    seen_bindings: set[tuple[type[DOMNode], Binding]] = set()
    seen_classes: set[type[DOMNode]] = set()
    sections: list[tuple[str, list[Binding]]] = []

    def add(node_class: type[DOMNode], bindings: BindingsMap, title: str | None = None) -> None:
        if node_class in seen_classes:
            return
        seen_classes.add(node_class)
        listed = _grouped(app, node_class, bindings, seen_bindings)
        if listed:
            sections.append((title or section_title(node_class), listed))

    # Instance maps: they hold bindings added at run time (the app's ctrl+p, for one).
    add(type(app), node_bindings(app), GLOBAL_SECTION)
    active, others = _on_screen(app.screen)
    for node in active:
        add(type(node), node_bindings(node))
    for node in others:
        if _ours(type(node)):
            add(type(node), node_bindings(node))
    for _title, node_class in binding_registry():
        add(node_class, class_bindings(node_class))
    for node in others:
        add(type(node), node_bindings(node))
    return sections


def known_binding_ids(app: App[Any]) -> set[str]:
    """Every binding id the app knows: the app's, the registry's, and those of the widgets on
    the screens in the stack (the ids ``[keymap]`` may name)."""
    maps: list[BindingsMap] = [node_bindings(app)]
    maps += [class_bindings(node_class) for _title, node_class in binding_registry()]
    for screen in app.screen_stack:
        maps.append(node_bindings(screen))
        maps += [node_bindings(widget) for widget in screen.walk_children(Widget)]
    return {binding.id for bindings in maps for _key, binding in bindings if binding.id}


@dataclass
class _Entry:
    namespace: DOMNode
    binding: Binding
    keys: list[str]
    ids: list[str]


def _palette_worthy(binding: Binding) -> bool:
    """Bindings with a description that are ours (an id) or shown in the footer."""
    if binding.system or not binding.description:
        return False
    if binding.action in {"command_palette", "app.command_palette"}:
        return False
    return bool(binding.id) or binding.show


def binding_commands(app: App[Any], screen: Screen[Any]) -> list[SystemCommand]:
    """One palette command per binding on ``screen``: those active there (the focused chain,
    the screen and the app, or a modal) and those of codex-tui widgets elsewhere on it, each
    action of a widget class once (three panes list "Search" once).

    Each is titled by the binding's description; its help shows the keys and the binding id;
    it runs the binding's action in the binding's namespace, as the key would.
    """
    entries: dict[tuple[type[DOMNode], str], _Entry] = {}

    def add(namespace: DOMNode, binding: Binding) -> None:
        if not _palette_worthy(binding):
            return
        # Once per class and action: several panes list their actions once, run in the
        # focused one, else in the active one (the ``-active`` class), else the first.
        entry = entries.setdefault(
            (type(namespace), binding.action), _Entry(namespace, binding, [], [])
        )
        if entry.namespace is not namespace:
            return
        for key in current_keys(app, binding):
            if key not in entry.keys:
                entry.keys.append(key)
        if binding.id and binding.id not in entry.ids:
            entry.ids.append(binding.id)

    for active in screen.active_bindings.values():
        add(active.node, active.binding)
    if not screen.is_modal:
        widgets = sorted(screen.walk_children(Widget), key=lambda w: not w.has_class("-active"))
        for widget in widgets:
            if _ours(type(widget)):
                for _key, binding in node_bindings(widget):
                    if widget.check_action(binding.action, ()) is not False:
                        add(widget, binding)

    commands: list[SystemCommand] = []
    for entry in entries.values():
        keys = ", ".join(app.get_key_display(entry.binding.with_key(key)) for key in entry.keys)
        where = GLOBAL_SECTION if entry.namespace is app else section_title(type(entry.namespace))
        help_text = f"{keys} · {', '.join(entry.ids) or 'no id'} · {where}"
        callback = partial(app.run_action, entry.binding.action, entry.namespace)
        commands.append(SystemCommand(entry.binding.description, help_text, callback))
    return commands


def without_titles(commands: Iterable[SystemCommand], titles: set[str]) -> Iterator[SystemCommand]:
    """``commands`` less those whose title is in ``titles`` (ours replace Textual's)."""
    return (command for command in commands if command.title not in titles)
