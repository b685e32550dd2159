"""Provides how the server stores an event: encoded once as compact JSON, and cut with a visible
marker when it is longer than the server's limit (docs/reliability.md E6). Which tasks may be
submitted is server_client.server.admission."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from server_client.codex import event_type
from server_client.codex.lines import scrub_surrogates

#: Marker left where an oversized string was cut; ``{n}`` is the number of bytes dropped.
TRUNCATION_MARKER = "…[truncated {n} bytes]"

#: Bytes the marker and JSON quoting may add to a cut string (generous).
_MARKER_ROOM = 64


def encoded_size(data: Any) -> int:
    """Bytes of ``data`` as the store encodes it (compact JSON, UTF-8)."""
    return len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def encode_event(data: Any, max_bytes: int) -> str:
    """``data`` as the store keeps it (compact JSON text, UTF-8 characters unescaped), cut by
    :func:`truncate_event` when it is longer than ``max_bytes`` encoded bytes. Encodes once
    when it fits (the usual case), with pydantic-core's encoder (several times faster than the
    standard library's on event-shaped data; the hot path of every upload); data it refuses
    (a lone surrogate, which UTF-8 cannot hold) goes through the standard library's, with each
    lone surrogate replaced by ``?`` first, as the worker does (server_client.codex.lines;
    docs/reliability.md S10, T2): valid JSON whose strings UTF-8 cannot hold is stored, not a
    500.
    """
    try:
        encoded = to_json(data)
    except PydanticSerializationError:
        encoded = None
        data = scrub_surrogates(data)
    if encoded is not None and len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    if encoded is None:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        # A character is at most 4 UTF-8 bytes: most events fit without encoding to count.
        if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
            return text
    cut, _ = truncate_event(data, max_bytes)
    return json.dumps(cut, ensure_ascii=False, separators=(",", ":"))


def _longest_string(data: Any) -> tuple[tuple[Any, ...], int]:
    """Path to the longest string leaf of ``data`` and its UTF-8 length (``((), -1)`` if none).

    Walks with an explicit stack, so deeply nested input cannot exhaust the recursion limit.
    """
    best: tuple[tuple[Any, ...], int] = ((), -1)
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            size = len(node.encode("utf-8"))
            if size > best[1]:
                best = (path, size)
        elif isinstance(node, dict):
            stack.extend(((*path, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, index), value) for index, value in enumerate(node))
    return best


def _cut(text: str, drop_bytes: int) -> str:
    raw = text.encode("utf-8")
    keep = max(0, len(raw) - drop_bytes)
    head = raw[:keep].decode("utf-8", errors="ignore")
    return head + TRUNCATION_MARKER.format(n=len(raw) - len(head.encode("utf-8")))


def truncate_event(data: Any, max_bytes: int) -> tuple[Any, bool]:
    """``data`` cut to at most ``max_bytes`` encoded bytes, and whether anything was cut.

    The longest string is shortened first, keeping its head and ending it with
    :data:`TRUNCATION_MARKER` (the visible marker of docs/reliability.md E6), then the next longest,
    until the event fits. An event whose size does not come from strings (say, a huge array
    of numbers) is replaced by ``{"type": <its type>, "truncated_bytes": n}``. The input is not
    modified.
    """
    size = encoded_size(data)
    if size <= max_bytes:
        return data, False
    data = json.loads(json.dumps(data))  # a private copy to cut in place
    for _ in range(64):
        path, length = _longest_string(data)
        if length <= _MARKER_ROOM:
            break
        excess = size - max_bytes + _MARKER_ROOM
        if not path:
            data = _cut(data, min(length, excess))
        else:
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = _cut(parent[path[-1]], min(length, excess))
        size = encoded_size(data)
        if size <= max_bytes:
            return data, True
    return {"type": event_type(data) or None, "truncated_bytes": size}, True
