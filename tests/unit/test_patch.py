"""Provides tests of the patch reader (codex_tui.events.patch) on real ``git diff --binary``
output: new, deleted, modified, binary and mode-changed files, names with spaces, quotes and
non-ASCII letters, renames off (as the worker diffs) and on; the counts agree with git's own
``--numstat``; hunks are found where they are; binary data is never shown; bounds hold."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from codex_tui.events.patch import (
    FilePatch,
    file_lines,
    parse_patch,
    unquote_path,
)


def git(repo: Path, *args: str) -> bytes:
    """Run git in ``repo``; its stdout."""
    return subprocess.run(
        ["git", "-c", "core.quotePath=true", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    ).stdout


def make_repo(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A repository holding ``files`` in one commit; its path and that commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    for name, data in files.items():
        (repo / name).write_bytes(data)
    git(repo, "add", "--all")
    git(repo, "commit", "-q", "-m", "base")
    return repo, git(repo, "rev-parse", "HEAD").decode().strip()


def worker_diff(repo: Path, base: str, *, renames: bool = False) -> bytes:
    """Everything changed since ``base``, as the worker takes it (every change staged,
    ``git diff --cached --binary --no-renames BASE``)."""
    git(repo, "add", "--all")
    renaming = "-M" if renames else "--no-renames"
    return git(repo, "diff", "--cached", "--binary", "--no-color", renaming, base)


def numstat(repo: Path, base: str) -> dict[str, tuple[int | None, int | None]]:
    """git's own per-file counts (None for binary)."""
    out = git(repo, "diff", "--cached", "--numstat", "-z", "--no-renames", base)
    counts: dict[str, tuple[int | None, int | None]] = {}
    for record in out.split(b"\0"):
        if record:
            added, removed, path = record.split(b"\t", 2)
            counts[path.decode()] = (
                None if added == b"-" else int(added),
                None if removed == b"-" else int(removed),
            )
    return counts


BINARY = bytes(range(256)) * 4
CODE = "".join(f"line {n}\n" for n in range(1, 61))


@pytest.fixture
def changed(tmp_path: Path) -> tuple[Path, str, bytes]:
    """A repository, its base commit and the worker's patch of one change of every kind."""
    repo, base = make_repo(
        tmp_path,
        {
            "keep.py": CODE.encode(),
            "gone.txt": b"bye\n",
            "script.sh": b"#!/bin/sh\necho hi\n",
            "logo.png": BINARY,
            "old name.txt": b"before\n",
            "moved.txt": b"".join(b"moved %d\n" % n for n in range(20)),
        },
    )
    lines = CODE.splitlines(keepends=True)
    lines[2] = "line three\n"  # hunk 1
    lines[30] = "line thirty-one\n"  # hunk 2
    lines.insert(55, "inserted\n")  # hunk 3
    (repo / "keep.py").write_text("".join(lines))
    (repo / "gone.txt").unlink()
    (repo / "script.sh").chmod(0o755)
    (repo / "logo.png").write_bytes(BINARY[::-1])
    (repo / "old name.txt").write_text("after\n")
    (repo / "new file.txt").write_text("fresh\nlines\n")
    (repo / "blob.bin").write_bytes(b"\x00\x01\x02")
    (repo / "café.txt").write_text("crème\n")
    (repo / 'say "hi".txt').write_text("no newline")
    (repo / "moved.txt").rename(repo / "sub.txt")
    return repo, base, worker_diff(repo, base)


def by_path(files: tuple[FilePatch, ...]) -> dict[str, FilePatch]:
    """The files by path."""
    return {file.path: file for file in files}


def test_every_kind_of_change_with_git_s_own_counts(changed: tuple[Path, str, bytes]) -> None:
    repo, base, patch = changed
    parsed = parse_patch(patch)
    files = by_path(parsed.files)
    assert set(files) == {
        "keep.py",
        "gone.txt",
        "script.sh",
        "logo.png",
        "old name.txt",
        "new file.txt",
        "blob.bin",
        "café.txt",
        'say "hi".txt',
        "moved.txt",
        "sub.txt",
    }
    assert parsed.more_files == 0 and parsed.size == len(patch)
    # The counts are git's own, file by file.
    assert {path: (f.added, f.removed) for path, f in files.items()} == numstat(repo, base)
    assert files["keep.py"].change == "modified" and files["keep.py"].hunks == 3
    assert files["gone.txt"].change == "deleted" and files["gone.txt"].old_mode == "100644"
    assert files["new file.txt"].change == "added" and files["new file.txt"].new_mode == "100644"
    assert files["script.sh"].mode_changed
    assert (files["script.sh"].old_mode, files["script.sh"].new_mode) == ("100644", "100755")
    assert (files["script.sh"].added, files["script.sh"].removed, files["script.sh"].hunks) == (
        0,
        0,
        0,
    )
    assert files["logo.png"].binary and files["logo.png"].change == "modified"
    assert files["logo.png"].binary_sizes == (len(BINARY), len(BINARY))
    assert files["blob.bin"].binary and files["blob.bin"].change == "added"
    # Renames off (the worker's diff): a move is a deletion and an addition.
    assert files["moved.txt"].change == "deleted" and files["sub.txt"].change == "added"
    assert parsed.added == sum(a or 0 for a, _ in numstat(repo, base).values())
    assert parsed.removed == sum(r or 0 for _, r in numstat(repo, base).values())
    # Each file's bytes are its own section of the patch, in order and back to back.
    assert parsed.files[0].start == 0 and parsed.files[-1].end == len(patch)
    for before, after in zip(parsed.files, parsed.files[1:], strict=False):
        assert before.end == after.start
        assert patch[after.start :].startswith(b"diff --git ")


def test_hunks_are_found_where_they_are(changed: tuple[Path, str, bytes]) -> None:
    _repo, _base, patch = changed
    keep = by_path(parse_patch(patch).files)["keep.py"]
    shown = file_lines(patch, keep)
    assert len(shown.hunk_starts) == 3
    assert [shown.lines[i].text.split(" @@")[0] for i in shown.hunk_starts] == [
        "@@ -1,6 +1,6",
        "@@ -28,7 +28,7",
        "@@ -53,6 +53,7",
    ]
    assert all(shown.lines[i].kind == "hunk" for i in shown.hunk_starts)
    kinds = [line.kind for line in shown.lines]
    assert kinds[:4] == ["header"] * 4
    assert ("removed", "-line 3") in shown.lines and ("added", "+line three") in shown.lines
    assert ("added", "+inserted") in shown.lines
    assert ("context", " line 1") in shown.lines
    assert shown.omitted == 0
    assert shown.width == max(len(line.text) for line in shown.lines)


def test_binary_data_is_never_shown(changed: tuple[Path, str, bytes]) -> None:
    _repo, _base, patch = changed
    files = by_path(parse_patch(patch).files)
    assert b"GIT binary patch" in patch
    logo = file_lines(patch, files["logo.png"])
    assert [line.kind for line in logo.lines] == ["header", "header", "binary"]
    assert logo.lines[-1].text == "binary file changed (1,024 → 1,024 bytes)"
    blob = file_lines(patch, files["blob.bin"])
    assert blob.lines[-1] == ("binary", "binary file added (3 bytes)")
    assert not any("literal" in line.text for line in (*logo.lines, *blob.lines))


def test_names_with_spaces_quotes_and_accents(changed: tuple[Path, str, bytes]) -> None:
    _repo, _base, patch = changed
    assert b'"b/caf\\303\\251.txt"' in patch  # git quoted it
    assert b"+++ b/new file.txt\t" in patch  # and tabbed the name with a space
    files = by_path(parse_patch(patch).files)
    assert files["café.txt"].added == 1
    quoted = file_lines(patch, files['say "hi".txt'])
    assert quoted.lines[-1] == ("no-newline", "\\ No newline at end of file")
    assert ("added", "+no newline") in quoted.lines


def test_mode_only_and_deleted_files_read_as_headers(changed: tuple[Path, str, bytes]) -> None:
    _repo, _base, patch = changed
    files = by_path(parse_patch(patch).files)
    script = file_lines(patch, files["script.sh"])
    assert script.lines == (
        ("header", "diff --git a/script.sh b/script.sh"),
        ("header", "old mode 100644"),
        ("header", "new mode 100755"),
    )
    gone = file_lines(patch, files["gone.txt"])
    assert gone.lines[-1] == ("removed", "-bye") and gone.hunk_starts == (5,)


def test_renames_on_are_read_too(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path, {"a.txt": b"".join(b"row %d\n" % n for n in range(30))})
    (repo / "a.txt").rename(repo / "b c.txt")
    patch = worker_diff(repo, base, renames=True)
    (file,) = parse_patch(patch).files
    assert (file.change, file.old_path, file.path) == ("renamed", "a.txt", "b c.txt")
    assert (file.added, file.removed) == (0, 0)


def test_a_removed_line_that_reads_like_a_file_header_stays_in_its_hunk(tmp_path: Path) -> None:
    text = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n"
    repo, base = make_repo(tmp_path, {"notes.patch": text})
    (repo / "notes.patch").write_bytes(b"")
    patch = worker_diff(repo, base)
    (file,) = parse_patch(patch).files
    assert (file.path, file.removed, file.added) == ("notes.patch", 4, 0)
    assert [line.kind for line in file_lines(patch, file).lines][-4:] == ["removed"] * 4


def test_bounds_files_lines_and_width(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path, {f"f{n}.txt": b"x\n" for n in range(5)})
    for n in range(5):
        (repo / f"f{n}.txt").write_bytes(b"".join(b"y %d\n" % i for i in range(100)))
    (repo / "wide.txt").write_text("w" * 5000 + "\n")
    patch = worker_diff(repo, base)
    parsed = parse_patch(patch, max_files=3)
    assert len(parsed.files) == 3 and parsed.more_files == 3
    shown = file_lines(patch, parsed.files[0], max_lines=20)
    assert len(shown.lines) == 21 and shown.omitted == 101 - 20 + 5
    assert shown.lines[-1] == ("note", f"… {shown.omitted} more lines not shown")
    wide = by_path(parse_patch(patch).files)["wide.txt"]
    line = file_lines(patch, wide, max_chars=100).lines[-1]
    assert line.kind == "added" and len(line.text) == 100 and line.text.endswith("…")


def test_control_characters_and_tabs_are_made_safe(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path, {"t.txt": b"a\n"})
    (repo / "t.txt").write_bytes(b"a\n\x1b]0;pwned\x07\tx\r\n")
    patch = worker_diff(repo, base)
    (file,) = parse_patch(patch).files
    added = [line.text for line in file_lines(patch, file).lines if line.kind == "added"]
    assert added == ["+␛]0;pwned␇ x␍"]  # the tab to the next multiple of 4


def test_text_before_the_first_file_and_an_empty_patch() -> None:
    assert parse_patch(b"").files == ()
    patch = b"From 1234\nSubject: x\n\ndiff --git a/a b/a\nindex 1..2 100644\n--- a/a\n+++ b/a\n"
    patch += b"@@ -1 +1 @@\n-a\n+b\n"
    (file,) = parse_patch(patch).files
    assert (file.path, file.added, file.removed, file.start) == ("a", 1, 1, patch.index(b"diff"))


def test_unquote_path() -> None:
    assert unquote_path(b"plain name") == b"plain name"
    assert unquote_path(b'"a/caf\\303\\251"') == "a/café".encode()
    assert unquote_path(b'"tab\\there \\"q\\" back\\\\slash"') == b'tab\there "q" back\\slash'
