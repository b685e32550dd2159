"""Provides the few Textual internals codex-tui needs that Textual has no public API for.

Everything else in codex-tui uses Textual's public API; each function here says which private
name it reads, why no public one serves, and what uses it. Kept in one module so that a new
Textual release (``pyproject.toml`` pins the range the TUI tests run against) is checked in
one place; ruff's SLF001 (private member access) is on for ``codex_tui`` and off only here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from textual.app import App
from textual.binding import Binding, BindingsMap
from textual.css.styles import RulesMap
from textual.dom import DOMNode
from textual.geometry import Region, Size
from textual.scrollbar import ScrollBar
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import OptionList

__all__ = [
    "class_bindings",
    "exit_with_traceback_without_locals",
    "footer_key",
    "keymap",
    "node_bindings",
    "replace_option_prompt_in_place",
    "update_scrollbars",
    "vertical_scrollbar",
    "write_to_terminal",
]


def node_bindings(node: DOMNode) -> BindingsMap:
    """Every binding of ``node`` as Textual dispatches keys to it (``DOMNode._bindings``): its
    class's merged ``BINDINGS`` plus those added at run time (the app's command-palette key).

    Why private: Textual's public view is :attr:`textual.screen.Screen.active_bindings`, which
    holds only the focused widget chain, without the keys a focused input consumes and without
    disabled actions. The keys screen, the command palette and the ``[keymap]`` check list the
    bindings of every widget on screen (:mod:`codex_tui.commands`).

    Returns:
        The node's own map; callers only read it.
    """
    bindings: BindingsMap = node._bindings
    return bindings


def class_bindings(node_class: type[DOMNode]) -> BindingsMap:
    """The bindings an instance of ``node_class`` would have: its ``BINDINGS`` merged along
    its MRO as Textual merges them (``DOMNode._merge_bindings``, which honours
    ``inherit_bindings=False``).

    Why private: screens that are not open have no instance to read, and Textual has no public
    merge; the keys screen and the ``[keymap]`` check list them (:mod:`codex_tui.commands`).

    Returns:
        A new map.
    """
    return node_class._merge_bindings()


def footer_key(
    app: App[Any], binding: Binding, *, enabled: bool, tooltip: str, classes: str
) -> Widget:
    """The widget Textual's Footer shows for ``binding`` (``textual.widgets._footer.FooterKey``,
    made as :meth:`textual.widgets.Footer.compose` makes it, with the app's key display).

    Why private: Textual does not export FooterKey; the dashboard's footer adds the keys
    screen's ``?`` docked at its right, as the Footer docks the command palette's key
    (:class:`codex_tui.widgets.keys_footer.KeysFooter`).
    """
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    key = FooterKey(
        binding.key,
        app.get_key_display(binding),
        binding.description,
        binding.action,
        classes=classes,
        disabled=not enabled,
        tooltip=tooltip,
    )
    return key.data_bind(compact=Footer.compact)


def keymap(app: App[Any]) -> Mapping[str, str]:
    """The keymap ``app`` applies: binding id → comma-separated keys, normalised by
    :meth:`textual.app.App.set_keymap` (``"?"`` reads ``"question_mark"``) (``App._keymap``).

    Why private: Textual has a setter (``set_keymap``, ``update_keymap``) but no getter, and
    the keys screen and the palette show the keys as the keymap made them.

    Returns:
        The app's own mapping (empty when no keymap is set); callers only read it.
    """
    return app._keymap


def write_to_terminal(app: App[Any], text: str) -> None:
    """Write ``text`` (an escape sequence) to the terminal as :meth:`textual.app.App.bell`
    does (``App._driver``); nothing while the app is headless or has no driver yet.

    Why private: Textual writes raw sequences only for its own features (bell, clipboard,
    cursor shape); the desktop notification (OSC 9/777, :mod:`codex_tui.notify`) is not one.
    """
    driver = app._driver
    if not app.is_headless and driver is not None:
        driver.write(text)


def update_scrollbars(widget: Widget, virtual_size: Size) -> None:
    """Update ``widget``'s scrollbars for a new scroll range, as Textual does after a layout
    (``Widget._scroll_update``), without asking for a layout.

    Why private: the public way, setting ``virtual_size``, lays out the whole screen; the
    transcript changes its scroll range on every batch of events without changing its size
    (:class:`codex_tui.widgets.transcript.Transcript`), and a layout per batch is the TUI's
    event-loop lag during a burst.
    """
    widget._scroll_update(virtual_size)


def vertical_scrollbar(widget: Widget, make: type[ScrollBar]) -> ScrollBar:
    """``widget``'s vertical scrollbar, created as an instance of ``make`` (a
    :class:`~textual.scrollbar.ScrollBar` subclass) the first time it is asked for, as
    :attr:`textual.widget.Widget.vertical_scrollbar` creates its own
    (``Widget._vertical_scrollbar``, ``App._start_widget``).

    Why private: Textual has no public hook for the class of a widget's scrollbars, only for
    how they draw (``ScrollBar.renderer``); the transcript's scrollbar skips repaints that
    would draw the same thumb (:class:`codex_tui.widgets.transcript.SteadyScrollBar`), which
    a following pane otherwise sends on every batch of events.
    """
    bar = widget._vertical_scrollbar
    if bar is None:
        bar = make(vertical=True, name="vertical", thickness=widget.scrollbar_size_vertical)
        bar.display = False
        widget._vertical_scrollbar = bar
        widget.app._start_widget(widget, bar)
    return bar


def replace_option_prompt_in_place(options: OptionList, option_id: str, prompt: VisualType) -> None:
    """Replace the prompt of ``options``'s option ``option_id`` and repaint only that option's
    lines when it keeps its height; otherwise as :meth:`OptionList.replace_option_prompt`.

    Why private: the public ``replace_option_prompt`` drops every option's cached lines and
    repaints the whole list; the task list changes one row's age once a second while a task
    runs, and a whole-list repaint is about 1.8 kB sent over SSH for one changed
    character (:class:`codex_tui.widgets.task_list.TaskList`). It uses the option's
    prompt setter (``Option._set_prompt``), the list's line layout (``OptionList._heights``,
    ``_index_to_line``), its rendered-option cache
    (``OptionList._option_render_cache``, keyed by option first) and its visual of an option
    (``OptionList._get_visual``), as ``OptionList._update_lines`` measures heights.

    Raises:
        OptionDoesNotExist: no option has the id ``option_id``.
    """
    index = options.get_option_index(option_id)
    option = options.get_option_at_index(index)
    region = options.scrollable_content_region
    heights = options._heights  # lays the lines out if they were not yet
    if not region or index not in heights:
        options.replace_option_prompt(option_id, prompt)
        return
    option._set_prompt(prompt)
    padding = options.get_component_styles("option-list--option").padding
    width = region.width - options._get_left_gutter_width() - padding.width
    rules = cast(RulesMap, options.styles)  # as OptionList measures heights
    height = options._get_visual(option).get_height(rules, width) + option._divider
    if height != heights[index]:
        options.replace_option_prompt(option_id, prompt)  # the lines below move
        return
    cache = options._option_render_cache
    for key in [key for key in cache.keys() if key[0] is option]:
        cache.discard(key)
    top = options._index_to_line[index] - options.scroll_offset.y
    gutter = options.gutter
    options.refresh(Region(gutter.left, gutter.top + top, region.width, height))


def exit_with_traceback_without_locals(app: App[Any]) -> None:
    """Exit ``app`` after an unhandled exception as Textual's ``App._fatal_error`` does (a bell,
    the traceback printed once the terminal is restored, the app closed), but without each
    frame's local variables.

    Why private: Textual renders a crash with ``show_locals=True`` and has no setting for it;
    a local can hold the user's token or a pairing code (docs/reliability.md S7), so the app
    overrides ``_fatal_error`` with this. It appends to ``App._exit_renderables`` (printed at
    exit) and calls ``App._close_messages_no_wait``, as Textual's own method does.
    """
    import rich  # imported on a crash only: rich.traceback loads pygments (start-up time)
    from rich.segment import Segments
    from rich.traceback import Traceback

    app.bell()
    traceback = Traceback(show_locals=False, width=None, suppress=[rich])
    app._exit_renderables.append(Segments(app.console.render(traceback, app.console.options)))
    app._close_messages_no_wait()
