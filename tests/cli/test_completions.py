"""The committed completion scripts match the Typer app, and they actually complete."""

from __future__ import annotations

import enum
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer

from repobox_cli import completions
from repobox_cli.cli import app
from repobox_cli.completions import FILE_NAMES, SHELLS

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS_DIR = ROOT / "completions"
SHELL_DEADLINE_S = 20.0

pytestmark = pytest.mark.timeout(60)


def _committed(shell: str) -> Path:
    return COMPLETIONS_DIR / completions.FILE_NAMES[shell]


def bash_complete(script: Path, words: list[str], prog: str = "repobox") -> list[str]:
    """Source `script`, call its completion function as bash would for `words`, return COMPREPLY.

    The last word is the one being completed (may be empty)."""
    line = " ".join(words)
    program = (
        f'source "$1" || exit 97\n'
        f"shift\n"
        f'COMP_WORDS=("$@")\n'
        f"COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
        f'COMP_LINE="{line}"\n'
        f"COMP_POINT=${{#COMP_LINE}}\n"
        f'func=$(complete -p {prog} | sed -E "s/.*-F ([^ ]+).*/\\1/")\n'
        f'"$func" {prog} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"\n'
        f'printf "%s\\n" "${{COMPREPLY[@]}}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program, "bash", str(script), *words],
        capture_output=True,
        text=True,
        timeout=SHELL_DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


# -- the committed files are up to date ----------------------------------------------------------


@pytest.mark.parametrize("shell", completions.SHELLS)
def test_committed_script_matches_the_app(shell: str) -> None:
    path = _committed(shell)
    assert path.is_file(), f"{path} is missing: run `{completions.REGENERATE_COMMAND}`"
    assert path.read_text(encoding="utf-8") == completions.render(shell), (
        f"{path.relative_to(ROOT)} no longer matches the Typer app: "
        f"regenerate with `{completions.REGENERATE_COMMAND}` and commit the result"
    )


def test_main_writes_all_three_files(tmp_path: Path) -> None:
    assert completions.main(["--write", str(tmp_path / "out")]) == 0
    for shell, name in completions.FILE_NAMES.items():
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == completions.render(shell)


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "repobox_cli.completions", "bash"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SHELL_DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == completions.render("bash")


def test_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shell 'tcsh'"):
        completions.render("tcsh")


def test_scripts_never_call_back_into_python() -> None:
    for shell in completions.SHELLS:
        text = completions.render(shell)
        assert "python" not in text.replace(completions.REGENERATE_COMMAND, "")
        assert "_REPOBOX_COMPLETE" not in text


# -- bash ----------------------------------------------------------------------------------------


def test_bash_script_is_valid_syntax() -> None:
    result = subprocess.run(
        ["bash", "-n", str(_committed("bash"))], capture_output=True, text=True, timeout=SHELL_DEADLINE_S
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["repobox", "ru"], ["run"]),
        (["repobox", "run", "--con"], ["--concurrency"]),
        (
            ["repobox", ""],
            ["run", "exec", "decrypt", "pending", "status", "config", "completion"]
            + ["enqueue", "logs", "cancel", "retry", "health", "demo", "token"],
        ),
        (["repobox", "p"], ["pending"]),
        (["repobox", "--"], ["--version", "--help"]),
        (["repobox", "run", "--no-c"], ["--no-cleanup"]),
        (["repobox", "run", "--allow-h"], ["--allow-http"]),
        (["repobox", "run", "--no-allow"], ["--no-allow-http"]),
        (["repobox", "exec", "--no-"], ["--no-push"]),
        (["repobox", "decrypt", "--u"], ["--user"]),
        (["repobox", "pending", "--j"], ["--json"]),
        (["repobox", "run", "--burst", "--con"], ["--concurrency"]),
        # values from the settings table's choices
        (["repobox", "run", "--log-format", ""], ["pretty", "json"]),
        (["repobox", "exec", "--log-format", "p"], ["pretty"]),
        (["repobox", "run", "--agent-sandbox", ""], ["bwrap", "none"]),
        # a group's commands, then their options and values
        (["repobox", "token", ""], ["set", "check"]),
        (["repobox", "token", "s"], ["set"]),
        (["repobox", "token", "set", "--t"], ["--type"]),
        (["repobox", "token", "set", "--type", ""], ["github", "gitlab"]),
        (["repobox", "token", "check", "--r"], ["--repo", "--redis-url"]),
        (["repobox", "config", "--ch"], ["--check"]),
        (["repobox", "run", "--metrics-"], ["--metrics-port", "--metrics-host"]),
        # the value of an option is not another option
        (["repobox", "run", "--concurrency", ""], []),
        (["repobox", "run", "--redis-url", "--"], []),
        (["repobox", "run", "--redis-url", "=", ""], []),
        # positional arguments have nothing static to complete
        (["repobox", "exec", ""], []),
        (["repobox", "nosuchcommand", "--"], []),
    ],
)
def test_bash_completes(words: list[str], expected: list[str]) -> None:
    assert bash_complete(_committed("bash"), words) == expected


def test_bash_completes_paths_after_temp_dir(tmp_path: Path) -> None:
    (tmp_path / "workdir-a").mkdir()
    (tmp_path / "workdir-b.txt").write_text("")
    got = bash_complete(_committed("bash"), ["repobox", "run", "--temp-dir", str(tmp_path / "workd")])
    assert sorted(got) == [str(tmp_path / "workdir-a"), str(tmp_path / "workdir-b.txt")]


def test_bash_offers_every_option_of_every_command() -> None:
    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="repobox")
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        command = group.get_command(ctx, name)  # type: ignore[attr-defined]
        expected = {"--help"}
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not param.hidden:
                expected.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
        assert set(bash_complete(_committed("bash"), ["repobox", name, "--"])) == expected, name


# -- zsh and fish (syntax only, when installed) --------------------------------------------------


def test_zsh_script_is_valid_syntax() -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed: cannot check the zsh script's syntax")
    result = subprocess.run(
        [zsh, "-n", str(_committed("zsh"))], capture_output=True, text=True, timeout=SHELL_DEADLINE_S
    )
    assert result.returncode == 0, result.stderr


def test_fish_script_is_valid_syntax() -> None:
    fish = shutil.which("fish")
    if fish is None:
        pytest.skip("fish is not installed: cannot check the fish script's syntax")
    result = subprocess.run(
        [fish, "--no-execute", str(_committed("fish"))], capture_output=True, text=True, timeout=SHELL_DEADLINE_S
    )
    assert result.returncode == 0, result.stderr


def test_fish_completes_subcommands_and_options(tmp_path: Path) -> None:
    fish = shutil.which("fish")
    if fish is None:
        pytest.skip("fish is not installed: cannot run the fish script")
    program = f"source {_committed('fish')}; complete -C 'repobox ru'; echo ---; complete -C 'repobox run --con'"
    result = subprocess.run(
        [fish, "--no-config", "-c", program],
        capture_output=True,
        text=True,
        timeout=SHELL_DEADLINE_S,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    commands, options = result.stdout.split("---\n")
    assert [line.split("\t")[0] for line in commands.splitlines()] == ["run"]
    assert [line.split("\t")[0] for line in options.splitlines()] == ["--concurrency"]


# -- the generator on an app of its own ----------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


toy = typer.Typer(add_completion=False)


@toy.command()
def paint(
    colour: Annotated[Colour, typer.Option("--colour", "-c", help="Which colour: [red] or 'green'")] = Colour.RED,
    out: Annotated[Path, typer.Option("--out", help="Where to write")] = Path("x"),
    into: Annotated[Path, typer.Option("--into", file_okay=False, help="A directory")] = Path("."),
    dry: Annotated[bool, typer.Option("--dry/--wet", help="Pretend")] = False,
) -> None:
    """Paint something."""


@toy.command()
def wash() -> None:
    """Wash it off."""


def test_generator_handles_choices_paths_and_short_names(tmp_path: Path) -> None:
    script = tmp_path / "toy.bash"
    script.write_text(completions.render("bash", toy))
    assert bash_complete(script, ["repobox", ""]) == ["paint", "wash"]
    assert bash_complete(script, ["repobox", "paint", "--colour", "g"]) == ["green"]
    assert bash_complete(script, ["repobox", "paint", "-c", ""]) == ["red", "green"]
    assert bash_complete(script, ["repobox", "paint", "--w"]) == ["--wet"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub-file").write_text("")
    assert bash_complete(script, ["repobox", "paint", "--into", str(tmp_path / "sub")]) == [str(tmp_path / "sub")]
    assert sorted(bash_complete(script, ["repobox", "paint", "--out", str(tmp_path / "sub")])) == [
        str(tmp_path / "sub"),
        str(tmp_path / "sub-file"),
    ]


def test_zsh_descriptions_are_escaped() -> None:
    text = completions.render("zsh", toy)
    assert r"Which colour\: \[red\] or '\''green'\''" in text
    assert ":colour:(red green)'" in text
    assert "'(--dry --wet)--wet[Opposite of --dry\\: Pretend]'" in text
    assert "'paint:Paint something.'" in text


def test_fish_descriptions_are_escaped() -> None:
    text = completions.render("fish", toy)
    assert "-l colour -r -f -a 'red green' -d 'Which colour: [red] or \\'green\\''" in text
    assert "-s c -r -f -a 'red green'" in text
    assert "-l out -r -F -d 'Where to write'" in text
    assert "-a wash -d 'Wash it off.'" in text


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_committed_script(shell: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "repobox_cli", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "completions" / FILE_NAMES[shell]).read_text()


def test_completion_command_refuses_an_unknown_shell_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "repobox_cli", "completion", "tcsh"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
