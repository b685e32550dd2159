"""Provides the text rules every layer shares: cutting text to a budget and making untrusted
text safe to show in a terminal.

Text from codex, from a worker or from a repository codex read is untrusted: a file it
``cat``s can hold escape sequences that retitle the window (OSC 0), write the clipboard
(OSC 52) or clear the screen (CSI 2J). :func:`visible` is the one sanitiser every shown or
printed text goes through (docs/reliability.md T1): it keeps the text readable and turns each
control character into a visible stand-in, so nothing reaches a terminal as a control
sequence. Nothing here imports pydantic, Rich or Textual.
"""

from __future__ import annotations

import re

__all__ = [
    "ELLIPSIS",
    "has_controls",
    "json_safe",
    "one_line",
    "truncate",
    "visible",
]

#: What ends a cut text.
ELLIPSIS = "…"

#: C0 controls but newline and tab, DEL, and the C1 controls (U+0080..U+009F), which many
#: terminals read as 8-bit escape sequences (U+009B is CSI, U+009D is OSC).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: The same with newline and tab, for text shown on one line.
_LINE_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _stand_in(match: re.Match[str]) -> str:
    """The visible form of one control character: its Unicode control picture for C0
    (U+2400 + code: ``␛`` for ESC, ``␇`` for BEL), ``␡`` for DEL, ``\\x9b``-style text
    for C1, which has no control pictures."""
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\x{code:02x}"


def has_controls(text: str) -> bool:
    """True when ``text`` holds a character :func:`visible` would replace."""
    return _CONTROLS.search(text) is not None


def visible(text: str) -> str:
    """``text`` with every control character but newline and tab shown visibly.

    A CRLF line ending becomes a plain newline first (command output often has them); a lone
    carriage return, ESC, BEL, backspace and every C1 character become stand-ins (``␍``,
    ``␛``, ``␇``, ``␈``, ``\\x9b``), so ``"\\x1b]0;title\\x07"`` reads ``␛]0;title␇``.
    Cheap when there is nothing to replace (one regex search).
    """
    if _CONTROLS.search(text) is None:
        return text
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return _CONTROLS.sub(_stand_in, text)


def one_line(text: str) -> str:
    """``text`` made :func:`visible` with newlines and tabs too (``␊``, ``␉``): for fields
    that must stay on one line, such as a path or a title."""
    if _LINE_CONTROLS.search(text) is None:
        return text
    return _LINE_CONTROLS.sub(_stand_in, text)


def json_safe(encoded: str) -> str:
    """Compact JSON text (``json.dumps(..., ensure_ascii=False)`` or pydantic's
    ``model_dump_json``) with DEL and the C1 controls escaped as ``\\u007f``..``\\u009f``.

    JSON encoders already escape C0 controls but write DEL and C1 raw, and a terminal reads
    U+009B as CSI; escaping them keeps the same JSON value and makes the line safe to print
    (docs/reliability.md T1). Other non-ASCII text stays as it is.
    """
    if _C1_OR_DEL.search(encoded) is None:
        return encoded
    return _C1_OR_DEL.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


_C1_OR_DEL = re.compile(r"[\x7f-\x9f]")


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with ``…`` when something was cut.

    ``limit`` counts the ellipsis; a ``limit`` under 1 gives ``"…"`` for any cut text.
    """
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS
