"""A stand-in `claude` executable: replays a recorded stream-json event file, no network.

`install_claude(bin_dir, events)` writes an executable `claude` into `bin_dir` that
- reads its prompt from stdin (as `claude --print` does when no prompt argument is given),
- records its argv, its prompt, its environment's names, the SHA-256 of its ANTHROPIC_API_KEY and
  whether any process it can see shows the prompt in its argument list, as one stderr line
  `STANDIN-RECORD <json>` (the sandbox shows it nothing writable outside the clone; the runner
  masks the key itself in output, hence the digest),
- applies the file changes in `STANDIN_CHANGES` (JSON: path → content, or null to delete),
- prints the recorded events (JSON lines, or raw lines for garbage) and exits `STANDIN_EXIT`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SCRIPT = """#!{python}
import hashlib, json, os, sys
RECORD_PREFIX = "STANDIN-RECORD "
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
          "prompt_in_argv": seen_in_argv,
          "api_key_sha256": hashlib.sha256(os.environ.get("ANTHROPIC_API_KEY", "").encode()).hexdigest()}}
print(RECORD_PREFIX + json.dumps(record), file=sys.stderr, flush=True)
for line in spec.get("lines", []):
    print(line if isinstance(line, str) else json.dumps(line), flush=True)
for line in spec.get("stderr", []):
    print(line, file=sys.stderr, flush=True)
sys.exit(spec.get("exit", 0))
"""


def install_claude(bin_dir: Path) -> Path:
    """Write the stand-in `claude` into `bin_dir`; its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "claude"
    path.write_text(SCRIPT.format(python=sys.executable))
    path.chmod(0o755)  # a root runner's agent runs as another uid
    bin_dir.chmod(0o755)
    return path


def write_spec(
    path: Path,
    lines: list[Any],
    *,
    changes: dict[str, str | None] | None = None,
    stderr: list[str] | None = None,
    exit_code: int = 0,
) -> None:
    """What the stand-in does on its next run (the spec file is read on every run)."""
    path.write_text(json.dumps({"lines": lines, "changes": changes or {}, "stderr": stderr or [], "exit": exit_code}))


RECORD_PREFIX = "STANDIN-RECORD "


def records(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stand-in's records, from a job's (or session's) output entries."""
    return [json.loads(str(o["line"])[len(RECORD_PREFIX) :]) for o in output if is_record(o)]


def is_record(entry: dict[str, Any]) -> bool:
    return str(entry["line"]).startswith(RECORD_PREFIX)


def claude_env(tmp: Path, path_env: str, api_key: str) -> dict[str, str]:
    """Runner environment overrides that put the stand-in first on PATH, with AGENT=claude."""
    bin_dir = tmp / "claude-bin"
    install_claude(bin_dir)
    return {
        "AGENT": "claude",
        "PATH": f"{bin_dir}{os.pathsep}{path_env}",
        "ANTHROPIC_API_KEY": api_key,
        "STANDIN_SPEC": str(tmp / "claude-spec.json"),
        "AGENT_ENV": "ANTHROPIC_API_KEY STANDIN_SPEC",
    }
