"""Claude Code's `--output-format stream-json` events turned into the chat view's output lines.

One event per stdout line (SESSIONS.md, "The Claude Code agent"):

| event | line(s) | source |
|---|---|---|
| `system`/`init` with `session_id` | `Claude session: <id>` | runner |
| `assistant` text block | the text | claude |
| `assistant` tool_use block | `<Tool> <target>` (+ `├─ old` / `└─ new` for Edit) | claude |
| `user` tool_result block | `└─ <content ≤ 200>` | claude |
| `result` success / error | `Claude completed successfully` / `Claude error: <result>` | runner |

A line that is not a JSON object passes through as is; JSON events of other types (stream
deltas, rate-limit notices) are not shown. Pure: the caller decides where lines go.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The shell command of the Claude agent: the prompt comes from REPOBOX_PROMPT (already in the
# agent's environment) on stdin through the shell's builtin printf, so no process's argument
# list ever holds it.
CLAUDE_COMMAND = 'printf "%s" "$REPOBOX_PROMPT" | claude --print --output-format stream-json --verbose'

BASH_TARGET_CHARS = 80
TASK_TARGET_CHARS = 60
EDIT_SIDE_CHARS = 2000
TOOL_RESULT_CHARS = 200
# Which input field names the tool's target, for tools whose target is one field.
TOOL_TARGET_FIELDS: Mapping[str, tuple[str, int | None]] = {
    "Read": ("file_path", None),
    "Write": ("file_path", None),
    "Edit": ("file_path", None),
    "MultiEdit": ("file_path", None),
    "NotebookEdit": ("notebook_path", None),
    "Bash": ("command", BASH_TARGET_CHARS),
    "Glob": ("pattern", None),
    "Task": ("prompt", TASK_TARGET_CHARS),
    "WebFetch": ("url", None),
    "WebSearch": ("query", None),
}


class LineSource(StrEnum):
    RUNNER = "runner"  # the runner's own report (internal in the chat view)
    AGENT = "claude"  # the agent's words


@dataclass(frozen=True)
class ChatLine:
    text: str
    stream: str  # "stdout" | "stderr"
    source: LineSource


Sink = Callable[[ChatLine], None]


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit]


def tool_line(name: str, params: Mapping[str, Any]) -> str:
    """`<Tool> <target>` as the chat view's tool cards expect it (the name alone if no target)."""
    if name == "Grep":
        pattern = str(params.get("pattern", ""))
        path = str(params.get("path") or ".")
        return f'Grep "{pattern}" in {path}'
    field_name, limit = TOOL_TARGET_FIELDS.get(name, ("", None))
    target = params.get(field_name) if field_name else None
    if target is None or target == "":
        return name
    return f"{name} {_cut(str(target), limit)}"


def _result_text(content: Any) -> str:
    """A tool result's text: a string, or the text blocks of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"]
        return "\n".join(parts)
    return "" if content is None else str(content)


def _assistant(message: Mapping[str, Any]) -> list[ChatLine]:
    lines: list[ChatLine] = []
    for block in _blocks(message):
        kind = block.get("type")
        if kind == "text" and str(block.get("text", "")).strip():
            lines.append(ChatLine(str(block["text"]), "stdout", LineSource.AGENT))
        elif kind == "tool_use":
            name = str(block.get("name", "tool"))
            raw_input = block.get("input")
            params: Mapping[str, Any] = raw_input if isinstance(raw_input, dict) else {}
            lines.append(ChatLine(tool_line(name, params), "stdout", LineSource.AGENT))
            if name == "Edit":
                old = _cut(str(params.get("old_string", "")), EDIT_SIDE_CHARS)
                new = _cut(str(params.get("new_string", "")), EDIT_SIDE_CHARS)
                lines.append(ChatLine(f"├─ {old}", "stdout", LineSource.AGENT))
                lines.append(ChatLine(f"└─ {new}", "stdout", LineSource.AGENT))
    return lines


def _tool_results(message: Mapping[str, Any]) -> list[ChatLine]:
    return [
        ChatLine(f"└─ {_cut(_result_text(block.get('content')), TOOL_RESULT_CHARS)}", "stdout", LineSource.AGENT)
        for block in _blocks(message)
        if block.get("type") == "tool_result"
    ]


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _result(event: Mapping[str, Any]) -> list[ChatLine]:
    subtype = str(event.get("subtype", ""))
    if subtype == "success" and not event.get("is_error"):
        return [ChatLine("Claude completed successfully", "stdout", LineSource.RUNNER)]
    reason = event.get("result") or subtype or "unknown error"
    return [ChatLine(f"Claude error: {reason}", "stderr", LineSource.RUNNER)]


def translate(raw: str, stream: str = "stdout") -> list[ChatLine]:
    """The chat lines for one line of Claude's output (`stream` is where it was printed)."""
    if stream != "stdout":
        return [ChatLine(raw, stream, LineSource.AGENT)]
    try:
        event = json.loads(raw)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return [ChatLine(raw, stream, LineSource.AGENT)] if raw.strip() else []
    kind = event.get("type")
    if kind == "system":
        if event.get("subtype") == "init" and event.get("session_id"):
            return [ChatLine(f"Claude session: {event['session_id']}", "stdout", LineSource.RUNNER)]
        return []
    if kind == "assistant":
        return _assistant(event.get("message") or {})
    if kind == "user":
        return _tool_results(event.get("message") or {})
    if kind == "result":
        return _result(event)
    return []


def emitter(sink: Sink) -> Callable[[str, str], None]:
    """An `(line, stream)` callback for `agent.run_agent` that translates each line into `sink`."""

    def emit(line: str, stream: str) -> None:
        for chat_line in translate(line, stream):
            sink(chat_line)

    return emit
