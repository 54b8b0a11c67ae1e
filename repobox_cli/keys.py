"""Every Redis key, stream and group name. Nothing else formats a key."""

JOBS_STREAM = "jobs:stream"
RUNNERS_GROUP = "jobs:stream:runners"
DEAD_LETTERS_STREAM = "runner:dead_letters"
HEARTBEAT_PREFIX = "runner:heartbeat:"
WAITING_PREFIX = "runner:waiting:"
SLOTS_PREFIX = "runner:slots:"
RECENTLY_FINISHED = "runner:finished"  # `<status>|<job id>` scored by finish time (ms), the last hour
# Passed in KEYS where a script takes no key: a real name under runner:, since an ACL user's key
# patterns are checked against every key an EVALSHA names (an empty name matches none).
NO_KEY = "runner:none"
GIT_PROVIDER_PATTERN = "git_provider:*"  # for SCAN only: ids are never parsed back out of a key


def job(job_id: str) -> str:
    return f"job:{job_id}"


def job_output(job_id: str) -> str:
    return f"job:{job_id}:output"


def user_jobs(user_id: str) -> str:
    return f"jobs:user:{user_id}"


def git_provider(user_id: str, provider_id: str) -> str:
    return f"git_provider:{user_id}:{provider_id}"


def user_slots(user_id: str) -> str:
    """Sorted set of the user's running attempts, scored by lease expiry (ms, Redis clock)."""
    return f"{SLOTS_PREFIX}{user_id}"


def job_attempt(job_id: str) -> str:
    """The id of the job's current attempt: the fencing token every write checks."""
    return f"runner:attempt:{job_id}"


def waiting_entry(entry_id: str) -> str:
    """Marks an entry its runner holds only *waiting* for a slot: a takeover of it does not count
    as a delivery toward MAX_DELIVERIES."""
    return f"{WAITING_PREFIX}{entry_id}"


def heartbeat(consumer: str) -> str:
    return f"{HEARTBEAT_PREFIX}{consumer}"
