"""Provides agent messages as Rich renderables: Markdown parsed by one shared markdown-it
parser, or plain :class:`~rich.text.Text` when a message has no Markdown syntax at all.

``rich.markdown`` (and through it markdown-it and Pygments) is imported on the first message
that needs it, not on import. Markdown can spell a control character as an entity
(``&#x1b;``), which the parser decodes: the parsed tokens' text goes through
:func:`server_client.text.visible` too (docs/reliability.md T1).
"""

from __future__ import annotations

import copy
import io
import re
from functools import cache
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text

from server_client.text import has_controls, visible

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token
    from rich.markdown import Markdown

__all__ = ["markdown_parser", "render_markdown", "warm_up"]

#: Characters that can start Markdown syntax anywhere in a line (emphasis, code, links, HTML,
#: entities, escapes, tables, strikethrough) or that Markdown treats as whitespace or replaces.
_MARKDOWN_INLINE = re.compile(r"[\\`*_\[\]<>&|~\t\r\x00-\x08\x0b-\x1f\x7f]")
#: How a line may not begin: blocks (lists, headings, quotes, fences, rules, setext
#: underlines, ordered lists); a leading space (indented code, stripped indentation).
_MARKDOWN_BLOCK = re.compile(r"^(?:[^\S\n]|[#>+=\-]|\d{1,9}[.)])", re.MULTILINE)


def _is_plain(text: str) -> bool:
    """True when Markdown would show ``text`` as it is: paragraphs of text without any syntax,
    separated by single blank lines, with no leading or trailing whitespace on any line."""
    if not text or _MARKDOWN_INLINE.search(text) or _MARKDOWN_BLOCK.search(text):
        return False
    if "\n\n\n" in text or text[0].isspace() or text[-1].isspace():
        return False
    return not any(line and line[-1].isspace() for line in text.split("\n"))


def render_markdown(text: str) -> RenderableType:
    """``text`` as Rich renders Markdown: a plain :class:`~rich.text.Text` (paragraphs, their
    lines joined by spaces, left-justified as Markdown does) when it has no Markdown syntax,
    else a :class:`rich.markdown.Markdown` parsed by the shared :func:`markdown_parser`.

    Control characters show visibly, whether written raw or as entities.
    """
    text = visible(text)
    if _is_plain(text):
        paragraphs = [Text(p.replace("\n", " "), justify="left") for p in text.split("\n\n")]
        return paragraphs[0] if len(paragraphs) == 1 else _Paragraphs(paragraphs)
    markdown = copy.copy(_markdown_template())
    markdown.markup = text
    markdown.parsed = _made_visible(markdown_parser().parse(text))
    return markdown


def _made_visible(tokens: list[Token]) -> list[Token]:
    """The tokens with every decoded text made visible (``&#x1b;`` decodes to ESC)."""
    stack = list(tokens)
    while stack:
        token = stack.pop()
        if token.content and has_controls(token.content):
            token.content = visible(token.content)
        if token.children:
            stack.extend(token.children)
    return tokens


class _Paragraphs:
    """Paragraphs separated by one empty line, as :class:`rich.markdown.Markdown` draws them."""

    def __init__(self, paragraphs: list[Text]) -> None:
        self.paragraphs = paragraphs

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for index, paragraph in enumerate(self.paragraphs):
            if index:
                yield Segment.line()
            yield from console.render(paragraph, options)


@cache
def markdown_parser() -> MarkdownIt:
    """The one markdown-it parser every agent message is parsed with, configured as
    :class:`rich.markdown.Markdown` configures its own (CommonMark with strikethrough and
    tables). Building a parser compiles its rule chains, so it is built once."""
    from markdown_it import MarkdownIt

    return MarkdownIt().enable("strikethrough").enable("table")


@cache
def _markdown_template() -> Markdown:
    """An empty :class:`rich.markdown.Markdown` with Rich's defaults; messages are shallow
    copies of it with their own markup and tokens (its ``__init__`` would build a parser)."""
    from rich.markdown import Markdown

    return Markdown("")


@cache
def warm_up() -> None:
    """Import and build what the first Markdown message needs (rich.markdown, markdown-it, the
    shared parser, Pygments and its Python lexer) by rendering a small message to nowhere.
    Thread-safe, so a view can run it in a thread instead of stalling on its first message."""
    console = Console(file=io.StringIO(), width=40, color_system="truecolor")
    console.print(render_markdown("# Ready\n\n`code` and:\n\n```python\nready = True\n```"))
