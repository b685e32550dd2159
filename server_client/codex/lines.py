"""Provides how one line of codex's output becomes the data of an event the worker uploads.

``codex exec --json`` prints one JSON object a line on stdout (docs/codex-facts.md). A line
that parses as an object is a ``codex`` event, kept as codex printed it, with three repairs
that keep it storable and readable by every client (docs/reliability.md E7, T2):

- ``NaN``, ``Infinity`` and numbers too large for a float are not JSON: such a line is kept
  as a raw ``stdout`` line instead.
- A lone UTF-16 surrogate (``"\\ud800"``) cannot be encoded as UTF-8: it becomes ``?``.
- Nesting deeper than :data:`MAX_DEPTH` levels (a tool result can be) would overflow the
  parsers of the server and the SDK: each object or array at that depth is replaced by a
  string holding its compact JSON text, so the event stays modelled and nothing is lost.

Any other line (not JSON, not an object, too deep for Python's own parser) is kept raw as a
``stdout`` event ``{"line": text}``. Nothing here raises for what codex prints.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from server_client.enums import EventKind

__all__ = ["MAX_DEPTH", "clamp_depth", "depth_exceeds", "parse_line", "scrub_surrogates"]

#: Deepest nesting kept as structure in an event's data, in levels (the data object itself
#: is level 1). The server's upload body and the SDK's envelope add three levels at most,
#: and pydantic's JSON parser stops at 200.
MAX_DEPTH = 100


def _refuse_constant(name: str) -> Any:
    """``json.loads`` hook: refuse ``NaN``, ``Infinity`` and ``-Infinity``."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """``json.loads`` hook: a number too large for a float (``1e400``) is refused, not inf."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


def depth_exceeds(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``data`` nests objects or arrays more than ``limit`` levels deep.

    Walks with an explicit stack (no recursion), stopping at the first container too deep.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def clamp_depth(data: Any, limit: int = MAX_DEPTH) -> Any:
    """A copy of ``data`` in which every object or array at level ``limit`` is replaced by
    its compact JSON text (a string), so the result nests at most ``limit - 1`` levels of
    containers below strings. ``data`` itself is not modified; without recursion.
    """
    if limit < 2:
        return _json_text(data) if isinstance(data, dict | list) else data
    root: list[Any] = [None]
    # (source container, destination parent, key in the parent, level of the source)
    stack: list[tuple[Any, Any, Any, int]] = [(data, root, 0, 1)]
    while stack:
        node, parent, key, depth = stack.pop()
        if not isinstance(node, dict | list):
            parent[key] = node
        elif depth >= limit:
            parent[key] = _json_text(node)
        elif isinstance(node, dict):
            copy: dict[Any, Any] = dict.fromkeys(node)
            parent[key] = copy
            stack.extend((value, copy, name, depth + 1) for name, value in node.items())
        else:
            items: list[Any] = [None] * len(node)
            parent[key] = items
            stack.extend((value, items, index, depth + 1) for index, value in enumerate(node))
    return root[0]


def _json_text(node: Any) -> str:
    try:
        return json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    except (RecursionError, ValueError):
        return repr(node)


def scrub_surrogates(value: Any) -> Any:
    """A copy of ``value`` whose strings (keys included) have each lone surrogate replaced by
    ``?``, so it encodes as UTF-8. Iterative; strings without surrogates are kept as is."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, str):
            parent[key] = _scrub(node)
        elif isinstance(node, dict):
            copy: dict[Any, Any] = {}
            parent[key] = copy
            for name, item in node.items():
                name = _scrub(name) if isinstance(name, str) else name
                copy[name] = None
                stack.append((item, copy, name))
        elif isinstance(node, list):
            items: list[Any] = [None] * len(node)
            parent[key] = items
            stack.extend((item, items, index) for index, item in enumerate(node))
        else:
            parent[key] = node
    return root[0]


def _scrub(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def parse_line(
    text: str,
) -> tuple[Literal[EventKind.CODEX, EventKind.STDOUT], Any] | None:
    """The event kind and data for one stdout line of codex (without its newline).

    Returns:
        ``(EventKind.CODEX, object)`` for a JSON object (repaired as the module docstring
        says), ``(EventKind.STDOUT, {"line": text})`` for any other non-blank line, and None
        for a blank line.
    """
    if not text.strip():
        return None
    try:
        obj = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        return EventKind.STDOUT, {"line": text.rstrip("\r")}
    # A line holds at least as many brackets as it nests levels: most lines are not walked.
    if text.count("{") + text.count("[") > MAX_DEPTH and depth_exceeds(obj):
        obj = clamp_depth(obj)
    if "\\ud" in text or "\\uD" in text:
        obj = scrub_surrogates(obj)
    return EventKind.CODEX, obj
