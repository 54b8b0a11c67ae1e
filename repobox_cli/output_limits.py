"""How much of a job's output reaches Redis, and the web app's name for agent output: constants
the settings and the CLI need without importing the Redis client (`repobox --help` starts faster)."""

from __future__ import annotations

from dataclasses import dataclass

# The web app's one name for agent output, whatever the agent is (its types know no other).
AGENT_SOURCE = "claude"
DEFAULT_MAX_OUTPUT_LINES = 10_000
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024
# Kept for the runner's own lines (a job writes about 15; the notice is one of them).
RUNNER_RESERVE_LINES = 50
RUNNER_RESERVE_BYTES = 64 * 1024


@dataclass(frozen=True)
class OutputLimits:
    """How much of one job's output reaches Redis (and the local echo)."""

    max_lines: int = DEFAULT_MAX_OUTPUT_LINES
    max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    # The smallest limits that leave the agent as much as the runner's reserve.
    MIN_LINES = 2 * RUNNER_RESERVE_LINES
    MIN_BYTES = 2 * RUNNER_RESERVE_BYTES

    @property
    def shared_lines(self) -> int:
        return self.max_lines - RUNNER_RESERVE_LINES

    @property
    def shared_bytes(self) -> int:
        return self.max_bytes - RUNNER_RESERVE_BYTES
