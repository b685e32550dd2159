"""Provides a reader of git patches (``git diff --binary`` output) for the review screen: which
files a patch changes, with their counts, and one file's lines as they are shown.

The patch stays the bytes it was: :func:`parse_patch` walks it once and keeps, per file, only
its place in the patch (byte offsets), its paths, modes, kind and counts, so a patch of
megabytes costs a few hundred bytes per file; :func:`file_lines` decodes and classifies the
lines of one file when it is shown, up to a bound. What git writes is read as git writes it
(``diff.c``): a ``diff --git`` line per file, extended headers (modes, ``new file``,
``deleted file``, ``rename``/``copy``, ``index``), ``---``/``+++`` with a tab after a name
holding a space, C-quoted names (``"a/\\303\\251.txt"``), hunks whose line counts say where
they end, ``\\ No newline at end of file``, and ``GIT binary patch`` data (base85, never
shown: a binary file reads "binary file changed").

Unidiff (PyPI) was weighed and left out: it does not decode git's quoted names, keeps mode
changes only as raw header text, rewrites hunk headers when it prints a file back, and builds
an object per line (about 80 MB and seconds for an 8 MiB patch).

Every text this module returns is made safe to show (docs/reliability.md T1): control
characters become visible stand-ins, tabs are expanded, and long lines are cut. Nothing here
imports Textual (only Rich's cell widths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

from rich.cells import cell_len

from server_client.text import one_line, truncate

__all__ = [
    "MAX_FILES",
    "MAX_LINE_CHARS",
    "MAX_SHOWN_LINES",
    "ChangeKind",
    "DiffLine",
    "FileLines",
    "FilePatch",
    "LineKind",
    "ParsedPatch",
    "file_lines",
    "parse_patch",
    "unquote_path",
]

#: Most files :func:`parse_patch` keeps (the rest are counted only).
MAX_FILES = 10_000
#: Most lines :func:`file_lines` returns for one file (the rest are counted only).
MAX_SHOWN_LINES = 20_000
#: Longest line :func:`file_lines` returns, in characters (a minified file has megabyte lines).
MAX_LINE_CHARS = 2_000
#: Columns of a tab in shown lines.
TAB_SIZE = 4

#: What happened to a file.
ChangeKind = Literal["added", "deleted", "modified", "renamed", "copied"]
#: What a shown line is: a header line, a hunk header, an added, removed or context line,
#: git's ``\\ No newline`` note, the stand-in for binary data, or a note of ours.
LineKind = Literal["header", "hunk", "added", "removed", "context", "no-newline", "binary", "note"]

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HUNK_TEXT = re.compile(_HUNK.pattern.decode())
_PREFIX = re.compile(rb"^[abciwo]/")
_ESCAPES = {
    ord("a"): 7,
    ord("b"): 8,
    ord("t"): 9,
    ord("n"): 10,
    ord("v"): 11,
    ord("f"): 12,
    ord("r"): 13,
    ord('"'): 34,
    ord("\\"): 92,
}


@dataclass(frozen=True, slots=True)
class FilePatch:
    """One file of a patch: where its text is and what it says.

    ``path`` is the file's name after the change (before it, for a deleted file) and
    ``old_path`` its name before (differs only for a rename or copy); ``added`` and
    ``removed`` count its lines (None for a binary file, as ``git diff --numstat`` does);
    ``old_mode``/``new_mode`` are set when the mode changed (or the file was added or
    deleted); ``start``/``end`` are the byte offsets of its text in the patch;
    ``binary_sizes`` gives, for a binary file whose data is given whole (``literal``), its
    size after and before the change (bytes; None where git sent a delta).
    """

    path: str
    old_path: str
    change: ChangeKind
    binary: bool
    added: int | None
    removed: int | None
    old_mode: str | None
    new_mode: str | None
    hunks: int
    start: int
    end: int
    binary_sizes: tuple[int | None, int | None] = (None, None)

    @property
    def mode_changed(self) -> bool:
        """True when a file that stayed changed its mode (``chmod +x``)."""
        return (
            self.old_mode is not None
            and self.new_mode is not None
            and self.old_mode != self.new_mode
        )


@dataclass(frozen=True, slots=True)
class ParsedPatch:
    """What :func:`parse_patch` found: the files (at most ``max_files``, in patch order), how
    many more the patch holds, and its size in bytes."""

    files: tuple[FilePatch, ...]
    more_files: int
    size: int

    @property
    def added(self) -> int:
        """Lines added in the kept files (binary files count 0)."""
        return sum(f.added or 0 for f in self.files)

    @property
    def removed(self) -> int:
        """Lines removed in the kept files (binary files count 0)."""
        return sum(f.removed or 0 for f in self.files)


class DiffLine(NamedTuple):
    """One shown line of a file's diff: its kind and its text, safe to show."""

    kind: LineKind
    text: str


@dataclass(frozen=True, slots=True)
class FileLines:
    """One file's diff as shown: its lines (at most the bound), the index of each hunk's
    header among them, how many lines were left out, and the widest line (terminal cells)."""

    lines: tuple[DiffLine, ...]
    hunk_starts: tuple[int, ...]
    omitted: int
    width: int


def unquote_path(name: bytes) -> bytes:
    """A path as git wrote it, unquoted: ``"a/\\303\\251 x.txt"`` → ``a/é x.txt`` (bytes).

    git C-quotes a name that holds a double quote, a backslash, a control character or (with
    the default ``core.quotePath``) a byte over 0x7f; other names are written as they are.
    """
    if len(name) < 2 or not name.startswith(b'"') or not name.endswith(b'"'):
        return name
    body = name[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        byte = body[i]
        if byte != 0x5C or i + 1 == len(body):  # not a backslash
            out.append(byte)
            i += 1
            continue
        nxt = body[i + 1]
        digits = body[i + 1 : i + 4]
        if len(digits) == 3 and all(0x30 <= d <= 0x37 for d in digits):  # \ooo
            out.append(int(digits, 8) & 0xFF)
            i += 4
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return bytes(out)


def _name(raw: bytes, *, header: bool = False) -> str | None:
    """The path of a ``---``/``+++``/``rename`` name: unquoted, its ``a/``-style prefix
    dropped (``header``: a ``---``/``+++`` name, which has one and may end in a tab), None for
    ``/dev/null``."""
    if header and raw.endswith(b"\t"):
        raw = raw[:-1]
    if raw == b"/dev/null":
        return None
    raw = unquote_path(raw)
    if header:
        raw = _PREFIX.sub(b"", raw, count=1)
    return raw.decode("utf-8", "replace")


def _git_line_names(rest: bytes) -> tuple[str, str]:
    """The two paths of ``diff --git A B`` (``rest`` is ``A B``), prefixes dropped.

    Quoted names end at their closing quote. Unquoted ones may hold spaces; without renames
    both halves name the same file, so the line splits in its middle (else at `` b/``)."""
    if rest.startswith(b'"'):
        end = _closing_quote(rest)
        first, second = rest[: end + 1], rest[end + 2 :]
    elif rest.endswith(b'"'):
        start = rest.rfind(b' "')
        first, second = rest[:start], rest[start + 1 :]
    else:
        half = (len(rest) - 1) // 2
        if (
            len(rest) % 2 == 1
            and rest[half : half + 1] == b" "
            and (_PREFIX.sub(b"", rest[:half]) == _PREFIX.sub(b"", rest[half + 1 :]))
        ):
            first, second = rest[:half], rest[half + 1 :]
        else:
            cut = rest.find(b" b/")
            first, second = (rest[:cut], rest[cut + 1 :]) if cut > 0 else (rest, rest)
    old = _PREFIX.sub(b"", unquote_path(first), count=1).decode("utf-8", "replace")
    new = _PREFIX.sub(b"", unquote_path(second), count=1).decode("utf-8", "replace")
    return old, new


def _closing_quote(text: bytes) -> int:
    """The index of the quote that closes the quoted name ``text`` starts with."""
    i = 1
    while i < len(text):
        if text[i] == 0x5C:
            i += 2
            continue
        if text[i] == 0x22:
            return i
        i += 1
    return len(text) - 1


class _File:
    """A file being read by :func:`parse_patch`."""

    __slots__ = (
        "added",
        "binary",
        "binary_sizes",
        "change",
        "end",
        "hunks",
        "in_binary",
        "new_mode",
        "new_path",
        "old_mode",
        "old_path",
        "removed",
        "start",
    )

    def __init__(self, start: int, rest: bytes) -> None:
        self.start = start
        self.end = start
        self.old_path, self.new_path = _git_line_names(rest)
        self.change: ChangeKind = "modified"
        self.binary = False
        self.in_binary = False
        self.binary_sizes: list[int | None] = []
        self.added = 0
        self.removed = 0
        self.hunks = 0
        self.old_mode: str | None = None
        self.new_mode: str | None = None

    def header(self, line: bytes) -> None:
        """Read one extended header line (anything else outside a hunk is ignored)."""
        if line.startswith(b"--- "):
            name = _name(line[4:], header=True)
            if name is not None:
                self.old_path = name
        elif line.startswith(b"+++ "):
            name = _name(line[4:], header=True)
            if name is not None:
                self.new_path = name
        elif line.startswith(b"new file mode "):
            self.change = "added"
            self.new_mode = line[14:].decode("ascii", "replace").strip()
        elif line.startswith(b"deleted file mode "):
            self.change = "deleted"
            self.old_mode = line[18:].decode("ascii", "replace").strip()
        elif line.startswith(b"old mode "):
            self.old_mode = line[9:].decode("ascii", "replace").strip()
        elif line.startswith(b"new mode "):
            self.new_mode = line[9:].decode("ascii", "replace").strip()
        elif line.startswith((b"rename from ", b"copy from ")):
            self.change = "renamed" if line.startswith(b"rename") else "copied"
            self.old_path = _name(line.split(b" ", 2)[2]) or self.old_path
        elif line.startswith((b"rename to ", b"copy to ")):
            self.new_path = _name(line.split(b" ", 2)[2]) or self.new_path
        elif line == b"GIT binary patch":
            self.binary = True
            self.in_binary = True
        elif line.startswith(b"Binary files ") and line.endswith(b" differ"):
            self.binary = True

    def binary_line(self, line: bytes) -> None:
        """Read a line of ``GIT binary patch`` data: only the block sizes matter."""
        if line.startswith(b"literal "):
            self.binary_sizes.append(int(line[8:]) if line[8:].isdigit() else None)
        elif line.startswith(b"delta "):
            self.binary_sizes.append(None)

    def done(self, end: int) -> FilePatch:
        sizes = (self.binary_sizes + [None, None])[:2]
        return FilePatch(
            path=self.old_path if self.change == "deleted" else self.new_path,
            old_path=self.old_path,
            change=self.change,
            binary=self.binary,
            added=None if self.binary else self.added,
            removed=None if self.binary else self.removed,
            old_mode=self.old_mode,
            new_mode=self.new_mode,
            hunks=self.hunks,
            start=self.start,
            end=end,
            binary_sizes=(sizes[0], sizes[1]),
        )


def parse_patch(patch: bytes, *, max_files: int = MAX_FILES) -> ParsedPatch:
    """The files ``patch`` changes, in its order, each with its counts and place.

    Lines before the first ``diff --git`` (a commit message, say) are skipped. A file's hunk
    ends when its header's line counts are used up, so a removed line that reads
    ``diff --git`` is never taken for a new file. Linear in the patch's size; run it off the
    event loop for a large patch.
    """
    files: list[FilePatch] = []
    more = 0
    current: _File | None = None
    old_left = new_left = 0
    offset = 0
    for line in patch.split(b"\n"):
        start = offset
        offset += len(line) + 1
        if current is not None and (old_left > 0 or new_left > 0):
            first = line[:1]
            if first == b"+":
                new_left -= 1
                current.added += 1
                continue
            if first == b"-":
                old_left -= 1
                current.removed += 1
                continue
            if first in (b" ", b""):  # an empty line: a context line whose space was lost
                old_left -= 1
                new_left -= 1
                continue
            if first == b"\\":
                continue
            old_left = new_left = 0  # a short hunk: read the line as a header
        if line.startswith(b"diff --git "):
            if current is not None:
                if len(files) < max_files:
                    files.append(current.done(start))
                else:
                    more += 1
            current = _File(start, line[11:])
            continue
        if current is None:
            continue
        if current.in_binary:
            current.binary_line(line)
            continue
        match = _HUNK.match(line)
        if match is not None:
            current.hunks += 1
            old_left = 1 if match.group(2) is None else int(match.group(2))
            new_left = 1 if match.group(4) is None else int(match.group(4))
            continue
        if line.startswith(b"\\"):
            continue
        current.header(line)
    if current is not None:
        if len(files) < max_files:
            files.append(current.done(len(patch)))
        else:
            more += 1
    return ParsedPatch(files=tuple(files), more_files=more, size=len(patch))


def _shown(text: str, max_chars: int) -> str:
    return one_line(truncate(text[: max_chars * 2].expandtabs(TAB_SIZE), max_chars))


def _binary_note(file: FilePatch) -> str:
    after, before = file.binary_sizes
    if file.change == "added":
        what = "binary file added"
        sizes = f" ({after:,} bytes)" if after is not None else ""
    elif file.change == "deleted":
        what = "binary file deleted"
        sizes = f" ({before:,} bytes)" if before is not None else ""
    else:
        what = "binary file changed"
        sizes = (
            f" ({before:,} → {after:,} bytes)" if after is not None and before is not None else ""
        )
    return what + sizes


def file_lines(
    patch: bytes,
    file: FilePatch,
    *,
    max_lines: int = MAX_SHOWN_LINES,
    max_chars: int = MAX_LINE_CHARS,
) -> FileLines:
    """``file``'s part of ``patch`` as lines to show, each with its kind.

    Binary data is never shown: the header lines stay and one ``binary`` line says what
    changed ("binary file changed (6 → 10 bytes)"). At most ``max_lines`` lines are
    returned (``omitted`` counts the rest) and each is cut to ``max_chars`` characters.
    Cost grows with the lines returned, not with the file's size.
    """
    text = patch[file.start : file.end].decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-1]
    parts = text.split("\n", max_lines)
    omitted = 0
    if len(parts) > max_lines:
        omitted = parts.pop().count("\n") + 1
    lines: list[DiffLine] = []
    hunks: list[int] = []
    old_left = new_left = 0
    for raw in parts:
        if old_left > 0 or new_left > 0:
            first = raw[:1]
            kind: LineKind | None = None
            if first == "+":
                new_left -= 1
                kind = "added"
            elif first == "-":
                old_left -= 1
                kind = "removed"
            elif first in (" ", ""):
                old_left -= 1
                new_left -= 1
                kind = "context"
            elif first == "\\":
                kind = "no-newline"
            if kind is not None:
                lines.append(DiffLine(kind, _shown(raw, max_chars)))
                continue
            old_left = new_left = 0
        match = _HUNK_TEXT.match(raw)
        if match is not None:
            old_left = 1 if match.group(2) is None else int(match.group(2))
            new_left = 1 if match.group(4) is None else int(match.group(4))
            hunks.append(len(lines))
            lines.append(DiffLine("hunk", _shown(raw, max_chars)))
        elif raw.startswith("\\"):
            lines.append(DiffLine("no-newline", _shown(raw, max_chars)))
        elif raw == "GIT binary patch" or (raw.startswith("Binary files ") and file.binary):
            lines.append(DiffLine("binary", _binary_note(file)))
            if raw == "GIT binary patch":
                omitted = 0  # the base85 data that follows is replaced, not left out
                break
        else:
            lines.append(DiffLine("header", _shown(raw, max_chars)))
    if omitted:
        lines.append(DiffLine("note", f"… {omitted:,} more lines not shown"))
    return FileLines(
        lines=tuple(lines),
        hunk_starts=tuple(hunks),
        omitted=omitted,
        width=max((cell_len(line.text) for line in lines), default=0),
    )
