"""Item 4: a medium repository the benchmark generates (~5,000 files, ~2,000 commits, with
`git fast-import`): one whole job cold, and — when this tree has a clone cache (a `CACHE_DIR`
setting) — the repeat job with a warm cache, on this disk and with TEMP_DIR on a tmpfs (where
/dev/shm is one); against `shell_job.sh`'s cold clone-and-push."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.env import Bench
from benchmarks.jobs import SHELL_JOB
from benchmarks.stats import median, ratio
from benchmarks.table import Row, fmt_ms
from benchmarks.timed_run import run_timed
from repobox_cli.settings import SETTINGS

FILES_PER_DIR = 100
TMPFS = Path("/dev/shm")  # where a tmpfs is found on Linux, for the TEMP_DIR-on-tmpfs row


def _tmpfs_temp_dir() -> Path | None:
    """A fresh private directory on a tmpfs, or None where there is none to write to."""
    try:
        with open("/proc/mounts") as mounts:
            if not any(line.split()[1:3] == [str(TMPFS), "tmpfs"] for line in mounts):
                return None
        path = Path(tempfile.mkdtemp(prefix="repobox-bench-", dir=TMPFS))
    except OSError:
        return None
    os.chmod(path, 0o700)
    return path


def has_clone_cache() -> bool:
    return any(setting.env == "CACHE_DIR" for setting in SETTINGS)


def _fast_import_stream(files: int, commits: int) -> bytes:
    """A history: the first commit adds `files` files, each later one changes one of them."""
    out: list[str] = []
    stamp = 1_700_000_000
    for n in range(commits):
        out.append("commit refs/heads/main")
        out.append(f"committer Bench <bench@localhost> {stamp + n} +0000")
        message = f"commit {n}\n"
        out.append(f"data {len(message)}\n{message}".rstrip("\n"))
        if n == 0:
            for i in range(files):
                body = f"file {i}\n" + "line\n" * (i % 40)
                out.append(f"M 644 inline d{i // FILES_PER_DIR}/f{i}.txt")
                out.append(f"data {len(body.encode())}\n{body}".rstrip("\n"))
        else:
            i = (n * 7919) % files
            body = f"file {i} changed in commit {n}\n"
            out.append(f"M 644 inline d{i // FILES_PER_DIR}/f{i}.txt")
            out.append(f"data {len(body.encode())}\n{body}".rstrip("\n"))
        out.append("")
    return ("\n".join(out) + "\n").encode()


def make_medium_repo(bench: Bench, files: int, commits: int) -> str:
    name = f"medium-{files}-{commits}"
    bare = bench.git.repo_path(name)
    if not bare.exists():
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
        subprocess.run(["git", "config", "-f", str(bare / "config"), "http.receivepack", "true"], check=True)
        subprocess.run(
            ["git", "fast-import", "--quiet"],
            cwd=bare,
            input=_fast_import_stream(files, commits),
            check=True,
            env={"GIT_DIR": str(bare), "PATH": "/usr/bin:/bin"},
        )
        subprocess.run(
            ["git", "gc", "--quiet"], cwd=bare, check=True, env={"GIT_DIR": str(bare), "PATH": "/usr/bin:/bin"}
        )
    return bench.git.repo_url(name)


def _runner_job(bench: Bench, url: str) -> tuple[float, float]:
    """The whole job's seconds (started → finished) and its clone step's (from the job's output:
    its "Cloning" line to its "Clone completed" line)."""
    job_id = bench.world.add_job(repo_url=url)
    job = bench.wait_final(job_id, deadline_s=600)
    if job.get("status") != "success":
        raise RuntimeError(f"medium-repo job failed: {job.get('error')}")
    stamps: dict[str, int] = {}
    for item in bench.client.lrange(f"job:{job_id}:output", 0, -1):
        line = json.loads(item)
        for prefix in ("Cloning ", "Clone completed"):
            if line["source"] == "runner" and line["line"].startswith(prefix):
                stamps.setdefault(prefix, int(line["timestamp"]))
    clone_s = (stamps["Clone completed"] - stamps["Cloning "]) / 1000
    return (int(job["finished_at"]) - int(job["started_at"])) / 1000, clone_s


def _shell_job(bench: Bench, url: str, n: int) -> float:
    return run_timed(
        ["sh", str(SHELL_JOB), url, str(bench.root / f"medium-shell-{n}"), f"repobox/medium-{n}"], bench.git_env()
    )


def run(bench: Bench, quick: bool) -> list[Row]:
    files, commits = (300, 100) if quick else (5000, 2000)
    rounds = 1 if quick else 5
    url = make_medium_repo(bench, files, commits)
    cache = has_clone_cache()
    cold: list[float] = []
    warm: list[float] = []
    cold_clone: list[float] = []
    warm_clone: list[float] = []
    warm_tmpfs: list[float] = []
    shell: list[float] = []
    tmpfs = _tmpfs_temp_dir() if cache else None
    try:
        for n in range(rounds):
            env = {"CACHE_DIR": str(bench.root / f"cache-{n}")} if cache else {}
            runner = bench.start_runner(name=f"clone-{n}", MAX_CONCURRENT_JOBS="1", **env)
            try:
                shell.append(_shell_job(bench, url, n))
                job_s, clone_s = _runner_job(bench, url)
                cold.append(job_s)
                cold_clone.append(clone_s)
                if cache:
                    job_s, clone_s = _runner_job(bench, url)
                    warm.append(job_s)
                    warm_clone.append(clone_s)
            finally:
                bench.stop_runner(runner)
            if tmpfs is not None:  # the same warm cache (on disk), the job's files on a tmpfs
                name = f"clone-tmpfs-{n}"
                runner = bench.start_runner(name=name, MAX_CONCURRENT_JOBS="1", TEMP_DIR=str(tmpfs), **env)
                try:
                    _runner_job(bench, url)  # a runner's first job pays its start-up: like `warm`, time the second
                    warm_tmpfs.append(_runner_job(bench, url)[0])
                finally:
                    bench.stop_runner(runner)
    finally:
        if tmpfs is not None:
            shutil.rmtree(tmpfs, ignore_errors=True)
    cold_s, shell_s = median(cold), median(shell)
    size = f"{files:,} files, {commits:,} commits"
    rows = [Row("4", f"one job, medium repo ({size}), cold", fmt_ms(cold_s), fmt_ms(shell_s), ratio(cold_s, shell_s))]
    if cache:
        warm_s = median(warm)
        rows.append(
            Row(
                "4",
                "one job, medium repo, repeat with the clone cache",
                fmt_ms(warm_s),
                fmt_ms(shell_s),
                ratio(warm_s, shell_s),
                "≤ 0.5 ×",
                ratio(warm_s, shell_s) <= 0.5,
            )
        )
        warm_clone_s, cold_clone_s = median(warm_clone), median(cold_clone)
        rows.append(
            Row(
                "4",
                "clone step, medium repo: repeat with the cache vs. cold",
                fmt_ms(warm_clone_s),
                fmt_ms(cold_clone_s),
                ratio(warm_clone_s, cold_clone_s),
                "≤ 0.3 ×",
                ratio(warm_clone_s, cold_clone_s) <= 0.3,
            )
        )
        rows.append(
            Row(
                "4",
                "repeat job with cache vs. cold job (whole job)",
                fmt_ms(warm_s),
                fmt_ms(cold_s),
                ratio(warm_s, cold_s),
            )
        )
        if warm_tmpfs:
            tmpfs_s = median(warm_tmpfs)
            rows.append(
                Row(
                    "4",
                    f"repeat job with cache, TEMP_DIR on a tmpfs ({TMPFS}) vs. on this disk",
                    fmt_ms(tmpfs_s),
                    fmt_ms(warm_s),
                    ratio(tmpfs_s, warm_s),
                )
            )
    else:
        rows.append(
            Row(
                "4",
                "one job, medium repo, repeat with the clone cache",
                "cache: n/a (no CACHE_DIR here)",
                fmt_ms(shell_s),
                target="≤ 0.5 ×",
            )
        )
    return rows
