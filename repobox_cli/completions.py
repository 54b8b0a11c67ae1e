"""Static bash, zsh and fish completion scripts, generated from the Typer app.

The scripts are plain shell: nothing calls back into Python when TAB is pressed, so completion
is instant and works where the package's interpreter is not on PATH. They are committed under
`completions/` and regenerated with::

    python -m repobox_cli.completions --write completions/

`tests/test_completions.py` fails when the committed files no longer match the app.
"""

from __future__ import annotations

import argparse
import enum
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

PROG = "repobox"
FUNCTION = "_repobox"
REGENERATE_COMMAND = "python -m repobox_cli.completions --write completions/"
FILE_NAMES: dict[str, str] = {"bash": "repobox.bash", "zsh": "_repobox", "fish": "repobox.fish"}
SHELLS = tuple(FILE_NAMES)


class Shell(enum.StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


class ValueKind(enum.Enum):
    """What follows an option (or fills a positional argument) on the command line."""

    NONE = "none"  # a flag: no value
    TEXT = "text"  # a value we cannot usefully complete
    FILE = "file"
    DIR = "dir"
    CHOICE = "choice"


@dataclass(frozen=True)
class OptionSpec:
    """One option as the shells see it: every spelling (`--cleanup`, `--no-cleanup` are two)."""

    names: tuple[str, ...]
    help: str
    kind: ValueKind
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    excludes: tuple[str, ...] = ()  # spellings that cancel each other (`--x`/`--no-x`, `-x`/`--x`)

    @property
    def takes_value(self) -> bool:
        return self.kind is not ValueKind.NONE

    @property
    def value_name(self) -> str:
        return self.names[0].lstrip("-").replace("-", " ")


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    help: str
    kind: ValueKind
    required: bool
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str
    options: tuple[OptionSpec, ...]
    arguments: tuple[ArgumentSpec, ...] = ()
    subcommands: tuple[CommandSpec, ...] = ()  # a group (`token`): its commands (`set`, `check`)

    def value_options(self) -> list[OptionSpec]:
        return [o for o in self.options if o.takes_value]

    def all_option_names(self) -> list[str]:
        return [name for o in self.options for name in o.names]


@dataclass(frozen=True)
class AppSpec:
    """The root command's own options and its subcommands, in `repobox --help` order."""

    root: CommandSpec
    commands: tuple[CommandSpec, ...]


# -- introspection -------------------------------------------------------------------------------


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _first_paragraph(text: str | None) -> str:
    return _one_line((text or "").strip().split("\n\n", 1)[0])


def _choices_of(annotation: Any) -> tuple[str, ...]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(str(member.value) for member in annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(arg) for arg in typing.get_args(annotation))
    return ()


def _value_kind(param: Any) -> tuple[ValueKind, tuple[str, ...]]:
    """What kind of value `param` takes, from Typer's type descriptor or click's param type."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ValueKind.NONE, ()
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        annotation = getattr(descriptor, "annotation", None)
        choices = _choices_of(annotation) or tuple(str(c) for c in (getattr(descriptor, "choices", None) or ()))
        if choices:
            return ValueKind.CHOICE, choices
        info = getattr(descriptor, "parameter_info", None)
        if getattr(descriptor, "is_path", False) or annotation is Path:
            dirs_only = info is not None and getattr(info, "file_okay", True) is False
            return (ValueKind.DIR if dirs_only else ValueKind.FILE), ()
        return ValueKind.TEXT, ()
    click_type = getattr(param, "type", None)  # older Typer: a click ParamType
    choices = tuple(str(c) for c in (getattr(click_type, "choices", None) or ()))
    if choices:
        return ValueKind.CHOICE, choices
    type_name = getattr(click_type, "name", "")
    if type_name in ("path", "filename", "file"):
        dirs_only = getattr(click_type, "file_okay", True) is False
        return (ValueKind.DIR if dirs_only else ValueKind.FILE), ()
    return ValueKind.TEXT, ()


def _setting_choices(names: Sequence[str]) -> tuple[str, ...]:
    """The fixed values of the setting behind an option (`--log-format`: pretty, json), if any."""
    from repobox_cli.settings import SETTINGS

    for setting in SETTINGS:
        if setting.choices and setting.option.split("/")[0] in names:
            return setting.choices
    return ()


def _option_specs(param: Any) -> list[OptionSpec]:
    kind, choices = _value_kind(param)
    if kind is ValueKind.TEXT and _setting_choices(param.opts):
        kind, choices = ValueKind.CHOICE, _setting_choices(param.opts)
    primary = tuple(param.opts)
    secondary = tuple(getattr(param, "secondary_opts", ()) or ())
    repeatable = bool(getattr(param, "multiple", False) or getattr(param, "count", False))
    excludes = () if repeatable else primary + secondary
    help_text = _one_line(getattr(param, "help", None))
    specs = [OptionSpec(primary, help_text, kind, choices, repeatable, excludes)]
    if secondary:
        opposite = f"Opposite of {primary[0]}: {help_text}" if help_text else f"Opposite of {primary[0]}"
        specs.append(OptionSpec(secondary, opposite, kind, choices, repeatable, excludes))
    return specs


def _command_spec(name: str, command: Any, ctx: Any) -> CommandSpec:
    options: list[OptionSpec] = []
    arguments: list[ArgumentSpec] = []
    params = list(command.params)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "hidden", False):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            kind, choices = _value_kind(param)
            arguments.append(
                ArgumentSpec(
                    str(param.name), _one_line(getattr(param, "help", None)), kind, bool(param.required), choices
                )
            )
        else:
            options.extend(_option_specs(param))
    help_text = _first_paragraph(getattr(command, "short_help", None) or command.help)
    return CommandSpec(name, help_text, tuple(options), tuple(arguments), _subcommand_specs(command, ctx))


def _subcommand_specs(group: Any, ctx: Any) -> tuple[CommandSpec, ...]:
    if not hasattr(group, "list_commands"):
        return ()
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not getattr(command, "hidden", False):
            found.append(_command_spec(name, command, typer.Context(command, info_name=name, parent=ctx)))
    return tuple(found)


def describe(app: typer.Typer | None = None) -> AppSpec:
    """Everything the completion scripts need, read from the Typer app (default: repobox's)."""
    if app is None:
        from repobox_cli.cli import app as repobox_app

        app = repobox_app
    group = typer.main.get_command(app)
    root_ctx = typer.Context(group, info_name=PROG)
    root = _command_spec(PROG, group, root_ctx)
    commands = []
    for name in group.list_commands(root_ctx):  # type: ignore[attr-defined]
        command = group.get_command(root_ctx, name)  # type: ignore[attr-defined]
        if command is None or getattr(command, "hidden", False):
            continue
        ctx = typer.Context(command, info_name=name, parent=root_ctx)
        commands.append(_command_spec(name, command, ctx))
    return AppSpec(root, tuple(commands))


# -- bash ----------------------------------------------------------------------------------------


def _header(comment: str, shell: str) -> list[str]:
    return [
        f"{comment} {shell} completion for {PROG}.",
        f"{comment} Generated from the Typer app by `{REGENERATE_COMMAND}`: do not edit by hand.",
    ]


def _bash_value_case(command: CommandSpec, indent: str) -> list[str]:
    """`case "$prev"` arms completing the value of the option just typed."""
    arms: list[str] = []
    plain: list[str] = []
    for option in command.value_options():
        pattern = "|".join(option.names)
        if option.kind is ValueKind.FILE:
            arms.append(
                f"{indent}    {pattern}) compopt -o filenames 2>/dev/null; "
                f'mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;'
            )
        elif option.kind is ValueKind.DIR:
            arms.append(
                f"{indent}    {pattern}) compopt -o filenames 2>/dev/null; "
                f'mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return 0 ;;'
            )
        elif option.kind is ValueKind.CHOICE:
            words = " ".join(option.choices)
            arms.append(f'{indent}    {pattern}) mapfile -t COMPREPLY < <(compgen -W "{words}" -- "$cur"); return 0 ;;')
        else:
            plain.extend(option.names)
    if plain:
        arms.append(f"{indent}    {'|'.join(plain)}) COMPREPLY=(); return 0 ;;")
    if not arms:
        return []
    return [f'{indent}case "$prev" in', *arms, f"{indent}esac"]


def _bash_command_arm(command: CommandSpec, indent: str = " " * 8) -> list[str]:
    inner = indent + "    "
    if command.subcommands:
        return _bash_group_arm(command, indent)
    options = " ".join(command.all_option_names())
    return [
        f"{indent}{command.name})",
        *_bash_value_case(command, inner),
        f'{inner}if [[ "$cur" == -* ]]; then',
        f'{inner}    mapfile -t COMPREPLY < <(compgen -W "{options}" -- "$cur")',
        f"{inner}fi",
        f"{inner};;",
    ]


def _bash_group_arm(group: CommandSpec, indent: str) -> list[str]:
    """A group's arm: its subcommand is the next word that is not an option."""
    inner = indent + "    "
    names = " ".join(c.name for c in group.subcommands)
    options = " ".join(group.all_option_names())
    lines = [
        f"{indent}{group.name})",
        f'{inner}sub=""',
        f"{inner}for (( j = i + 1; j < COMP_CWORD; j++ )); do",
        f'{inner}    case "${{COMP_WORDS[j]}}" in -*) ;; *) sub="${{COMP_WORDS[j]}}"; break ;; esac',
        f"{inner}done",
        f'{inner}case "$sub" in',
        f'{inner}    "")',
        f'{inner}        if [[ "$cur" == -* ]]; then',
        f'{inner}            mapfile -t COMPREPLY < <(compgen -W "{options}" -- "$cur")',
        f"{inner}        else",
        f'{inner}            mapfile -t COMPREPLY < <(compgen -W "{names}" -- "$cur")',
        f"{inner}        fi",
        f"{inner}        ;;",
    ]
    for sub in group.subcommands:
        lines.extend(_bash_command_arm(sub, inner + "    "))
    return [*lines, f"{inner}esac", f"{inner};;"]


def render_bash(spec: AppSpec) -> str:
    names = " ".join(c.name for c in spec.commands)
    root_options = " ".join(spec.root.all_option_names())
    root_value_options = "|".join(n for o in spec.root.value_options() for n in o.names)
    skip_value = [f"            {root_value_options}) (( i++ )) ;;"] if root_value_options else []
    lines = [
        *_header("#", "bash"),
        f"# Install: source this file, or copy it to ~/.local/share/bash-completion/completions/{PROG}",
        "",
        f"{FUNCTION}() {{",
        "    local cur prev cmd word i sub j",
        "    COMPREPLY=()",
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    prev=""',
        '    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    # --option=value: bash splits the word at '=' (COMP_WORDBREAKS)",
        '    if [[ "$cur" == "=" ]]; then',
        '        cur=""',
        '    elif [[ "$prev" == "=" ]] && (( COMP_CWORD > 1 )); then',
        '        prev="${COMP_WORDS[COMP_CWORD-2]}"',
        "    fi",
        '    cmd=""',
        "    for (( i = 1; i < COMP_CWORD; i++ )); do",
        '        word="${COMP_WORDS[i]}"',
        '        case "$word" in',
        *skip_value,
        "            -*) ;;",
        '            *) cmd="$word"; break ;;',
        "        esac",
        "    done",
        '    case "$cmd" in',
        '        "")',
        *_bash_value_case(spec.root, " " * 12),
        '            if [[ "$cur" == -* ]]; then',
        f'                mapfile -t COMPREPLY < <(compgen -W "{root_options}" -- "$cur")',
        "            else",
        f'                mapfile -t COMPREPLY < <(compgen -W "{names}" -- "$cur")',
        "            fi",
        "            ;;",
    ]
    for command in spec.commands:
        lines.extend(_bash_command_arm(command))
    lines += [
        "    esac",
        "    return 0",
        "}",
        "",
        f"complete -F {FUNCTION} {PROG}",
    ]
    return "\n".join(lines) + "\n"


# -- zsh -----------------------------------------------------------------------------------------


def _zsh_escape(text: str) -> str:
    """Text for inside a single-quoted `_arguments`/`_describe` spec (as clap_complete escapes)."""
    for char in ("\\", "[", "]", ":", "$", "`"):
        text = text.replace(char, "\\" + char)
    return text.replace("'", "'\\''")


def _zsh_action(kind: ValueKind, choices: tuple[str, ...]) -> str:
    if kind is ValueKind.FILE:
        return "_files"
    if kind is ValueKind.DIR:
        return "_files -/"
    if kind is ValueKind.CHOICE:
        return "(" + " ".join(_zsh_escape(c).replace(" ", "\\ ") for c in choices) + ")"
    return " "


def _zsh_option_specs(option: OptionSpec) -> list[str]:
    specs = []
    for name in option.names:
        prefix = "*" if option.repeatable else ""
        excludes = f"({' '.join(option.excludes)})" if option.excludes else ""
        help_text = f"[{_zsh_escape(option.help)}]"
        if option.takes_value:
            suffix = "=" if name.startswith("--") else "+"
            value = f":{_zsh_escape(option.value_name)}:{_zsh_action(option.kind, option.choices)}"
            specs.append(f"'{excludes}{prefix}{name}{suffix}{help_text}{value}'")
        else:
            specs.append(f"'{excludes}{prefix}{name}{help_text}'")
    return specs


def _zsh_argument_specs(command: CommandSpec) -> list[str]:
    specs = []
    for position, argument in enumerate(command.arguments, start=1):
        optional = "" if argument.required else ":"
        message = _zsh_escape(argument.help or argument.name.replace("_", " "))
        specs.append(f"'{position}:{optional}{message}:{_zsh_action(argument.kind, argument.choices)}'")
    return specs


def _zsh_arguments(specs: list[str], indent: str) -> list[str]:
    if not specs:
        return [f"{indent}_message 'no more arguments'"]
    return [f"{indent}_arguments -s -S \\", *(f"{indent}    {s} \\" for s in specs[:-1]), f"{indent}    {specs[-1]}"]


def _zsh_dispatch(function: str, commands: Sequence[CommandSpec], label: str) -> list[str]:
    """The end of `function`: each command's case to its own function, then `function`_commands."""
    return [
        *(f"                {c.name}) {function}_{c.name} && ret=0 ;;" for c in commands),
        "            esac",
        "            ;;",
        "    esac",
        "    return ret",
        "}",
        "",
        f"{function}_commands() {{",
        "    local -a commands",
        "    commands=(",
        *(f"        '{_zsh_escape(c.name)}:{_zsh_escape(c.help)}'" for c in commands),
        "    )",
        f"    _describe -t commands '{label}' commands",
        "}",
    ]


def _zsh_command_functions(command: CommandSpec, function: str) -> list[str]:
    """`function` completing `command`'s options and arguments; for a group, its subcommands'."""
    if not command.subcommands:
        specs = [s for o in command.options for s in _zsh_option_specs(o)] + _zsh_argument_specs(command)
        return ["", f"{function}() {{", *_zsh_arguments(specs, "    "), "}"]
    lines = [
        "",
        f"{function}() {{",
        '    local curcontext="$curcontext" state line ret=1',
        "    _arguments -C \\",
        *(f"        {s} \\" for o in command.options for s in _zsh_option_specs(o)),
        f"        '1: :{function}_commands' \\",
        "        '*:: :->args' && ret=0",
        "    case $state in",
        "        args)",
        "            case $words[1] in",
        *_zsh_dispatch(function, command.subcommands, f"{PROG} {command.name} command"),
    ]
    for sub in command.subcommands:
        lines += _zsh_command_functions(sub, f"{function}_{sub.name}")
    return lines


def render_zsh(spec: AppSpec) -> str:
    root_specs = [s for o in spec.root.options for s in _zsh_option_specs(o)]
    lines = [
        f"#compdef {PROG}",
        *_header("#", "zsh"),
        f"# Install: copy to a directory on $fpath as `{FILE_NAMES['zsh']}`, then run compinit.",
        "",
        f"{FUNCTION}() {{",
        '    local curcontext="$curcontext" state line ret=1',
        "    typeset -A opt_args",
        "",
        "    _arguments -C \\",
        *(f"        {s} \\" for s in root_specs),
        f"        '1: :{FUNCTION}_commands' \\",
        "        '*:: :->args' && ret=0",
        "",
        "    case $state in",
        "        args)",
        '            curcontext="${curcontext%:*:*}:' + PROG + '-$words[1]:"',
        "            case $words[1] in",
    ]
    lines += _zsh_dispatch(FUNCTION, spec.commands, f"{PROG} command")
    for command in spec.commands:
        lines += _zsh_command_functions(command, f"{FUNCTION}_{command.name}")
    lines += [
        "",
        f'if [[ "$funcstack[1]" == "{FUNCTION}" ]]; then',
        f'    {FUNCTION} "$@"',
        "else",
        f"    compdef {FUNCTION} {PROG}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


# -- fish ----------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_name_flags(name: str) -> str:
    if name.startswith("--"):
        return f"-l {name[2:]}"
    if len(name) == 2:
        return f"-s {name[1:]}"
    return f"-o {name[1:]}"


def _fish_value_flags(option: OptionSpec) -> str:
    if option.kind is ValueKind.NONE:
        return ""
    if option.kind is ValueKind.FILE:
        return " -r -F"
    if option.kind is ValueKind.DIR:
        return " -r -f -a '(__fish_complete_directories)'"
    if option.kind is ValueKind.CHOICE:
        return " -r -f -a " + _fish_quote(" ".join(option.choices))
    return " -r"


def _fish_option_lines(condition: str, options: Sequence[OptionSpec]) -> list[str]:
    lines = []
    for option in options:
        for name in option.names:
            description = f" -d {_fish_quote(option.help)}" if option.help else ""
            lines.append(
                f"complete -c {PROG} -n {condition} {_fish_name_flags(name)}{_fish_value_flags(option)}{description}"
            )
    return lines


def render_fish(spec: AppSpec) -> str:
    names = " ".join(c.name for c in spec.commands)
    root_condition = _fish_quote(f"not __fish_seen_subcommand_from {names}")
    lines = [
        *_header("#", "fish"),
        f"# Install: copy to ~/.config/fish/completions/{FILE_NAMES['fish']}",
        "",
        f"complete -c {PROG} -f",
        *_fish_option_lines(root_condition, spec.root.options),
    ]
    for command in spec.commands:
        lines.append(f"complete -c {PROG} -n {root_condition} -a {command.name} -d {_fish_quote(command.help)}")
    for command in spec.commands:
        lines.append("")
        seen = f"__fish_seen_subcommand_from {command.name}"
        lines.extend(_fish_option_lines(_fish_quote(seen), command.options))
        subs = " ".join(s.name for s in command.subcommands)
        for sub in command.subcommands:
            condition = _fish_quote(f"{seen}; and not __fish_seen_subcommand_from {subs}")
            lines.append(f"complete -c {PROG} -n {condition} -a {sub.name} -d {_fish_quote(sub.help)}")
        for sub in command.subcommands:
            condition = _fish_quote(f"{seen}; and __fish_seen_subcommand_from {sub.name}")
            lines.extend(_fish_option_lines(condition, sub.options))
    return "\n".join(lines) + "\n"


# -- entry points --------------------------------------------------------------------------------

RENDERERS: dict[str, Callable[[AppSpec], str]] = {
    "bash": render_bash,
    "zsh": render_zsh,
    "fish": render_fish,
}


def render(shell: str, app: typer.Typer | None = None) -> str:
    """The completion script for `shell` (bash, zsh or fish) of the app (default: repobox's)."""
    try:
        renderer = RENDERERS[shell]
    except KeyError:
        raise ValueError(f"unknown shell {shell!r}: expected one of {', '.join(SHELLS)}") from None
    return renderer(describe(app))


def write_all(directory: Path) -> list[Path]:
    """Write every shell's script into `directory` under its FILE_NAMES name; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = describe()
    written = []
    for shell, file_name in FILE_NAMES.items():
        path = directory / file_name
        path.write_text(RENDERERS[shell](spec), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repobox_cli.completions",
        description=f"Generate static shell completion scripts for {PROG}.",
    )
    parser.add_argument("shell", nargs="?", choices=SHELLS, help="print this shell's script to stdout")
    parser.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help="write all three scripts into DIR (" + ", ".join(FILE_NAMES.values()) + ")",
    )
    args = parser.parse_args(argv)
    if args.write is None and args.shell is None:
        parser.error("give a shell to print, or --write DIR")
    if args.write is not None:
        for path in write_all(args.write):
            print(f"wrote {path}")
    if args.shell is not None:
        sys.stdout.write(render(args.shell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
