"""One exception hierarchy. Every message is one line, safe to show (secrets already masked)."""


class RepoboxError(Exception):
    """Raised for every failure repobox itself detects; the message is one safe line."""


class BadInput(RepoboxError):
    """Raised when a command's arguments are invalid or name nothing (exit 2, like a bad setting)."""


class SettingsError(RepoboxError):
    """Raised when a setting is missing or invalid at start-up."""


class KeyFormatError(SettingsError):
    """Raised when ENCRYPTION_KEY is none of the three accepted formats."""


class DecryptError(RepoboxError):
    """Raised when a ciphertext cannot be decrypted (format, base64, lengths, MAC, UTF-8)."""


class JobDataError(RepoboxError):
    """Raised when a stream entry or a job hash is malformed or names something unsafe."""


class ProviderError(RepoboxError):
    """Raised when the job's git provider record is missing or unusable."""


class GitError(RepoboxError):
    """Raised when a git command fails; the message is git's own reason, redacted."""


class BranchMissing(GitError):
    """Raised when a fetch names a branch the remote does not have (the job may fall back to the
    remote's default branch)."""


class RemoteRefused(GitError):
    """Raised when the remote refused a request (token, access, missing repository, redirect)."""


class AgentError(RepoboxError):
    """Raised when the agent step fails (non-zero exit, cannot start)."""


class JobStopped(RepoboxError):
    """Raised inside a job when its control was cancelled (timeout, web-app cancel, lease lost)."""


class RedisUnavailable(RepoboxError):
    """Raised when Redis cannot be reached."""


class SandboxUnavailable(SettingsError):
    """Raised at start-up when the agent sandbox (bubblewrap) cannot start on this host."""
