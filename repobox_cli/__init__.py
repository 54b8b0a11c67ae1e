"""repobox: the job runner of Repobox."""

__version__ = "0.1.0"
