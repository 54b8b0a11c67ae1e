"""Housekeeping a runner does now and then: trim acknowledged entries, remove consumers of
runners that are gone, and (at start) remove work directories a crash left behind."""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from repobox_cli import keys, workdir
from repobox_cli.jobs import is_final
from repobox_cli.leases import Leases
from repobox_cli.redis_conn import CONNECTION_ERRORS

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 30.0


def tidy_group(client: redis.Redis, leases: Leases, consumer: str) -> None:
    """Trim the stream below what any group still needs; drop consumers that are gone and empty."""
    trimmed = leases.trim()
    if trimmed:
        log.info("trimmed %d acknowledged entries from %s", trimmed, leases.stream)
    for info in client.xinfo_consumers(leases.stream, leases.group):
        name = str(info["name"])
        if name != consumer and int(info["pending"]) == 0 and leases.remove_consumer_if_gone(name):
            log.info("removed consumer %s of a runner that is gone and held nothing", name)


def remove_stale_workdirs(client: redis.Redis, temp_dir: Path) -> None:
    """Work dirs of jobs that are final or gone (a crash left them). Only directories repobox
    made are touched."""
    try:
        children = list(temp_dir.iterdir())
    except OSError as exc:
        raise workdir.WorkDirError(f"cannot read TEMP_DIR {temp_dir}: {exc.strerror}") from exc
    for child in children:
        try:
            _remove_stale_workdir(client, child)
        except CONNECTION_ERRORS:
            raise  # Redis is away: not an odd entry
        except Exception as exc:  # noqa: BLE001 - boundary: one odd entry must not stop the runner
            log.warning("stale work directory %s left in place: %s: %s", child, type(exc).__name__, exc)


def _remove_stale_workdir(client: redis.Redis, child: Path) -> None:
    """Remove `child` if repobox made it and its job is final or gone; a failure is logged."""
    if child.name in workdir.KEPT_NAMES or not workdir.looks_like_job_dir(child):
        return  # the clone cache or the sessions (kept), or not made by repobox: never removed
    try:
        status = client.hget(keys.job(child.name), "status")
    except redis.ResponseError:
        return  # not a job's directory we can judge
    if status is None or is_final(status):
        workdir.remove_tree(child)  # logs what it cannot remove and leaves it
