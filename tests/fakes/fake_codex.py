#!/usr/bin/env python3
"""Provides a stand-in for ``codex exec --json`` that prints the real JSONL schema on cue.

Accepts codex's argv: ``exec --json --skip-git-repo-check -s S|--sandbox=S -C D|--cd=D
[-m M|--model=M] [--] PROMPT``. Like clap, an unknown option before ``--`` is an error (exit 2)
and ``-h``/``--help`` prints usage (exit 0), so a prompt that leaks into the options shows up.
Like the real codex it prints "Reading additional input from stdin..." to stderr, appends an
open stdin to the prompt, and exits 1 at once and silently on SIGINT (docs/codex-facts.md).

Environment:
    FAKE_CODEX_MODE: ok (default), reconnect, burst, slow-burst, stamped, sleep, crash, fail,
        ignore-sigint, fork, fork-exit, malformed, huge, echo-argv, hostile (escape sequences
        in every field codex prints: see :data:`HOSTILE`), deep (valid items nested 220 and
        300 levels deep, then a normal end).
    FAKE_CODEX_EVENTS: number of items for ``burst`` (default 1000) and ``slow-burst``
        (default 100).
    FAKE_CODEX_INTERVAL: seconds between the items of ``slow-burst`` (default 0.1).
    FAKE_CODEX_SLEEP: seconds to sleep in ``sleep``/``ignore-sigint``/``fork`` (default 600).
    FAKE_CODEX_SIZE_MB: size of the ``huge`` line in MiB (default 12).
    FAKE_CODEX_ERROR: message of ``turn.failed`` in ``fail``.
    FAKE_CODEX_RECORD: path; written (atomically) once the fake is set up, with its argv,
        prompt, env, pid, pgid, sid, cwd, whether stdin is /dev/null and, for ``fork``
        modes, the grandchild's pid.
    FAKE_CODEX_FORK_KEEP_STDIO=1: the grandchild keeps codex's stdout/stderr open.
    FAKE_CODEX_FORK_SCRUB_ENV=1: the grandchild execs with an empty environment (no marker).
    FAKE_CODEX_WAIT_FILE: path; ``sleep``/``ignore-sigint``/``fork`` end their command as soon
        as it exists (the ``fork`` grandchild still sleeps FAKE_CODEX_SLEEP).

``stamped`` (for benchmarks/): ``events`` agent messages paced at ``rate`` lines per second
on an absolute schedule (0: as fast as possible), each line carrying its index ``n`` and, as
its last field, ``t_ns``: ``time.time_ns()`` taken just before the line is written. Settings
come from ``key=value`` words in the prompt (``events=500 rate=20 pad=160 phase=0.01
gate=/path``), else FAKE_CODEX_EVENTS (default 100) and FAKE_CODEX_RATE (default 0). ``pad``
adds that many bytes of text to each message; ``phase`` delays the first line by that many
seconds (so that many fakes do not write in lockstep). With ``gate`` the fake prints
``thread.started`` and
``turn.started``, then waits for a shared ``flock`` on that file (the benchmark holds it
exclusively until every task is ready), so that many tasks start streaming at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

USAGE = "Usage: codex exec [OPTIONS] [PROMPT]\n"
THREAD_ID = "0199a213-81c0-7800-8aa1-bbab2a035a53"


#: Text that would act on a terminal if printed raw: retitle the window (OSC 0), write the
#: clipboard (OSC 52), clear the screen (CSI 2J), the same as an 8-bit C1 CSI, a bell, and
#: an entity that Markdown decodes to ESC. Each copy carries the field's name.
HOSTILE = (
    "[{field}] \x1b]0;PWNED-TITLE\x07 \x1b]52;c;UFdORUQ=\x07 \x1b[2J\x1b[H \x9b2J \x07 "
    "&#x1b;]0;PWNED-ENTITY&#x7; \x1bP+q\x1b\\ end"
)


def hostile(field: str) -> str:
    """:data:`HOSTILE` for one field."""
    return HOSTILE.format(field=field)


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` levels deep (objects and arrays in turn)."""
    value: Any = "bottom"
    for level in range(depth):
        value = {"level": value} if level % 2 else [value]
    return value


def out(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def raw(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


class Items:
    def __init__(self) -> None:
        self.next = 0

    def new_id(self) -> str:
        item_id = f"item_{self.next}"
        self.next += 1
        return item_id


def parse_argv(argv: list[str]) -> dict[str, Any]:
    if not argv or argv[0] != "exec":
        sys.stderr.write("fake codex: expected 'exec'\n")
        sys.exit(2)
    opts: dict[str, Any] = {"json": False, "skip_git": False, "sandbox": None, "cd": None}
    opts["model"] = None
    positional: list[str] = []
    takes_value = {"-s": "sandbox", "--sandbox": "sandbox", "-C": "cd", "--cd": "cd"}
    takes_value |= {"-m": "model", "--model": "model"}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1 :])
            break
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if arg == "--json":
            opts["json"] = True
        elif arg == "--skip-git-repo-check":
            opts["skip_git"] = True
        elif arg in takes_value:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                sys.stderr.write(f"error: a value is required for '{arg}'\n")
                sys.exit(2)
            opts[takes_value[arg]] = argv[i + 1]
            i += 1
        elif arg.startswith("--") and "=" in arg and arg.split("=", 1)[0] in takes_value:
            name, value = arg.split("=", 1)
            opts[takes_value[name]] = value
        elif arg.startswith("-") and arg != "-":
            sys.stderr.write(f"error: unexpected argument '{arg}' found\n")
            sys.exit(2)
        else:
            positional.append(arg)
        i += 1
    if len(positional) > 1:
        sys.stderr.write(f"error: unexpected argument '{positional[1]}' found\n")
        sys.exit(2)
    opts["prompt"] = positional[0] if positional else None
    return opts


def stdin_is_devnull() -> bool:
    try:
        st = os.fstat(0)
    except OSError:
        return True
    devnull = os.stat(os.devnull)
    return (st.st_dev, st.st_ino, st.st_rdev) == (devnull.st_dev, devnull.st_ino, devnull.st_rdev)


def write_record(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def exit_on_sigint() -> None:
    signal.signal(signal.SIGINT, lambda *_: os._exit(1))


def wait_for_file(path: str | None, sleep_s: float) -> None:
    """Sleep ``sleep_s`` seconds, or less if ``path`` is given and appears meanwhile."""
    deadline = time.monotonic() + sleep_s
    while time.monotonic() < deadline:
        if path is not None and os.path.exists(path):
            return
        time.sleep(0.01 if path is not None else max(0.0, deadline - time.monotonic()))


def fork_grandchild(sleep_s: float) -> int:
    """Fork a process in its own session (like codex's commands) that ignores SIGINT/SIGTERM."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # grandchild
        try:
            os.close(read_fd)
            os.setsid()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if os.environ.get("FAKE_CODEX_FORK_KEEP_STDIO") != "1":
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
            os.write(write_fd, b"ready")
            os.close(write_fd)
            if os.environ.get("FAKE_CODEX_FORK_SCRUB_ENV") == "1":
                code = (
                    "import signal, time\n"
                    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    f"time.sleep({sleep_s!r})\n"
                )
                os.execve(sys.executable, [sys.executable, "-c", code], {})
            time.sleep(sleep_s)
        finally:
            os._exit(0)
    os.close(write_fd)
    os.read(read_fd, 16)  # wait until the grandchild is in its own session
    os.close(read_fd)
    return pid


def stamped(prompt: str, usage: dict[str, int]) -> int:
    """The ``stamped`` mode (see the module docstring); returns the exit code."""
    import fcntl

    words = dict(w.split("=", 1) for w in prompt.split() if "=" in w)
    count = int(words.get("events", os.environ.get("FAKE_CODEX_EVENTS", "100")))
    rate = float(words.get("rate", os.environ.get("FAKE_CODEX_RATE", "0")))
    text = "x" * int(words.get("pad", "0"))
    gate = words.get("gate")
    if gate:
        with open(gate, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)  # blocks while the benchmark holds LOCK_EX
            fcntl.flock(fh, fcntl.LOCK_UN)
    start = time.monotonic() + float(words.get("phase", "0"))
    for n in range(count):
        if rate > 0 or n == 0:
            delay = start + (n / rate if rate > 0 else 0) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        head = (
            f'{{"type":"item.completed","item":{{"id":"item_{n}","type":"agent_message",'
            f'"text":"message {n} {text}"}},"n":{n},"t_ns":'
        )
        os.write(1, f"{head}{time.time_ns()}}}\n".encode())
    out({"type": "turn.completed", "usage": usage})
    return 0


def delta_stamp(n: int, t_ns: int) -> str:
    """The text of delta ``n`` of ``as-deltas``, written at ``t_ns`` (``time.time_ns()``)."""
    return f"\u27e8{n}:{t_ns}\u27e9 "


def stream_deltas(prompt: str, thread_id: str, note: Callable[[str, dict[str, Any]], None]) -> None:
    """The turn of ``app-server`` mode ``as-deltas`` (for benchmarks/), after ``turn/started``.

    Settings are ``key=value`` words of the prompt: ``deltas`` (default 100) agent-message
    deltas, then ``output`` (default 0) command-output deltas of one command, all paced at
    ``rate`` per second (0: as fast as possible) on an absolute schedule that starts ``phase``
    seconds after ``gate`` (a file the benchmark holds an exclusive ``flock`` on until every
    task is ready; as in ``stamped``). Each delta's text is :func:`delta_stamp` of its index
    (counting on over both streams) and of ``time.time_ns()`` taken just before the line is
    written, followed by ``pad`` (default 0) bytes of ``x``. Then ``item/completed`` with the
    whole text of each item, ``thread/tokenUsage/updated`` and ``turn/completed``.
    """
    import fcntl

    words = dict(w.split("=", 1) for w in prompt.split() if "=" in w)
    count = int(words.get("deltas", "100"))
    output = int(words.get("output", "0"))
    rate = float(words.get("rate", "0"))
    pad = "x" * int(words.get("pad", "0"))
    gate = words.get("gate")
    if gate:
        with open(gate, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)  # blocks while the benchmark holds LOCK_EX
            fcntl.flock(fh, fcntl.LOCK_UN)
    start = time.monotonic() + float(words.get("phase", "0"))
    turn = {"threadId": thread_id, "turnId": "turn-1"}
    n = 0

    def stream(method: str, item_id: str, deltas: int) -> str:
        nonlocal n
        head = json.dumps({"method": method, "params": {**turn, "itemId": item_id, "delta": ""}})
        before, after = head.rsplit('""', 1)
        texts = []
        for _ in range(deltas):
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            text = delta_stamp(n, time.time_ns()) + pad
            os.write(1, f"{before}{json.dumps(text)}{after}\n".encode())
            texts.append(text)
            n += 1
        return "".join(texts)

    text = stream("item/agentMessage/delta", "msg_1", count)
    note("item/completed", {**turn, "item": {"type": "agentMessage", "id": "msg_1", "text": text}})
    if output:
        command = {"type": "commandExecution", "id": "cmd_1", "command": "bench", "cwd": "/"}
        note("item/started", {**turn, "item": {**command, "status": "inProgress"}})
        aggregated = stream("item/commandExecution/outputDelta", "cmd_1", output)
        done = {**command, "status": "completed", "exitCode": 0, "aggregatedOutput": aggregated}
        note("item/completed", {**turn, "item": done})
    tokens = {"inputTokens": 1200, "cachedInputTokens": 1000, "outputTokens": count}
    tokens |= {"reasoningOutputTokens": 0, "totalTokens": 1200 + count}
    usage = {"total": tokens, "last": tokens, "modelContextWindow": 272000}
    note("thread/tokenUsage/updated", {**turn, "tokenUsage": usage})
    done_turn = {"id": "turn-1", "items": [], "status": "completed"}
    note("turn/completed", {"threadId": thread_id, "turn": done_turn})


def app_server(mode: str) -> int:
    """``codex app-server`` for deterministic edge cases (the real one is tested too): reads
    JSON-RPC lines from stdin and answers ``initialize``, ``thread/start``/``thread/resume``
    and ``turn/start`` like codex 0.169.0, then, by ``mode``:

    - ``as-ok``: a malformed line, a non-object line, an agent message streamed in two deltas
      and a completed turn;
    - ``as-crash``: a delta, then exits 3 in the middle of the turn (stderr says so);
    - ``as-crash-early``: exits 4 on ``thread/start`` (no thread yet);
    - ``as-ask``: asks ``item/tool/requestUserInput`` (request id 0, item ``ui_1``; the real
      codex 0.169.0 offers that tool only in Plan mode) and ends the turn with an agent message
      whose text is the JSON of the answer it got;
    - ``as-deltas`` (for benchmarks/): :func:`stream_deltas`, settings from the turn's
      prompt words.
    """

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def note(method: str, params: dict[str, Any]) -> None:
        send({"method": method, "params": params, "emittedAtMs": int(time.time() * 1000)})

    thread_id = THREAD_ID
    turn = {"id": "turn-1", "items": [], "status": "inProgress"}
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        method, request_id = request.get("method"), request.get("id")
        params = request.get("params") or {}
        if method is None and request_id == 0 and mode == "as-ask":  # the answer to our ask
            item = {"type": "agentMessage", "id": "msg_1", "text": json.dumps(request["result"])}
            note("item/completed", {"threadId": thread_id, "turnId": "turn-1", "item": item})
            note("turn/completed", {"threadId": thread_id, "turn": {**turn, "status": "completed"}})
        elif method == "initialize":
            send({"id": request_id, "result": {"userAgent": "fake/0.169.0"}})
        elif method in ("thread/start", "thread/resume"):
            if mode == "as-crash-early":
                sys.stderr.write("fake app-server: crashing before the thread\n")
                return 4
            thread_id = params.get("threadId", thread_id)
            send({"id": request_id, "result": {"thread": {"id": thread_id}}})
            note("thread/started", {"thread": {"id": thread_id}})
        elif method == "turn/start":
            send({"id": request_id, "result": {"turn": turn}})
            note("turn/started", {"threadId": thread_id, "turn": turn})
            if mode == "as-ask":
                question = {
                    "id": "color",
                    "header": "Color",
                    "question": "Which color?",
                    "options": [{"label": "Red", "description": "warm"}],
                    "isOther": True,
                }
                ask: dict[str, Any] = {"threadId": thread_id, "turnId": "turn-1", "itemId": "ui_1"}
                ask |= {"isBlocking": True, "questions": [question]}
                send({"id": 0, "method": "item/tool/requestUserInput", "params": ask})
                continue
            if mode == "as-deltas":
                texts = [part.get("text", "") for part in params.get("input") or []]
                stream_deltas(" ".join(texts), thread_id, note)
                continue
            delta = {"threadId": thread_id, "turnId": "turn-1", "itemId": "msg_1"}
            note("item/agentMessage/delta", {**delta, "delta": "Hel"})
            if mode == "as-crash":
                sys.stderr.write("fake app-server: crashing mid-turn\n")
                sys.stderr.flush()
                return 3
            sys.stdout.write("this is not JSON {\n[1, 2]\n")
            note("item/agentMessage/delta", {**delta, "delta": "lo"})
            item = {"type": "agentMessage", "id": "msg_1", "text": "Hello"}
            note("item/completed", {"threadId": thread_id, "turnId": "turn-1", "item": item})
            done = {**turn, "status": "completed"}
            note("turn/completed", {"threadId": thread_id, "turn": done})
    return 0


def main() -> int:
    if sys.argv[1:2] == ["app-server"]:
        return app_server(os.environ.get("FAKE_CODEX_MODE", "as-ok"))
    opts = parse_argv(sys.argv[1:])
    mode = os.environ.get("FAKE_CODEX_MODE", "ok")
    sleep_s = float(os.environ.get("FAKE_CODEX_SLEEP", "600"))

    if mode == "ignore-sigint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        exit_on_sigint()

    prompt = opts["prompt"]
    devnull = stdin_is_devnull()
    sys.stderr.write("Reading additional input from stdin...\n")
    sys.stderr.flush()
    if not devnull and not sys.stdin.isatty():
        extra = sys.stdin.read()
        prompt = (prompt or "") + (f"\n<stdin>\n{extra}\n</stdin>" if extra else "")
    if prompt == "-":
        prompt = ""
    if not prompt:
        sys.stderr.write("No prompt provided via stdin.\n")
        return 1

    grandchild = None
    if mode in ("fork", "fork-exit"):
        grandchild = fork_grandchild(sleep_s)

    record = {
        "argv": sys.argv,
        "opts": opts,
        "prompt": prompt,
        "env": dict(os.environ),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "cwd": os.getcwd(),
        "stdin_is_devnull": devnull,
        "grandchild": grandchild,
    }
    write_record(os.environ.get("FAKE_CODEX_RECORD"), record)

    items = Items()
    out({"type": "thread.started", "thread_id": THREAD_ID})
    out({"type": "turn.started"})
    usage = {"input_tokens": 1200, "cached_input_tokens": 1000, "output_tokens": 42}

    if mode == "ok":
        cmd_id = items.new_id()
        command = {
            "id": cmd_id,
            "type": "command_execution",
            "command": "bash -lc ls",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        out({"type": "item.started", "item": command})
        done = command | {"aggregated_output": "README.md\nsrc\n", "exit_code": 0}
        out({"type": "item.completed", "item": done | {"status": "completed"}})
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "reasoning",
                    "text": "**Planning the change**",
                },
            }
        )
        todo_id = items.new_id()
        todo = {"id": todo_id, "type": "todo_list"}
        out(
            {
                "type": "item.started",
                "item": todo | {"items": [{"text": "edit README", "completed": False}]},
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "file_change",
                    "changes": [{"path": os.path.join(os.getcwd(), "README.md"), "kind": "update"}],
                    "status": "completed",
                },
            }
        )
        out(
            {
                "type": "item.completed",
                "item": todo | {"items": [{"text": "edit README", "completed": True}]},
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "agent_message", "text": "Done."},
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "reconnect":  # a transient top-level error, then a normal turn
        out({"type": "error", "message": "Reconnecting... 1/3"})
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "agent_message", "text": "back"},
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "burst":
        count = int(os.environ.get("FAKE_CODEX_EVENTS", "1000"))
        lines = []
        for n in range(count):
            item = {"id": items.new_id(), "type": "agent_message", "text": f"message {n}"}
            lines.append(json.dumps({"type": "item.completed", "item": item}) + "\n")
        raw("".join(lines))
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "slow-burst":  # one item at a time, so events keep coming for a while
        count = int(os.environ.get("FAKE_CODEX_EVENTS", "100"))
        interval = float(os.environ.get("FAKE_CODEX_INTERVAL", "0.1"))
        for n in range(count):
            item = {"id": items.new_id(), "type": "agent_message", "text": f"message {n}"}
            out({"type": "item.completed", "item": item})
            time.sleep(interval)
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "stamped":
        return stamped(prompt, usage)

    if mode in ("sleep", "ignore-sigint", "fork"):
        command = {
            "id": items.new_id(),
            "type": "command_execution",
            "command": f"sleep {sleep_s:g}",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        out({"type": "item.started", "item": command})
        wait_for_file(os.environ.get("FAKE_CODEX_WAIT_FILE"), sleep_s)
        out({"type": "item.completed", "item": command | {"exit_code": 0, "status": "completed"}})
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "fork-exit":  # the command outlives the turn (docs/codex-facts.md)
        command = {
            "id": items.new_id(),
            "type": "command_execution",
            "command": "sleep 600 &",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        out({"type": "item.started", "item": command})
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "crash":
        out(
            {
                "type": "item.started",
                "item": {
                    "id": items.new_id(),
                    "type": "command_execution",
                    "command": "make",
                    "aggregated_output": "",
                    "exit_code": None,
                    "status": "in_progress",
                },
            }
        )
        sys.stderr.write("thread 'main' panicked at src/exec.rs:1:1: boom\n")
        sys.stderr.flush()
        return 3

    if mode == "fail":
        out({"type": "error", "message": "Reconnecting... 1/3"})
        message = os.environ.get("FAKE_CODEX_ERROR", "model overloaded")
        out({"type": "turn.failed", "error": {"message": message}})
        return 1

    if mode == "malformed":
        raw("this is not json\n")
        raw('{"type":"item.completed","item":{"id":"item_0","type":"agent_mess\n')
        raw("\n")
        raw("[1, 2, 3]\n")
        sys.stdout.buffer.write(b"\xff\xfe bad utf-8 \xc3\n")
        sys.stdout.flush()
        raw('{"type":"x.custom","text":"lone \\ud800 surrogate"}\n')
        raw("[" * 100_000 + "\n")
        raw('{"type":"x.nan","value":NaN}\n')
        raw('{"type":"x.huge","value":1e400}\n')
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "agent_message", "text": "still here"},
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "hostile":
        sys.stderr.write(hostile("stderr") + "\n")
        sys.stderr.flush()
        raw(hostile("stdout") + "\n")
        out({"type": "error", "message": hostile("error")})
        command = {
            "id": items.new_id(),
            "type": "command_execution",
            "command": "cat " + hostile("command"),
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        out({"type": "item.started", "item": command})
        output = hostile("output") + "\n\x1b[31mred\x1b[0m and plain\n"
        out(
            {
                "type": "item.completed",
                "item": command
                | {"aggregated_output": output, "exit_code": 0, "status": "completed"},
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "reasoning", "text": hostile("reasoning")},
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "file_change",
                    "changes": [{"path": hostile("path"), "kind": "add"}],
                    "status": "completed",
                },
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "error", "message": hostile("warning")},
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "todo_list",
                    "items": [{"text": hostile("todo"), "completed": False}],
                },
            }
        )
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "mcp_tool_call",
                    "server": hostile("server"),
                    "tool": "t",
                    "status": "failed",
                    "error": {"message": hostile("tool-error")},
                },
            }
        )
        out({"type": "x.unknown", "text": hostile("unknown")})
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "agent_message", "text": hostile("message")},
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "deep":
        for depth in (220, 300):
            item = {
                "id": items.new_id(),
                "type": "mcp_tool_call",
                "server": "s",
                "tool": "t",
                "status": "completed",
                "result": nested(depth),
            }
            out({"type": "item.completed", "item": item})
        out(
            {
                "type": "item.completed",
                "item": {
                    "id": items.new_id(),
                    "type": "agent_message",
                    "text": "after the deep lines",
                },
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "huge":
        size = int(float(os.environ.get("FAKE_CODEX_SIZE_MB", "12")) * 1024 * 1024)
        item = {"id": items.new_id(), "type": "agent_message", "text": "x" * size}
        out({"type": "item.completed", "item": item})
        out({"type": "turn.completed", "usage": usage})
        return 0

    if mode == "echo-argv":
        text = json.dumps({"argv": sys.argv[1:], "prompt": prompt, "env": dict(os.environ)})
        out(
            {
                "type": "item.completed",
                "item": {"id": items.new_id(), "type": "agent_message", "text": text},
            }
        )
        out({"type": "turn.completed", "usage": usage})
        return 0

    sys.stderr.write(f"fake codex: unknown FAKE_CODEX_MODE {mode!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
