"""A stand-in `claude` executable: replays a recorded stream-json event file, no network.

`install_claude(bin_dir, events)` writes an executable `claude` into `bin_dir` that
- reads its prompt from stdin (as `claude --print` does when no prompt argument is given),
- records its argv, its prompt, its environment's names and whether any process on the machine
  shows the prompt in its argument list, into `STANDIN_RECORD` (a path outside the work dir),
- applies the file changes in `STANDIN_CHANGES` (JSON: path → content, or null to delete),
- prints the recorded events (JSON lines, or raw lines for garbage) and exits `STANDIN_EXIT`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = '''#!{python}
import json, os, sys
from pathlib import Path

prompt = sys.stdin.read()
seen_in_argv = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        cmdline = Path("/proc", pid, "cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        continue
    if prompt and prompt in cmdline:
        seen_in_argv.append(cmdline.replace("\\0", " "))
spec = json.loads(Path(os.environ["STANDIN_SPEC"]).read_text())
for name, content in spec.get("changes", {{}}).items():
    target = Path(name)
    if content is None:
        target.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
record = {{"argv": sys.argv, "prompt": prompt, "env": sorted(os.environ), "cwd": os.getcwd(),
          "prompt_in_argv": seen_in_argv, "api_key": os.environ.get("ANTHROPIC_API_KEY", "")}}
with open(os.environ["STANDIN_RECORD"], "a") as f:
    f.write(json.dumps(record) + "\\n")
for line in spec.get("lines", []):
    print(line if isinstance(line, str) else json.dumps(line), flush=True)
for line in spec.get("stderr", []):
    print(line, file=sys.stderr, flush=True)
sys.exit(spec.get("exit", 0))
'''


def install_claude(bin_dir: Path) -> Path:
    """Write the stand-in `claude` into `bin_dir`; its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "claude"
    path.write_text(SCRIPT.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def write_spec(path: Path, lines: list[Any], *, changes: dict[str, str | None] | None = None,
               stderr: list[str] | None = None, exit_code: int = 0) -> None:
    """What the stand-in does on its next run (the spec file is read on every run)."""
    path.write_text(json.dumps({"lines": lines, "changes": changes or {}, "stderr": stderr or [],
                                "exit": exit_code}))


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def claude_env(tmp: Path, path_env: str, api_key: str) -> dict[str, str]:
    """Runner environment overrides that put the stand-in first on PATH, with AGENT=claude."""
    bin_dir = tmp / "claude-bin"
    install_claude(bin_dir)
    return {
        "AGENT": "claude",
        "PATH": f"{bin_dir}{os.pathsep}{path_env}",
        "ANTHROPIC_API_KEY": api_key,
        "STANDIN_SPEC": str(tmp / "claude-spec.json"),
        "STANDIN_RECORD": str(tmp / "claude-record.jsonl"),
        "AGENT_ENV": "ANTHROPIC_API_KEY STANDIN_SPEC STANDIN_RECORD",
    }
