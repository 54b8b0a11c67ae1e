"""The demo's result with rich: the job (status, branch, commit, diff stats), its output as the
web app's terminal shows it, and how long each step took. Plain text in a pipe."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from repobox_cli.demo.flow import DemoResult, Step
from repobox_cli.output_limits import AGENT_SOURCE

# The job's own steps, from the runner's output lines: (name, first line starts with, last line starts with).
JOB_PHASES = (
    ("look up branches and clone", "Looking up branches", "Clone completed"),
    ("create the branch, run the agent", "Creating branch", "Committing changes"),
    ("commit", "Committing changes", "Committed "),
    ("push", "Pushing ", "Push completed"),
)
STATUS_STYLES = {"success": "bold green", "failed": "bold red", "cancelled": "bold yellow"}


def step_line(step: Step) -> Text:
    text = Text(f"✓ {step.name} ({step.seconds:.2f} s)", style="bold")
    if step.detail:
        text.append(f"\n  {step.detail}", style="dim")
    return text


def job_phases(result: DemoResult) -> list[tuple[str, float]]:
    """Seconds between the runner's step lines, for the phases found in the output."""
    first: dict[str, int] = {}
    for line, at in zip(result.output, result.output_times, strict=True):
        for prefix in {p for _, start, end in JOB_PHASES for p in (start, end)}:
            if line.source != AGENT_SOURCE and line.line.startswith(prefix) and prefix not in first:
                first[prefix] = at
    return [(name, (first[end] - first[start]) / 1000) for name, start, end in JOB_PHASES if {start, end} <= set(first)]


def _job_table(result: DemoResult) -> Table:
    job = result.job
    status = job.get("status", "?")
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("status", Text(status, style=STATUS_STYLES.get(status, "bold")))
    table.add_row("job", result.job_id)
    table.add_row("branch", job.get("branch", "-"))
    if result.commit:
        table.add_row("commit", result.commit)
    if "lines_added" in job:
        table.add_row("diff", f"+{job.get('lines_added')} -{job.get('lines_removed', '0')}")
    for added, removed, path in result.files:
        table.add_row("", f"{path}  +{added} -{removed}")
    if job.get("error_message"):
        table.add_row("error", Text(job["error_message"], style="red"))
    return table


def _output(result: DemoResult) -> Table:
    """As the web app's terminal view: stderr red with ✗, the agent's lines marked; long lines
    fold under their text."""
    table = Table(show_header=False, box=None, padding=(0, 1, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for line in result.output:
        if line.stream == "stderr":
            table.add_row(Text("✗", style="red"), Text(line.line, style="red"))
        elif line.source == AGENT_SOURCE:
            table.add_row(Text("agent │", style="cyan"), Text(line.line, style="cyan"))
        else:
            table.add_row("      │", Text(line.line))
    return table


def _timings(result: DemoResult) -> Table:
    table = Table(box=None, padding=(0, 1))
    table.add_column("step")
    table.add_column("took", justify="right")
    for step in result.steps:
        table.add_row(step.name, f"{step.seconds:.2f} s")
    for name, seconds in job_phases(result):
        table.add_row(f"  job: {name}", f"{seconds:.2f} s")
    table.add_row(Text("total", style="bold"), Text(f"{sum(s.seconds for s in result.steps):.2f} s", style="bold"))
    return table


def show(console: Console, result: DemoResult) -> None:
    console.print(Panel(_job_table(result), title="the job", title_align="left"))
    console.print(Panel(_output(result), title="its output, as the web app shows it", title_align="left"))
    console.print(Panel(_timings(result), title="how long each step took", title_align="left"))
