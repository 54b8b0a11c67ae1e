"""The `repobox` executable's entry point: answers `repobox --version` before anything heavy is
imported (Typer, rich and redis cost ≈ 300 ms of start-up), then hands over to the CLI."""

from __future__ import annotations

import os
import sys

from repobox_cli import __version__


def main() -> None:
    # Python's TLS (the forges' APIs, rediss://) would write its session keys to this file: with
    # them a capture shows the tokens and the Redis password. No command of repobox honours it.
    os.environ.pop("SSLKEYLOGFILE", None)
    if sys.argv[1:] == ["--version"]:
        print(f"repobox {__version__}")
        sys.exit(0)
    from repobox_cli.cli import main as cli_main

    cli_main()
