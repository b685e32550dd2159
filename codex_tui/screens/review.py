"""Provides ReviewScreen: what a task changed in its workspace, file by file and hunk by hunk,
with the patch to export or to commit onto a new branch; and DiffView, which shows one file's
diff, and AskModal, which asks for one line of text."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

import httpx
from rich.segment import Segment
from rich.style import Style
from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from codex_tui.events.palette import Palette
from codex_tui.events.patch import (
    MAX_FILES,
    DiffLine,
    FileLines,
    FilePatch,
    LineKind,
    file_lines,
    parse_patch,
)
from codex_tui.events.view import shown_line
from codex_tui.failures import REQUEST_ERRORS, describe_action_failure
from codex_tui.widgets.keys_footer import KeysFooter
from codex_tui.widgets.task_list import format_age, short_prompt
from server_client.client import ApiError, CodexTuiClient, NotFoundError
from server_client.clock import utcnow
from server_client.enums import TaskStatus
from server_client.models import FileChange, Task, TaskDiff

__all__ = ["AskModal", "DiffView", "ReviewScreen", "local_repository"]

#: A file's section of the patch up to this size (bytes) is read on the event loop; a larger
#: one in a thread.
INLINE_FILE_BYTES = 256 * 1024
#: Seconds between two looks at a live task (is there a newer diff?).
POLL_INTERVAL_S = 1.5
#: Seconds between two redraws of the header's "computed … ago".
HEADER_TICK_S = 5.0

#: What the file list shows for each kind of change: letter and theme variable.
_MARKERS: dict[str, tuple[str, str]] = {
    "added": ("A", "$success"),
    "deleted": ("D", "$error"),
    "modified": ("M", "$accent"),
    "renamed": ("R", "$primary"),
    "copied": ("C", "$primary"),
}
#: The statuses under which a task's workspace is changing (its diff is live).
_LIVE = frozenset({TaskStatus.RUNNING, TaskStatus.WAITING})


def local_repository(repo: str | None, cwd: Path | None = None) -> Path:
    """Where to make a task's branch: its ``repo`` when that is an absolute path of a folder
    on this machine, else ``cwd`` (default: the current directory). Touches the disk: call it
    off the event loop."""
    if repo and os.path.isabs(repo) and os.path.isdir(repo):
        return Path(repo)
    return cwd if cwd is not None else Path.cwd()


def _counts(added: int | None, removed: int | None) -> str:
    if added is None or removed is None:
        return "binary"
    return f"+{added} −{removed}"


def _file_prompt(file: FilePatch | FileChange) -> Content:
    """Two lines of the file list: kind letter and name, then counts and folder (assembled,
    not parsed from markup: a patch can list thousands of files)."""
    if isinstance(file, FilePatch):
        letter, variable = _MARKERS[file.change]
        if file.binary:
            counts = "binary"
        elif (
            file.old_mode
            and file.new_mode
            and file.mode_changed
            and not (file.added or file.removed)
        ):
            counts = f"mode {file.old_mode[-3:]} → {file.new_mode[-3:]}"
        else:
            counts = _counts(file.added, file.removed)
    else:
        letter, variable = ("·", "$foreground-muted")
        counts = _counts(file.added, file.removed)
    folder, _, name = file.path.rpartition("/")
    detail = f"{counts} · {folder}" if folder else counts
    return Content.assemble(
        (letter, variable),
        " ",
        (shown_line(name, 200), "bold"),
        "\n",
        (f"  {shown_line(detail, 200)}", "$foreground-muted"),
    )


@dataclass(frozen=True)
class _Prepared:
    """A diff made ready to show, off the event loop: its files and their list options."""

    entries: list[FilePatch | FileChange]
    options: list[Option]
    more: int


def _prepare(diff: TaskDiff, patch: bytes | None) -> _Prepared:
    """Parse ``patch`` (else take ``diff``'s counts) and build the file list's options: a
    patch of thousands of files costs a second or more, so this runs in a thread."""
    entries: list[FilePatch | FileChange]
    if patch is not None:
        parsed = parse_patch(patch)
        entries, more = list(parsed.files), parsed.more_files
    else:
        entries = list(diff.files[:MAX_FILES])
        more = len(diff.files) - len(entries)
    options = [Option(_file_prompt(entry)) for entry in entries]
    if more > 0:
        options.append(
            Option(f"… {more:,} more files (export the patch to see them)", disabled=True)
        )
    return _Prepared(entries, options, more)


#: Line kinds whose text is a ``+``/``-``/`` `` marker and a line of the file's code.
_CODE_KINDS: frozenset[LineKind] = frozenset({"added", "removed", "context"})


class DiffView(ScrollView, can_focus=True):
    """One file's diff, drawn a line at a time (only what is on screen is rendered), coloured
    by line kind from the app's theme: added and removed lines, hunk headers (the current
    hunk's stands out), file headers, notes. Scrolls with the arrow, page, home and end keys,
    sideways too."""

    DEFAULT_CSS = """
    DiffView {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
    }
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's naming
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lines: tuple[DiffLine, ...] = ()
        self._hunk_starts: tuple[int, ...] = ()
        self._current: int | None = None
        self._styles: dict[LineKind, Style] = {}
        self._tints: dict[LineKind, Style] = {}
        #: Highlights the code of the shown file's lines (None: no lexer for its name).
        self._syntax: Syntax | None = None
        #: Highlighted lines by index, made as they are first drawn (at most the shown lines).
        self._highlighted: dict[int, list[Segment]] = {}

    def on_mount(self) -> None:
        """Take the colours from the theme, now and when it changes."""
        self._theme_changed()
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    @property
    def lines(self) -> tuple[DiffLine, ...]:
        """The lines shown."""
        return self._lines

    @property
    def hunk_starts(self) -> tuple[int, ...]:
        """The index of each hunk's header among :attr:`lines`."""
        return self._hunk_starts

    @property
    def current_hunk(self) -> int | None:
        """The line of the hunk header marked current, if any."""
        return self._current

    def show(self, shown: FileLines, *, keep_scroll: bool = False, path: str | None = None) -> None:
        """Show ``shown`` from its top (``keep_scroll``: where the view was, as far as the
        new lines reach). The code of its lines is highlighted in the language ``path``'s
        name says (Pygments' lexer for it; none for an unknown name)."""
        self._lines = shown.lines
        self._hunk_starts = shown.hunk_starts
        self._current = None
        self._syntax = self._syntax_for(path)
        self._highlighted = {}
        self.virtual_size = Size(shown.width, len(shown.lines))
        if not keep_scroll:
            self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    def clear(self) -> None:
        """Show nothing."""
        self.show(FileLines(lines=(), hunk_starts=(), omitted=0, width=0))

    def go_to_hunk(self, line: int) -> None:
        """Mark the hunk whose header is ``line`` current and scroll it to the top."""
        self._current = line
        self.scroll_to(y=line, animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """One line of the view (Textual's line API)."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not 0 <= index < len(self._lines):
            return Strip.blank(width, base)
        line = self._lines[index]
        if self._syntax is not None and line.kind in _CODE_KINDS and line.text:
            segments = self._highlighted.get(index)
            if segments is None:
                segments = self._highlighted[index] = self._highlight(line)
            return Strip(segments).crop_extend(scroll_x, scroll_x + width, base)
        style = base + self._styles.get(line.kind, Style())
        if index == self._current:
            style += Style(reverse=True)
        strip = Strip([Segment(line.text, style)])
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _syntax_for(self, path: str | None) -> Syntax | None:
        """A highlighter for the language of ``path``'s name (Pygments' lexer for it, through
        Rich), in a theme for the app's (light or dark); None for plain text or a name no
        lexer claims."""
        if not path:
            return None
        lexer = Syntax.guess_lexer(os.path.basename(path))
        if lexer in ("default", "text"):
            return None
        return Syntax("", lexer, theme="monokai" if self.app.current_theme.dark else "friendly")

    def _highlight(self, line: DiffLine) -> list[Segment]:
        """``line`` drawn with its code highlighted (one line at a time, so a construct that
        spans lines may colour less than in an editor) on its kind's tint; the ``+``/``-``
        marker keeps its kind's colour."""
        assert self._syntax is not None
        base = self.rich_style + self._tints.get(line.kind, Style())
        marker, code = line.text[:1], line.text[1:]
        text = self._syntax.highlight(code)
        text.rstrip_end(len(code))
        segments = [Segment(marker, base + self._styles.get(line.kind, Style()))]
        for segment in text.render(self.app.console):
            if segment.text in ("\n", ""):
                continue
            token = segment.style or Style()
            # The token's colour and emphasis only: the syntax theme's background would hide
            # the line's tint.
            style = Style(color=token.color, bold=token.bold, italic=token.italic)
            segments.append(Segment(segment.text, base + style))
        return segments

    def _theme_changed(self, _theme: object = None) -> None:
        palette = Palette.from_theme_variables(self.app.theme_variables)
        self._styles = {
            "added": Style.parse(palette.success),
            "removed": Style.parse(palette.error),
            "hunk": Style.parse(palette.accent),
            "header": Style(bold=True),
            "no-newline": Style.parse(palette.muted),
            "note": Style.parse(palette.muted) + Style(italic=True),
            "binary": Style.parse(palette.warning) + Style(bold=True),
        }
        surface = Color.parse(self.app.theme_variables.get("surface", "#000000"))
        tinted: tuple[tuple[LineKind, str], ...] = (
            ("added", palette.success),
            ("removed", palette.error),
        )
        self._tints = {
            kind: Style(bgcolor=surface.blend(Color.parse(colour), 0.22).rich_color)
            for kind, colour in tinted
            if colour.startswith("#")
        }
        self._highlighted = {}
        if self._syntax is not None and self._syntax.lexer is not None:
            self._syntax = Syntax(
                "",
                self._syntax.lexer,
                theme="monokai" if self.app.current_theme.dark else "friendly",
            )
        self.refresh()


class AskModal(ModalScreen[str | None]):
    """Asks for one line of text: dismisses with it (Enter), or None (Escape).

    Args:
        title: What is asked.
        default: The text offered.
        hint: A line under the field (the keys, what happens).
        check: Returns why a value is refused (shown under the field), or None to accept it.
    """

    BINDING_GROUP_TITLE = "Review questions"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_modal", "Cancel", id="ask-cancel"),
    ]

    DEFAULT_CSS = """
    AskModal {
        align: center middle;
        background: $background 60%;
    }
    AskModal > #ask-dialog {
        width: 72;
        max-width: 95%;
        height: auto;
        border: thick $primary;
        background: $panel;
        padding: 1 2;
    }
    AskModal #ask-hint {
        color: $foreground-muted;
        margin-top: 1;
    }
    AskModal #ask-error {
        color: $error;
        display: none;
    }
    AskModal.-error #ask-error {
        display: block;
    }
    """

    def __init__(
        self,
        title: str,
        default: str,
        hint: str,
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.default = default
        self.hint = hint
        self.check = check
        self.error: str | None = None
        """Why the last value was refused, if it was."""

    def compose(self) -> ComposeResult:
        with Vertical(id="ask-dialog"):
            yield Static(Content(self.title_text), id="ask-title")
            yield Input(self.default, id="ask-input")
            yield Static(id="ask-error")
            yield Static(Content(self.hint), id="ask-hint")

    def on_mount(self) -> None:
        """Put the cursor in the field."""
        self.query_one("#ask-input", Input).focus()

    def action_dismiss_modal(self) -> None:
        """Cancel."""
        self.dismiss(None)

    @on(Input.Submitted, "#ask-input")
    def _submit(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        error = "Enter a value." if not value else self.check(value) if self.check else None
        if error is not None:
            self.error = error
            self.query_one("#ask-error", Static).update(Content(error))
            self.add_class("-error")
            return
        self.dismiss(value)


def _check_export_path(text: str) -> str | None:
    path = _absolute(text)
    if path.is_dir():
        return f"{path} is a folder; enter a file name."
    if not path.parent.is_dir():
        return f"The folder {path.parent} does not exist."
    return None


def _check_branch(text: str) -> str | None:
    if any(char.isspace() for char in text) or text.startswith("-"):
        return "A branch name has no spaces and does not start with '-'."
    return None


def _absolute(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


class ReviewScreen(Screen[None]):
    """What a task changed: a header, the changed files and one file's diff at a time.

    The header names the task, its base commit, how many files and lines changed, when the
    worker computed the diff, ``● live`` while a turn runs, and says when the patch was too
    large for the server to keep (then only the counts are listed). The file list gives each
    file's kind (A, D, M), name, counts (``binary``; a mode change) and folder; the diff view
    shows the highlighted file, binary data as "binary file changed".

    Keys: ``]``/``[`` next and previous file, ``n``/``p`` next and previous hunk (past a
    file's last hunk, the next file's first), the arrow and page keys scroll, ``tab`` moves
    between the list and the diff, ``m`` hides the list for a wider diff, ``e`` writes the
    patch to a file (its exact bytes), ``b`` commits it onto a new branch (the task's
    repository when it is a folder here, else the current directory's, through
    :func:`server_client.workspaces.commit_patch`, in a worker), ``r`` fetches the diff
    again, ``escape`` or ``f`` goes back.

    The diff and the patch are fetched (``client.get_diff``, ``client.get_patch``) in a worker
    of the exclusive group ``review-load``, the patch parsed in a thread; while the task is
    not over, a worker looks at it every ``poll_interval_s`` and fetches the diff again when
    its ``diff_updated_at`` moves, keeping the file shown and, for that file, the scroll.

    Args:
        client: The SDK client.
        task: The task to review.
        diff: Its diff, when the caller has it (tests): shown without a first fetch.
        patch: Its patch with ``diff`` (None: the patch was too large to keep).
        clock: Returns the current UTC time (the header's "computed … ago").
        poll_interval_s: Seconds between looks at a live task.
        cwd: Where a branch is made when the task's repository is not a folder here, and the
            folder of the export's default file (default: the current directory).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "next_file", "Next file", id="review-next-file"),
        Binding(
            "left_square_bracket",
            "previous_file",
            "Previous file",
            show=False,
            id="review-previous-file",
        ),
        Binding("n", "next_hunk", "Next hunk", id="review-next-hunk"),
        Binding("p", "previous_hunk", "Previous hunk", show=False, id="review-previous-hunk"),
        Binding("e", "export_patch", "Export", id="export-patch"),
        Binding("b", "make_branch", "Branch", id="make-branch"),
        Binding("r", "refresh", "Refresh", show=False, id="review-refresh"),
        Binding("m", "toggle_files", "Hide files", show=False, id="review-toggle-files"),
        Binding("escape,f", "back", "Back", id="review-back"),
    ]

    AUTO_FOCUS = "#review-diff"

    DEFAULT_CSS = """
    ReviewScreen {
        layout: vertical;
    }
    ReviewScreen > #review-header {
        height: auto;
        max-height: 3;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ReviewScreen > #review-message {
        display: none;
        height: 1fr;
        padding: 1 2;
        border: round $border;
        color: $foreground-muted;
    }
    ReviewScreen.-message > #review-message {
        display: block;
    }
    ReviewScreen.-message > #review-body {
        display: none;
    }
    ReviewScreen #review-body {
        height: 1fr;
    }
    ReviewScreen #review-files {
        width: 30%;
        min-width: 20;
        max-width: 40;
        height: 1fr;
        border: round $border;
        border-title-color: $primary;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        scrollbar-size-vertical: 1;
    }
    ReviewScreen #review-files:focus {
        border: round $primary;
    }
    ReviewScreen.-wide #review-files {
        display: none;
    }
    ReviewScreen #review-diff {
        width: 1fr;
        border: round $border;
        border-title-color: $primary;
        border-subtitle-color: $foreground-muted;
    }
    ReviewScreen #review-diff:focus {
        border: round $primary;
    }
    """

    def __init__(
        self,
        client: CodexTuiClient,
        task: Task,
        *,
        diff: TaskDiff | None = None,
        patch: bytes | None = None,
        clock: Callable[[], datetime] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        cwd: Path | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.review_task = task
        """The task reviewed, as last fetched."""
        self.clock: Callable[[], datetime] = clock or utcnow
        self.poll_interval_s = poll_interval_s
        self.cwd = cwd
        self._given = (diff, patch) if diff is not None else None
        self._diff: TaskDiff | None = None
        self._patch: bytes | None = None
        self._entries: list[FilePatch | FileChange] = []
        self._selected: int | None = None
        self._hunk: int | None = None
        self._hunk_y: float | None = None
        self._then: Literal["first", "last"] | None = None
        self._message: str | None = None
        self._outcome: str | None = None
        self._loads = 0
        self._header_key: tuple[str, tuple[tuple[str, str], ...]] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="review-header")
        yield Static(id="review-message")
        with Horizontal(id="review-body"):
            files = OptionList(id="review-files")
            files.border_title = "Files"
            yield files
            yield DiffView(id="review-diff")
        # Without the palette's hint (ctrl+p still opens it, and ? lists every key): at 80
        # columns it cut the last key, q Quit, to "q Q".
        yield KeysFooter(show_command_palette=False)

    def on_mount(self) -> None:
        """Show what was given, or fetch it; watch a live task; tick the header's age."""
        self._show_header()
        if self._given is not None:
            diff, patch = self._given
            self._given = None
            self.run_worker(self._take(diff, patch), group="review-load", exclusive=True)
        elif self.review_task.repo is None:
            self._show_message(
                "This task has no repository, so there is nothing to review: it ran in its "
                "workdir and changed it in place.\n\nGive a task a repository (n, then Repo) "
                "and it runs in a checkout of its own, whose diff shows here."
            )
        else:
            self._show_message("Loading the diff…")
            self.action_refresh()
        if not self.review_task.status.is_terminal:
            self.run_worker(self._watch(), group="review-watch", exclusive=True)
        self.set_interval(HEADER_TICK_S, self._show_header)

    # -- public API -------------------------------------------------------------------------

    @property
    def diff(self) -> TaskDiff | None:
        """The diff shown, if any."""
        return self._diff

    @property
    def patch(self) -> bytes | None:
        """The patch shown (None: none yet, or too large to keep)."""
        return self._patch

    @property
    def files(self) -> list[FilePatch | FileChange]:
        """The files listed, in order (from the patch; from the counts when it was too
        large)."""
        return list(self._entries)

    @property
    def selected_path(self) -> str | None:
        """The path of the file shown, if any."""
        if self._selected is None or self._selected >= len(self._entries):
            return None
        return self._entries[self._selected].path

    @property
    def diff_view(self) -> DiffView:
        """The view of the shown file's diff."""
        return self.query_one("#review-diff", DiffView)

    @property
    def file_list(self) -> OptionList:
        """The list of changed files."""
        return self.query_one("#review-files", OptionList)

    @property
    def message(self) -> str | None:
        """What shows instead of a diff (none yet, no repository, loading, an error)."""
        return self._message

    @property
    def outcome(self) -> str | None:
        """What the last export or branch did, as it was told."""
        return self._outcome

    @property
    def loads(self) -> int:
        """How many diffs have been shown (each fetch that succeeded counts)."""
        return self._loads

    @property
    def live(self) -> bool:
        """True while the task runs a turn: its workspace may still change."""
        return self.review_task.status in _LIVE and not (
            self._diff is not None and self._diff.final
        )

    # -- actions ----------------------------------------------------------------------------

    def action_next_file(self) -> None:
        """Show the next file."""
        self._select_file(1)

    def action_previous_file(self) -> None:
        """Show the previous file."""
        self._select_file(-1)

    def action_next_hunk(self) -> None:
        """Scroll the next hunk to the top (past the file's last, the next file's first)."""
        view = self.diff_view
        starts = view.hunk_starts
        if self._hunk is not None and view.scroll_y == self._hunk_y:
            target = self._hunk + 1
        else:
            target = next((i for i, line in enumerate(starts) if line > view.scroll_y), len(starts))
        if target < len(starts):
            self._go_to_hunk(target)
        elif not self._select_file(1, then="first"):
            self.notify("That was the last hunk.", timeout=2)

    def action_previous_hunk(self) -> None:
        """Scroll the previous hunk to the top (before the file's first, the previous file's
        last)."""
        view = self.diff_view
        starts = view.hunk_starts
        if self._hunk is not None and view.scroll_y == self._hunk_y:
            target = self._hunk - 1
        else:
            before = [i for i, line in enumerate(starts) if line < view.scroll_y]
            target = before[-1] if before else -1
        if target >= 0:
            self._go_to_hunk(target)
        elif not self._select_file(-1, then="last"):
            self.notify("That was the first hunk.", timeout=2)

    def action_toggle_files(self) -> None:
        """Hide the file list (the diff takes the width), or show it again."""
        self.toggle_class("-wide")
        if self.has_class("-wide"):
            self.diff_view.focus()

    def action_refresh(self) -> None:
        """Fetch the diff and the patch again."""
        if self.review_task.repo is None:
            return
        self.run_worker(self._load(), group="review-load", exclusive=True, exit_on_error=False)

    def action_back(self) -> None:
        """Back to the dashboard."""
        self.dismiss(None)

    def action_export_patch(self) -> None:
        """Ask for a file (``./<task id>.patch``), then write the patch's exact bytes to it."""
        patch = self._patch_or_say_why()
        if patch is None:
            return
        folder = self.cwd if self.cwd is not None else Path.cwd()

        def chosen(text: str | None) -> None:
            if text is not None:
                self.run_worker(
                    self._export(_absolute(text), patch), group="review-export", exit_on_error=False
                )

        self.app.push_screen(
            AskModal(
                "Export the patch to",
                str(folder / f"{self.review_task.id}.patch"),
                "enter writes it (git apply takes it) · esc cancels",
                _check_export_path,
            ),
            chosen,
        )

    def action_make_branch(self) -> None:
        """Ask for a branch name (``codex/<task id>``), then commit the patch onto a new branch
        of the task's repository (or the current directory's), leaving its working tree as it
        is."""
        if self._patch_or_say_why() is None:
            return
        self.run_worker(self._ask_branch(), group="review-branch", exit_on_error=False)

    # -- internals: loading -----------------------------------------------------------------

    async def _load(self) -> None:
        """Fetch the task, its diff and its patch; show them, or why there are none."""
        try:
            self.review_task = await self.client.get_task(self.review_task.id)
            diff = await self.client.get_diff(self.review_task.id)
        except NotFoundError:
            self._show_header()
            self._show_message(self._no_diff_yet())
            return
        except REQUEST_ERRORS as error:
            self._load_failed(error)
            return
        patch: bytes | None = None
        if not diff.truncated:
            try:
                patch = await self.client.get_patch(self.review_task.id)
            except ApiError as error:
                if error.status != 409:
                    self._load_failed(error)
                    return
            except REQUEST_ERRORS as error:
                self._load_failed(error)
                return
        await self._take(diff, patch)

    async def _take(self, diff: TaskDiff, patch: bytes | None) -> None:
        """Show ``diff`` and ``patch`` (parsed in a thread), keeping the file shown."""
        prepared = await asyncio.to_thread(_prepare, diff, patch)
        keep = self.selected_path
        self._diff, self._patch = diff, patch
        self._loads += 1
        entries = self._entries = prepared.entries
        self._show_header()
        if not entries:
            self._show_message(
                "No changes: the workspace is as it was at its base commit."
                + (" This screen updates while the task runs." if self.live else "")
            )
            return
        self._show_message(None)
        options, more = prepared.options, prepared.more
        files = self.file_list
        files.set_options(options)
        files.border_subtitle = f"{len(entries) + more:,}"
        paths = [entry.path for entry in entries]
        index = paths.index(keep) if keep is not None and keep in paths else 0
        same = keep is not None and index < len(paths) and paths[index] == keep
        self._selected = index  # the highlight below must not show it a second time
        files.highlighted = index
        self._show_file(index, keep_scroll=same)

    def _no_diff_yet(self) -> str:
        text = (
            "No diff reported yet: the worker sends one after each turn, and every few "
            "seconds while codex changes files."
        )
        if not self.review_task.status.is_terminal:
            return text + " This screen shows it as soon as it comes."
        return text + " Press r to look again."

    def _load_failed(self, error: Exception) -> None:
        if isinstance(error, ApiError | httpx.HTTPError):
            why = describe_action_failure(error)
        else:
            why = f"Unexpected answer from the server: {error}"
        if self._diff is None:
            self._show_message(f"{why}\n\nPress r to try again.")
        else:
            self.notify(why, title="Refresh failed", severity="error", markup=False)

    async def _watch(self) -> None:
        """While the task is not over, look at it and fetch the diff when it moved."""
        asked = self.review_task.diff_updated_at  # what the first load shows
        was_terminal = self.review_task.status.is_terminal
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                task = await self.client.get_task(self.review_task.id)
            except REQUEST_ERRORS:
                continue  # the dashboard says when the server is away; look again later
            self.review_task = task
            self._show_header()
            moved = task.diff_updated_at is not None and task.diff_updated_at != asked
            ended = task.status.is_terminal and not was_terminal
            if task.repo is not None and (moved or ended):
                asked = task.diff_updated_at
                self.action_refresh()
            if task.status.is_terminal:
                return

    # -- internals: showing -----------------------------------------------------------------

    def _show_header(self) -> None:
        task = self.review_task
        diff = self._diff
        head = "[b]Review[/b] $task"
        values = {"task": task.id}
        if diff is not None:
            head += " · base $base · $files $word [$success]+$added[/] [$error]−$removed[/]"
            head += " · computed $age ago"
            values |= {
                "base": diff.base_commit[:7],
                "files": f"{len(diff.files):,}",
                "word": "file" if len(diff.files) == 1 else "files",
                "added": f"{diff.added:,}",
                "removed": f"{diff.removed:,}",
                "age": format_age(diff.updated_at, self.clock()),
            }
        if self.live:
            head += " · [$accent]● live[/]"
        where = task.repo or task.workdir or ""
        second = "[$foreground-muted]$where[/]"
        values["where"] = shown_line(
            f"{where} @ {task.ref}" if task.ref else f"{where} · {short_prompt(task.prompt, 80)}",
            300,
        )
        if diff is not None and diff.truncated:
            second = (
                "[$warning]The diff was too large for the server to keep ($size): only its "
                "counts are here.[/]"
            )
            values["size"] = f"{diff.patch_bytes / 1_048_576:.1f} MB"
        key = (f"{head}\n{second}", tuple(sorted(values.items())))
        if key != self._header_key:  # a poll that changed nothing repaints nothing
            self._header_key = key
            self.query_one("#review-header", Static).update(Content.from_markup(key[0], **values))

    def _show_message(self, message: str | None) -> None:
        self._message = message
        if message is not None:
            self.query_one("#review-message", Static).update(Content(message))
        self.set_class(message is not None, "-message")

    def _select_file(self, step: int, then: Literal["first", "last"] | None = None) -> bool:
        """Highlight the file ``step`` away; False when there is none."""
        if self._selected is None:
            return False
        index = self._selected + step
        if not 0 <= index < len(self._entries):
            return False
        self._then = then
        self._show_file(index)  # now, so that the next key acts on this file
        self.file_list.highlighted = index  # its message finds the file shown already
        return True

    @on(OptionList.OptionHighlighted, "#review-files")
    def _file_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        index = event.option_index
        if index != self._selected and index < len(self._entries):
            self._show_file(index)

    def _show_file(self, index: int, *, keep_scroll: bool = False) -> None:
        """Show the ``index``-th file's diff (read in a worker's thread when it is large)."""
        self._selected = index
        self._hunk = self._hunk_y = None
        then, self._then = self._then, None
        entry = self._entries[index]
        view = self.diff_view
        view.border_title = shown_line(entry.path, 300)
        patch = self._patch
        if not isinstance(entry, FilePatch) or patch is None:
            view.border_subtitle = _counts(entry.added, entry.removed)
            view.show(
                FileLines(
                    lines=(
                        DiffLine("note", "The patch was too large to keep: only the counts are"),
                        DiffLine("note", "here. The whole diff is in the task's workspace."),
                    ),
                    hunk_starts=(),
                    omitted=0,
                    width=55,
                )
            )
            return
        if entry.end - entry.start > INLINE_FILE_BYTES:
            view.border_subtitle = "reading…"
            self.run_worker(
                self._read_file(index, patch, entry, then, keep_scroll),
                group="review-file",
                exclusive=True,
            )
        else:
            self._display(file_lines(patch, entry), then, keep_scroll)

    async def _read_file(
        self,
        index: int,
        patch: bytes,
        entry: FilePatch,
        then: Literal["first", "last"] | None,
        keep_scroll: bool,
    ) -> None:
        shown = await asyncio.to_thread(file_lines, patch, entry)
        if self._selected == index and self._patch is patch:  # still the file to show
            self._display(shown, then, keep_scroll)

    def _display(
        self, shown: FileLines, then: Literal["first", "last"] | None, keep_scroll: bool
    ) -> None:
        view = self.diff_view
        view.border_subtitle = _hunk_word(len(shown.hunk_starts))
        view.show(shown, keep_scroll=keep_scroll, path=self.selected_path)
        if then == "first" and shown.hunk_starts:
            self._go_to_hunk(0)
        elif then == "last" and shown.hunk_starts:
            self._go_to_hunk(len(shown.hunk_starts) - 1)

    def _go_to_hunk(self, index: int) -> None:
        view = self.diff_view
        view.go_to_hunk(view.hunk_starts[index])
        self._hunk = index
        self._hunk_y = view.scroll_y
        view.border_subtitle = f"hunk {index + 1} of {len(view.hunk_starts)}"

    # -- internals: export and branch -------------------------------------------------------

    def _patch_or_say_why(self) -> bytes | None:
        if self._patch is not None:
            return self._patch
        if self._diff is not None and self._diff.truncated:
            why = "The patch was too large for the server to keep; only its counts are here."
        else:
            why = "There is no patch yet."
        self.notify(why, severity="warning", markup=False)
        return None

    async def _export(self, path: Path, patch: bytes) -> None:
        try:
            await asyncio.to_thread(path.write_bytes, patch)
        except OSError as error:
            self._tell(f"Cannot write {path}: {error.strerror or error}", "Export failed", True)
            return
        self._tell(f"Wrote the patch ({len(patch):,} bytes) to {path}", "Patch exported")

    async def _ask_branch(self) -> None:
        from server_client.workspaces import default_branch_name  # the git layer, on first use

        repo = await asyncio.to_thread(local_repository, self.review_task.repo, self.cwd)
        diff, patch = self._diff, self._patch
        if diff is None or patch is None:
            return

        def chosen(name: str | None) -> None:
            if name is not None:
                self.run_worker(
                    self._branch(repo, diff.base_commit, patch, name),
                    group="review-branch",
                    exit_on_error=False,
                )

        await self.app.push_screen(
            AskModal(
                f"Commit the patch to a new branch of {shown_line(str(repo), 200)}",
                default_branch_name(self.review_task.id),
                "enter makes the branch on the task's base commit; your working tree, index "
                "and HEAD stay as they are · esc cancels",
                _check_branch,
            ),
            chosen,
        )

    async def _branch(self, repo: Path, base: str, patch: bytes, name: str) -> None:
        from server_client.workspaces import WorkspaceError, commit_patch

        message = f"codex-tui task {self.review_task.id}\n\n{self.review_task.prompt[:2000]}\n"
        try:
            commit = await commit_patch(repo, base, patch, name, message)
        except WorkspaceError as error:
            self._tell(f"No branch made: {error}", "Branch failed", True)
            return
        self._tell(f"Branch {name} ({commit[:12]}) made in {repo}", "Branch made")

    def _tell(self, text: str, title: str, error: bool = False) -> None:
        self._outcome = text
        self.notify(
            shown_line(text, 1000),
            title=title,
            severity="error" if error else "information",
            markup=False,
            timeout=8,
        )


def _hunk_word(count: int) -> str:
    return "no hunks" if count == 0 else "1 hunk" if count == 1 else f"{count} hunks"
