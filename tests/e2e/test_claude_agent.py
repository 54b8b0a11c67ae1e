"""AGENT=claude: Claude Code's stream-json events become the chat view's lines (SESSIONS.md),
the prompt never travels in an argument list, and ANTHROPIC_API_KEY arrives only through
AGENT_ENV. A stand-in `claude` replays recorded event streams; no network."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tests.support.claude_standin import claude_env, is_record, records, write_spec
from tests.support.webapp_sessions import create_session, lines, output, send_prompt, wait_job, wait_session
from tests.support.world import REPO_FILES, World

API_KEY = "sk-ant-api03-" + "K3yS3cr3t" * 4
SESSION = "0b5c6f0e-1111-4a2b-9c3d-5e6f7a8b9c0d"
PROMPT = "Fix the greeting in src/app.py\nand explain what you changed, in detail please"

RECORDED_EVENTS: list[Any] = [
    {
        "type": "system",
        "subtype": "init",
        "session_id": SESSION,
        "cwd": "/x",
        "tools": ["Read", "Edit"],
        "model": "claude-sonnet-4",
    },
    {
        "type": "assistant",
        "message": {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll look at the app first."},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "src/app.py"}},
            ],
        },
    },
    {
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "print('hello')\n" + "x" * 300}],
        },
    },
    {
        "type": "assistant",
        "message": {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "t2",
                    "name": "Edit",
                    "input": {
                        "file_path": "src/app.py",
                        "old_string": "print('hello')",
                        "new_string": "print('hello, world')",
                    },
                }
            ],
        },
    },
    {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "File updated"}]}
            ],
        },
    },
    {
        "type": "assistant",
        "message": {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "t3",
                    "name": "Bash",
                    "input": {"command": "python -m pytest -q " + "-k x " * 30},
                },
                {"type": "tool_use", "id": "t4", "name": "Grep", "input": {"pattern": "hello", "path": "src"}},
                {"type": "tool_use", "id": "t5", "name": "Glob", "input": {"pattern": "**/*.py"}},
                {"type": "tool_use", "id": "t6", "name": "Task", "input": {"prompt": "Review the change " * 10}},
                {"type": "tool_use", "id": "t7", "name": "Write", "input": {"file_path": "NOTES.md", "content": "n"}},
            ],
        },
    },
    {"type": "stream_event", "event": {"type": "content_block_delta"}},
    "this line is not JSON at all {",
    "[1, 2, 3]",
    {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "Done: greeting fixed."}]},
    },
    {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done: greeting fixed.",
        "session_id": SESSION,
    },
]

EXPECTED = [
    ("Claude session: " + SESSION, "stdout", "runner"),
    ("I'll look at the app first.", "stdout", "claude"),
    ("Read src/app.py", "stdout", "claude"),
    ("└─ " + ("print('hello')\n" + "x" * 300)[:200], "stdout", "claude"),
    ("Edit src/app.py", "stdout", "claude"),
    ("├─ print('hello')", "stdout", "claude"),
    ("└─ print('hello, world')", "stdout", "claude"),
    ("└─ File updated", "stdout", "claude"),
    ("Bash " + ("python -m pytest -q " + "-k x " * 30)[:80], "stdout", "claude"),
    ('Grep "hello" in src', "stdout", "claude"),
    ("Glob **/*.py", "stdout", "claude"),
    ("Task " + ("Review the change " * 10)[:60], "stdout", "claude"),
    ("Write NOTES.md", "stdout", "claude"),
    ("this line is not JSON at all {", "stdout", "claude"),
    ("[1, 2, 3]", "stdout", "claude"),
    ("Done: greeting fixed.", "stdout", "claude"),
    ("Claude completed successfully", "stdout", "runner"),
]


def _agent_lines(world: World, job_id: str) -> list[tuple[str, str, str]]:
    """The lines between `Starting agent` and `Agent completed` (or the end)."""
    lines = [(str(o["line"]), str(o["stream"]), str(o["source"])) for o in world.output(job_id) if not is_record(o)]
    start = next(i for i, line in enumerate(lines) if line[0] == "Starting agent")
    end = next((i for i, line in enumerate(lines) if line[0] == "Agent completed"), len(lines))
    return lines[start + 1 : end]


def _claude_world(world: World) -> dict[str, str]:
    return claude_env(world.tmp, os.environ.get("PATH", "/usr/bin:/bin"), API_KEY)


def test_claude_events_become_the_chat_views_lines_and_the_change_is_pushed(world: World) -> None:
    env = _claude_world(world)
    write_spec(
        world.tmp / "claude-spec.json",
        RECORDED_EVENTS,
        changes={"src/app.py": "print('hello, world')\n", "NOTES.md": "notes\n"},
    )
    job_id = world.add_job(prompt=PROMPT)

    result = world.run_burst(**env)

    assert result.returncode == 0, result.stderr
    job = world.job(job_id)
    assert job["status"] == "success", job
    assert _agent_lines(world, job_id) == EXPECTED
    branch = f"repobox/{job_id[:8]}"
    assert world.git.show_file(world.repo_name, branch, "src/app.py") == "print('hello, world')\n"
    assert world.git.show_file(world.repo_name, branch, "NOTES.md") == "notes\n"


def test_claude_gets_the_prompt_on_stdin_never_in_any_argv_and_the_key_only_through_agent_env(world: World) -> None:
    env = _claude_world(world)
    write_spec(
        world.tmp / "claude-spec.json",
        [{"type": "result", "subtype": "success", "result": "ok"}],
        changes={"a.txt": "a\n"},
    )
    job_id = world.add_job(prompt=PROMPT)

    assert world.run_burst(**env).returncode == 0
    assert world.job(job_id)["status"] == "success"

    [run] = records(world.output(job_id))
    assert run["argv"][1:] == ["--print", "--output-format", "stream-json", "--verbose"]
    assert run["prompt"] == PROMPT
    assert run["prompt_in_argv"] == []
    assert run["api_key_sha256"] == hashlib.sha256(API_KEY.encode()).hexdigest()
    assert "ENCRYPTION_KEY" not in run["env"] and "REDIS_URL" not in run["env"]


def test_claude_errors_garbage_and_stderr_are_shown_and_the_job_fails(world: World) -> None:
    env = _claude_world(world)
    write_spec(
        world.tmp / "claude-spec.json",
        [
            {"type": "system", "subtype": "init", "session_id": SESSION},
            "garbage {{{",
            f"leaked key {API_KEY}",
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "result": "API Error: 529 overloaded",
            },
        ],
        stderr=["claude: something went wrong"],
        exit_code=1,
    )
    job_id = world.add_job(prompt="anything")

    assert world.run_burst(**env).returncode == 0

    job = world.job(job_id)
    assert job["status"] == "failed" and "exited with status 1" in job["error_message"]
    lines = _agent_lines(world, job_id)
    assert ("Claude session: " + SESSION, "stdout", "runner") in lines
    assert ("garbage {{{", "stdout", "claude") in lines
    assert ("Claude error: API Error: 529 overloaded", "stderr", "runner") in lines
    assert ("claude: something went wrong", "stderr", "claude") in lines
    everything = world.output_text(job_id)
    assert API_KEY not in everything and world.token not in everything and world.key not in everything
    assert "leaked key sk-a****" in everything
    [run] = records(world.output(job_id))
    assert world.token not in str(run) and world.key not in str(run)


def test_agent_claude_and_agent_command_together_are_refused(world: World) -> None:
    result = world.repobox("run", "--burst", AGENT="claude", AGENT_COMMAND="echo hi")
    assert result.returncode == 2
    assert "AGENT=claude or AGENT_COMMAND" in result.stderr


def test_a_session_prompt_runs_claude_in_the_working_copy_and_the_chat_view_gets_its_lines(world: World) -> None:
    name = f"acme/{world.repo_name}"
    world.git.create_repo(name, REPO_FILES)
    env = _claude_world(world)
    write_spec(world.tmp / "claude-spec.json", RECORDED_EVENTS, changes={"src/app.py": "print('hello, world')\n"})
    world.start_runner(**env)
    sid = create_session(world, f"{world.git.base_url}/{name}", name)
    wait_session(world, sid, "ready", timeout_s=15)

    job = wait_job(world, send_prompt(world, sid, PROMPT))

    after = wait_session(world, sid, "ready")
    assert job["status"] == "success", lines(world, sid)
    assert (job["lines_added"], job["lines_removed"]) == ("1", "1")
    assert after["total_lines_added"] == "1" and after["last_job_status"] == "success"
    entries = [o for o in output(world, sid) if not is_record(o)]
    shown = [(str(o["line"]), str(o["stream"]), str(o["source"])) for o in entries]
    start = shown.index(("Running prompt: Fix the greeting in src/app.py", "stdout", "runner"))
    assert [line for line in shown[start:] if line in EXPECTED] == EXPECTED
    [run] = records(output(world, sid))
    assert run["prompt"] == PROMPT and run["prompt_in_argv"] == []
    everything = "\n".join(lines(world, sid))
    assert API_KEY not in everything and world.token not in everything and world.key not in everything
