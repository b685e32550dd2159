"""Provides the checks that keep the project's own docs honest against the code as it is.

The code cites the properties of ``docs/reliability.md`` by id (``docs/reliability.md E6``,
or a bare ``(R4)`` in a docstring or comment) and the docs by path; the docs name the tests
that show each property as ``file.py::test_name``. These checks read both at test time, so
they follow the code wherever it moves: every id cited exists, every doc cited exists, every
test the docs name exists (found by file name anywhere under ``tests/``), and every property
either names its tests or says it is planned. The benchmark notes' wording
(``benchmarks/notes.md``) must fill in for a real run's figures.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.notes import NOTES_MD, make_notes, parse_fragments
from benchmarks.report import goals

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RELIABILITY = DOCS / "reliability.md"
TESTS = ROOT / "tests"

#: Where code that may cite the docs lives.
CODE_ROOTS = ("server_client", "codex_tui", "tests", "benchmarks")

#: Every property id the project has promised; an id may be added, never dropped.
PROMISED_IDS = (
    [f"E{n}" for n in range(1, 8)]
    + [f"R{n}" for n in range(1, 10)]
    + ["C1", "C2"]
    + [f"S{n}" for n in range(1, 11)]
    + [f"A{n}" for n in range(1, 6)]
    + [f"W{n}" for n in range(1, 4)]
    + [f"T{n}" for n in range(1, 4)]
)

#: A property id as the code cites it (``R4``, ``S10``); never part of a longer word.
_ID = re.compile(r"(?<![\w.-])([ERCSAWT][1-9]\d?)(?!\w)")
#: A property's heading in reliability.md: ``### E1 — title``.
_HEADING = re.compile(r"^### ([ERCSAWT]\d+) — \S", re.MULTILINE)
#: A test named in the docs: ``test_file.py::test_name``.
_TEST_REF = re.compile(r"`(test_\w+\.py)::(test_\w+)`")
#: A doc cited by path, or one of the three project docs by name.
_DOC_REF = re.compile(r"\bdocs/([\w-]+\.md)\b|(?<![\w/-])(design|reliability|codex-facts)\.md\b")


def _code_files() -> Iterator[Path]:
    for root in CODE_ROOTS:
        yield from sorted((ROOT / root).rglob("*.py"))


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and triple-quoted string (docstrings) of ``path``:
    where code cites the docs. Short strings are data, not citations."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
        elif token.type == tokenize.STRING and token.string.lstrip("rbuRBUfF")[:3] in (
            '"""',
            "'''",
        ):
            yield token.start[0], token.string


def _sections(markdown: str) -> dict[str, str]:
    """reliability.md's property sections by id: the text from a heading to the next one."""
    starts = list(_HEADING.finditer(markdown))
    sections: dict[str, str] = {}
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() if following is not None else len(markdown)
        sections[match.group(1)] = markdown[match.end() : end].split("\n## ")[0]
    return sections


def test_every_promised_property_is_defined_once() -> None:
    ids = _HEADING.findall(RELIABILITY.read_text(encoding="utf-8"))
    assert len(ids) == len(set(ids)), f"a property id is defined twice: {sorted(ids)}"
    missing = [pid for pid in PROMISED_IDS if pid not in ids]
    assert not missing, f"docs/reliability.md lost properties {missing}; ids are never dropped"


def test_every_property_id_the_code_cites_is_defined() -> None:
    defined = set(_HEADING.findall(RELIABILITY.read_text(encoding="utf-8")))
    undefined = [
        f"{path.relative_to(ROOT)}:{line}: {pid}"
        for path in _code_files()
        for line, text in _prose(path)
        for pid in _ID.findall(text)
        if pid not in defined
    ]
    assert not undefined, "cited but not in docs/reliability.md:\n" + "\n".join(undefined)


def test_every_doc_the_code_cites_exists() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {by_path or by_name + '.md'}"
        for path in _code_files()
        for line, text in _prose(path)
        for by_path, by_name in _DOC_REF.findall(text)
        if not (DOCS / (by_path or by_name + ".md")).is_file()
    ]
    assert not missing, "cited docs that are not in docs/:\n" + "\n".join(missing)


def test_every_test_the_docs_name_exists() -> None:
    files: dict[str, list[Path]] = {}
    for path in TESTS.rglob("test_*.py"):
        files.setdefault(path.name, []).append(path)
    wrong = []
    for doc in sorted(DOCS.glob("*.md")):
        for name, test in _TEST_REF.findall(doc.read_text(encoding="utf-8")):
            found = files.get(name, [])
            defined = re.compile(rf"^(?:async )?def {re.escape(test)}\(", re.MULTILINE)
            if not any(defined.search(path.read_text(encoding="utf-8")) for path in found):
                wrong.append(f"{doc.name}: {name}::{test}")
    assert not wrong, "the docs name tests that do not exist:\n" + "\n".join(wrong)


def test_every_property_names_its_tests_or_is_planned() -> None:
    sections = _sections(RELIABILITY.read_text(encoding="utf-8"))
    assert sections, "no property headings found in docs/reliability.md"
    vague = [
        pid
        for pid, text in sections.items()
        if not ("**Shown by:**" in text and _TEST_REF.search(text)) and "**Planned" not in text
    ]
    assert not vague, f"properties that neither name a test nor say they are planned: {vague}"


def test_prose_and_citations_are_found_where_the_code_has_them(tmp_path: Path) -> None:
    """The scanners above see citations in docstrings and comments, not in code or data."""
    sample = tmp_path / "sample.py"
    lines = [
        '"""Cites docs/reliability.md E6 and (R4, S10)."""',
        "T0 = 'R99'  # see design.md (C2)",
    ]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cited = [pid for _, text in _prose(sample) for pid in _ID.findall(text)]
    assert cited == ["E6", "R4", "S10", "C2"]
    docs = [ref for _, text in _prose(sample) for ref in _DOC_REF.findall(text)]
    assert docs == [("reliability.md", ""), ("", "design")]


def test_notes_md_fragments_parse_with_their_labels() -> None:
    fragments = parse_fragments(
        "# Title\n\nFor readers.\n\n### `one`\n\nFirst {a:.0f}\nline.\n\n"
        "- `k1`: label one\n- `k2`: label two\n\nFor readers again.\n\n### `two`\n\nSecond.\n"
    )
    assert fragments["one"].text == "First {a:.0f} line."
    assert fragments["one"].labels == (("k1", "label one"), ("k2", "label two"))
    assert fragments["two"].text == "Second."
    assert set(fragments) == {"one", "two"}
    with pytest.raises(ValueError, match="appears twice"):
        parse_fragments("### `x`\n\nA.\n\n### `x`\n\nB.\n")


def test_benchmark_notes_fill_in_for_a_real_run() -> None:
    """Every note of the stored full run, with every goal counted as missed, comes out of
    notes.md's templates complete."""
    results = json.loads((ROOT / "benchmarks" / "results" / "full.json").read_text())
    skip = ("meta", "goals", "notes", "errors", "sections")
    flat = {k: v for k, v in results.items() if k not in skip}
    for goal in goals():
        flat[goal.key] = goal.target * 10 if goal.op == "<=" else goal.target / 10
    notes = make_notes(flat, results["sections"])
    assert len(notes) >= 8
    for note in notes:
        assert note.strip() and "{" not in note and "}" not in note, note
    assert parse_fragments(NOTES_MD.read_text(encoding="utf-8"))
