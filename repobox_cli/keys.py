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


# -- work sessions (SESSIONS.md): three streams, each read by its `…:runners` group ----------
SESSION_INIT_STREAM = "work_sessions:init:stream"
SESSION_INIT_GROUP = "work_sessions:init:runners"
SESSION_JOBS_STREAM = "work_sessions:jobs:stream"
SESSION_JOBS_GROUP = "work_sessions:jobs:runners"
SESSION_PUSH_STREAM = "work_sessions:push:stream"
SESSION_PUSH_GROUP = "work_sessions:push:runners"
SESSION_GROUPS = (
    (SESSION_INIT_STREAM, SESSION_INIT_GROUP),
    (SESSION_JOBS_STREAM, SESSION_JOBS_GROUP),
    (SESSION_PUSH_STREAM, SESSION_PUSH_GROUP),
)


def work_session(session_id: str) -> str:
    return f"work_session:{session_id}"


def work_session_output(session_id: str) -> str:
    """Every output line of the session (init, each prompt, push): `job:{id}:output` is not used."""
    return f"work_session:{session_id}:output"


def work_session_jobs(session_id: str) -> str:
    """The session's job ids in order (written by the web app)."""
    return f"work_session:{session_id}:jobs"


def session_step(step_id: str) -> str:
    """The runner's own record of one session init or push (status, fencing like a job's hash)."""
    return f"runner:session_step:{step_id}"


def session_step_slots(user_id: str) -> str:
    """Leases of a user's running session inits and pushes: not counted in MAX_JOBS_PER_USER."""
    return f"runner:session_step_slots:{user_id}"


def session_owner(session_id: str) -> str:
    """The runner holding the session's working copy: its prompts and push go there while it lives."""
    return f"runner:session_owner:{session_id}"
